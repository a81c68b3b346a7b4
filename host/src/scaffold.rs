//! `defops-wasm new` and `defops-wasm build`: from "I know what to change"
//! to a dry-run in a minute.
//!
//! `new NAME` writes a fix crate that builds as is: `Cargo.toml` on the
//! guest SDK (by path), `src/lib.rs` with a commented `check`/`apply`, and
//! `manifest.toml`. `build [DIR]` compiles it for wasm32-wasip2 into a
//! target directory every fix shares (so a second fix builds in seconds),
//! embeds the manifest, and writes `DIR/NAME.wasm`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::json;

use crate::exit::Exit;
use crate::output::Printer;
use crate::run::Stop;

const TARGET: &str = "wasm32-wasip2";

/// Where the guest SDK is: `--sdk`, `$DEFOPS_GUEST_SDK`, or the
/// `guest-sdk/` of the source tree this binary was built from.
fn find_sdk(explicit: Option<&Path>) -> Result<PathBuf, Stop> {
    let candidates: Vec<PathBuf> = explicit
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::var_os("DEFOPS_GUEST_SDK").map(PathBuf::from))
        .chain(std::iter::once(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"),
        ))
        .collect();
    for c in &candidates {
        if c.join("Cargo.toml").is_file() {
            return std::fs::canonicalize(c).map_err(|e| {
                Stop::new(
                    Exit::Usage,
                    format!("cannot use the SDK {}: {e}", c.display()),
                )
            });
        }
        if explicit.is_some() {
            break;
        }
    }
    Err(Stop::new(
        Exit::Usage,
        "cannot find the guest SDK (defops-guest); pass --sdk /path/to/defops-wasm/guest-sdk or set DEFOPS_GUEST_SDK",
    ))
}

fn valid_name(name: &str) -> bool {
    let first = name.chars().next();
    first.is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# The guest SDK, by path (it is not on crates.io). Move the fix elsewhere and
# this path still works; move the SDK and change it here.
defops-guest = {{ path = "{}" }}

[profile.release]
opt-level = "s"
strip = true

# A fix is a workspace of its own.
[workspace]
"#,
        sdk.display()
    )
}

const LIB_RS: &str = r#"//! A fix for defops-wasm. `check` decides whether the change is needed (it
//! runs read-only); `apply` makes it. Every write lands in a plan first:
//! `defops-wasm run NAME.wasm --dry-run` shows it, a real run commits it.
//!
//! This one makes sure a file contains a line: params `file` and `line`.
//! Change it to what you need; keep it idempotent (a second run must find
//! nothing to do) and update manifest.toml to match.

use defops_guest::{Check, Fix, Result, fs, info, require_param};

struct ThisFix;

impl Fix for ThisFix {
    /// Is the change needed? Read, decide, explain. Nothing can be written
    /// here.
    fn check() -> Result<Check> {
        let file = require_param("file")?;
        let line = require_param("line")?;
        let text = fs::read_to_string(&file)?;
        Ok(if text.lines().any(|l| l == line) {
            Check::not_needed(format!("{file} already has the line"))
        } else {
            Check::applies(format!("{file} lacks the line {line:?}"))
        })
    }

    /// Make the change. Runs only when `check` said it applies; every call
    /// is planned, journaled, and can be rolled back.
    fn apply() -> Result<String> {
        let file = require_param("file")?;
        let line = require_param("line")?;
        let mut text = fs::read_to_string(&file)?;
        // Idempotent: the dry-run applies twice and checks the second pass
        // changes nothing.
        if text.lines().any(|l| l == line) {
            return Ok(format!("{file} already has the line"));
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        fs::write(&file, text)?;
        info(format!("appended {line:?} to {file}"));
        Ok(format!("{file} now has the line"))
    }
}

defops_guest::export_fix!(ThisFix);
"#;

fn manifest(name: &str) -> String {
    format!(
        r#"# What this fix may touch, for the reviewer and the runner: the grants of a
# run must lie within it. ${{param}} is a param's value, ${{param:dir}} its
# directory.
name = "{name}"
version = "0.1.0"
description = "Make sure a file contains a line"
read-write = ["${{file:dir}}"]

[[param]]
name = "file"
description = "the file, absolute"
required = true

[[param]]
name = "line"
description = "the line it must contain"
required = true
"#
    )
}

/// The example a new Python fix starts from (`NAME` is replaced).
const NEW_PY: &str = include_str!("scaffold/new_fix.py");

/// `new NAME --lang python [--dir DIR]`: one file, `DIR/NAME.py`, with
/// its manifest in the PEP 723 block; nothing to build.
pub fn new_python(name: &str, dir: Option<&Path>, out: &Printer) -> Result<Exit, Stop> {
    if !valid_name(name) {
        return Err(Stop::new(
            Exit::Usage,
            format!(
                "{name:?} is not a fix name: lowercase letters, digits, '-' and '_', starting with a letter"
            ),
        ));
    }
    let dir = dir.unwrap_or(Path::new("."));
    let path = dir.join(format!("{name}.py"));
    let io =
        |e: std::io::Error| Stop::new(Exit::Usage, format!("cannot write {}: {e}", path.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    // create_new: an existing file is never overwritten.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Stop::new(
                Exit::Usage,
                format!("{} exists; choose another name or --dir", path.display()),
            ),
            _ => io(e),
        })?;
    std::io::Write::write_all(&mut file, NEW_PY.replace("NAME", name).as_bytes()).map_err(io)?;
    if out.is_json() {
        out.raw(&json!({"type": "new", "name": name, "path": path.display().to_string(), "lang": "python"}));
    } else {
        out.note(&format!(
            "created the fix {}
next:
  defops-wasm inspect {}
  defops-wasm run {} --allow DIR -p file=DIR/FILE -p line=TEXT --dry-run",
            path.display(),
            path.display(),
            path.display()
        ));
    }
    Ok(Exit::Success)
}

/// `new NAME [--dir DIR] [--sdk PATH]`.
pub fn new(
    name: &str,
    dir: Option<&Path>,
    sdk: Option<&Path>,
    out: &Printer,
) -> Result<Exit, Stop> {
    if !valid_name(name) {
        return Err(Stop::new(
            Exit::Usage,
            format!(
                "{name:?} is not a fix name: lowercase letters, digits, '-' and '_', starting with a letter"
            ),
        ));
    }
    let sdk = find_sdk(sdk)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists() && std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_some()) {
        return Err(Stop::new(
            Exit::Usage,
            format!(
                "{} exists and is not empty; choose another --dir",
                dir.display()
            ),
        ));
    }
    let io =
        |e: std::io::Error| Stop::new(Exit::Usage, format!("cannot write {}: {e}", dir.display()));
    std::fs::create_dir_all(dir.join("src")).map_err(io)?;
    std::fs::write(dir.join("Cargo.toml"), cargo_toml(name, &sdk)).map_err(io)?;
    std::fs::write(dir.join("src/lib.rs"), LIB_RS.replace("NAME", name)).map_err(io)?;
    std::fs::write(dir.join("manifest.toml"), manifest(name)).map_err(io)?;
    std::fs::write(dir.join(".gitignore"), "/target\n/*.wasm\n").map_err(io)?;
    if out.is_json() {
        out.raw(&json!({"type": "new", "name": name, "dir": dir.display().to_string(), "sdk": sdk.display().to_string()}));
    } else {
        out.note(&format!(
            "created the fix {name} in {}\nnext:\n  defops-wasm build {}\n  defops-wasm run {}/{name}.wasm --allow DIR -p file=DIR/FILE -p line=TEXT --dry-run",
            dir.display(),
            dir.display(),
            dir.display()
        ));
    }
    Ok(Exit::Success)
}

/// The shared target directory: `$CARGO_TARGET_DIR`, else
/// `$XDG_CACHE_HOME/defops-wasm/target` (`~/.cache/defops-wasm/target`).
fn shared_target() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        return PathBuf::from(t);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("defops-wasm/target")
}

/// Makes sure the wasm32-wasip2 target is installed.
fn ensure_target(out: &Printer) -> Result<(), Stop> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        });
    match installed {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        // No rustup: cargo will say whether the target is there.
        Err(_) => return Ok(()),
    }
    if !out.is_json() {
        out.note(&format!(
            "installing the {TARGET} target (rustup target add {TARGET})"
        ));
    }
    let ok = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    match ok {
        true => Ok(()),
        false => Err(Stop::new(
            Exit::Usage,
            format!(
                "the {TARGET} target is missing and `rustup target add {TARGET}` failed; install it, then build again"
            ),
        )),
    }
}

/// `build [DIR] [--target-dir DIR]`.
pub fn build(
    dir: &Path,
    target_dir: Option<&Path>,
    out: &Printer,
    quiet: bool,
) -> Result<Exit, Stop> {
    let started = Instant::now();
    let cargo_toml = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&cargo_toml).map_err(|e| {
        Stop::new(
            Exit::Usage,
            format!(
                "{}: {e}; run build in a fix's directory (see `defops-wasm new`)",
                cargo_toml.display()
            ),
        )
    })?;
    let parsed: toml::Table = toml::from_str(&text).map_err(|e| {
        Stop::new(
            Exit::Usage,
            format!("{}: {}", cargo_toml.display(), e.message()),
        )
    })?;
    let name = parsed
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| {
            Stop::new(
                Exit::Usage,
                format!("{}: no [package] name", cargo_toml.display()),
            )
        })?
        .to_string();
    let manifest = dir.join("manifest.toml");
    if !manifest.is_file() {
        return Err(Stop::new(
            Exit::Usage,
            format!(
                "{} is missing; a fix needs one (see `defops-wasm new`)",
                manifest.display()
            ),
        ));
    }
    // The manifest first: a bad one fails in milliseconds, not after a build.
    let manifest_text = std::fs::read_to_string(&manifest)
        .map_err(|e| Stop::new(Exit::Usage, format!("{}: {e}", manifest.display())))?;
    crate::manifest::Manifest::parse(&manifest_text).map_err(|e| {
        Stop::new(
            Exit::Usage,
            format!("{}: {e}; fix the manifest", manifest.display()),
        )
    })?;
    ensure_target(out)?;
    let target = target_dir.map_or_else(shared_target, Path::to_path_buf);
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&cargo_toml)
        .env("CARGO_TARGET_DIR", &target);
    if quiet || out.is_json() {
        cargo.arg("--quiet");
    }
    // Cargo's own progress goes to stderr; stdout stays ours.
    cargo.stdout(std::process::Stdio::null());
    let status = cargo.status().map_err(|e| {
        Stop::new(
            Exit::Usage,
            format!("cannot run cargo: {e}; install Rust with rustup"),
        )
    })?;
    if !status.success() {
        return Err(Stop::new(
            Exit::FixFailed,
            format!("cargo build failed ({status}); see its errors above"),
        ));
    }
    let artifact = target
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let dest = dir.join(format!("{name}.wasm"));
    let wasm = std::fs::read(&artifact)
        .map_err(|e| Stop::new(Exit::Usage, format!("{}: {e}", artifact.display())))?;
    let with = crate::review::embed_and_write(&wasm, &manifest_text, &artifact, &dest)?;
    let mut r = crate::review::digests(&with);
    r["type"] = json!("build");
    r["name"] = json!(name);
    r["fix"] = json!(dest.display().to_string());
    r["size"] = json!(with.len());
    r["target_dir"] = json!(target.display().to_string());
    r["elapsed_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
    match out.is_json() {
        true => out.raw(&r),
        false => out.note(&format!(
            "built {} ({} bytes, {}) in {:.1}s",
            dest.display(),
            with.len(),
            r["fix_id"].as_str().unwrap_or(""),
            started.elapsed().as_secs_f64()
        )),
    }
    Ok(Exit::Success)
}
