//! Write [defops-wasm](https://example.invalid/defops-wasm) fixes in Rust.
//!
//! A fix is a WebAssembly component with two entry points: `check` (is the
//! change needed here? it runs read-only) and `apply` (make the change). The
//! host runs `apply` against an overlay of the directories the operator
//! granted: every write is planned, shown with `--dry-run`, and committed
//! only on a real run. Paths are the absolute paths the operator knows.
//!
//! ```no_run
//! use defops_guest::{fs, param, require_param, Check, Fix, Result};
//!
//! struct Touch;
//!
//! impl Fix for Touch {
//!     fn check() -> Result<Check> {
//!         let path = require_param("path")?;
//!         Ok(if fs::exists(&path)? {
//!             Check::not_needed(format!("{path} exists"))
//!         } else {
//!             Check::applies(format!("{path} is missing"))
//!         })
//!     }
//!
//!     fn apply() -> Result<String> {
//!         let path = require_param("path")?;
//!         fs::write(&path, param("content").unwrap_or_default())?;
//!         Ok(format!("created {path}"))
//!     }
//! }
//!
//! defops_guest::export_fix!(Touch);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the
//! `cdylib` that comes out is the component `defops-wasm run` takes.

#![deny(missing_docs)]

extern crate self as defops_guest;

pub mod fs;
pub mod logs;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The generated bindings; use the API of this crate instead.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "defops:fix/fix",
        pub_export_macro: true,
        export_macro_name: "__export_fix_world",
        default_bindings_module: "defops_guest::bindings",
        runtime_path: "defops_guest::__wit_bindgen::rt",
    });
}

use bindings::defops::fix::{context, report};

/// The answer of [`Fix::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The fix applies here; the reason is shown to the operator.
    Applies(String),
    /// Nothing to do; the reason is shown to the operator.
    NotNeeded(String),
}

impl Check {
    /// The fix applies, because `why`.
    pub fn applies(why: impl Into<String>) -> Check {
        Check::Applies(why.into())
    }

    /// Nothing to do, because `why`.
    pub fn not_needed(why: impl Into<String>) -> Check {
        Check::NotNeeded(why.into())
    }
}

/// Why a fix gave up: any error (anything that implements `Display`)
/// converts into it, so `?` works on file-system calls, parsing and
/// `Err("...")?` alike.
#[derive(Debug)]
pub struct Failure(String);

impl Failure {
    /// The message shown to the operator.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure(e.to_string())
    }
}

/// `Result` with [`Failure`] as the default error.
pub type Result<T, E = Failure> = std::result::Result<T, E>;

/// A fix: implement both, then `export_fix!(YourType)`.
pub trait Fix {
    /// The precondition: does the fix apply here? Every mutation is refused
    /// while it runs.
    fn check() -> Result<Check>;
    /// The change. Runs only when `check` said [`Check::Applies`]. Returns a
    /// one-line summary for the operator. Make it idempotent (re-check
    /// before each change): a dry-run runs it twice and flags a second pass
    /// that would change anything.
    fn apply() -> Result<String>;
}

/// Exports a [`Fix`] as the component's `check` and `apply`.
#[macro_export]
macro_rules! export_fix {
    ($fix:ty) => {
        #[doc(hidden)]
        struct __DefopsFixExport;

        impl $crate::bindings::Guest for __DefopsFixExport {
            fn check() -> ::std::result::Result<$crate::bindings::defops::fix::types::Applicability, ::std::string::String> {
                use $crate::bindings::defops::fix::types::Applicability;
                match <$fix as $crate::Fix>::check() {
                    Ok($crate::Check::Applies(why)) => Ok(Applicability::Applies(why)),
                    Ok($crate::Check::NotNeeded(why)) => Ok(Applicability::NotNeeded(why)),
                    Err(f) => Err(f.message().to_string()),
                }
            }

            fn apply() -> ::std::result::Result<::std::string::String, ::std::string::String> {
                <$fix as $crate::Fix>::apply().map_err(|f| f.message().to_string())
            }
        }

        $crate::bindings::__export_fix_world!(__DefopsFixExport with_types_in $crate::bindings);
    };
}

/// True on a dry-run. A fix should behave the same either way: the host
/// never writes a dry-run's plan.
pub fn dry_run() -> bool {
    context::dry_run()
}

/// The value of `--param NAME=VALUE`, if given.
pub fn param(name: &str) -> Option<String> {
    context::param(name)
}

/// The value of a parameter the fix cannot do without.
pub fn require_param(name: &str) -> Result<String> {
    param(name).ok_or_else(|| Failure(format!("missing parameter: pass --param {name}=VALUE")))
}

/// A parameter parsed into `T`, or `default` when not given.
pub fn param_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match param(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|e| Failure(format!("parameter {name}={v:?}: {e}"))),
    }
}

/// Every parameter, sorted by name.
pub fn params() -> Vec<(String, String)> {
    context::params()
}

/// The host's name.
pub fn hostname() -> String {
    context::hostname()
}

/// A debug message for the operator.
pub fn debug(message: impl AsRef<str>) {
    report::log(report::Level::Debug, message.as_ref());
}

/// An informational message for the operator.
pub fn info(message: impl AsRef<str>) {
    report::log(report::Level::Info, message.as_ref());
}

/// A warning for the operator.
pub fn warn(message: impl AsRef<str>) {
    report::log(report::Level::Warn, message.as_ref());
}

/// An error message for the operator (the fix goes on; return `Err` to stop).
pub fn error(message: impl AsRef<str>) {
    report::log(report::Level::Error, message.as_ref());
}
