//! The capability manifest: what a fix says it needs, written by its author
//! as TOML, checked strictly, and embedded in the component as the custom
//! section `defops-manifest` so the `.wasm` describes itself.
//!
//! ```toml
//! name = "config-set"
//! version = "0.1.0"
//! description = "Set KEY = VALUE in a config file"
//! read-write = ["${file:dir}"]     # directories or single files
//! read-only = []
//! logs = []                        # log globs
//!
//! [[param]]
//! name = "file"
//! description = "the config file (a * glob in the file name allowed)"
//! required = true
//! ```
//!
//! Paths may use `${param}` (the parameter's value) and `${param:dir}` (the
//! directory that value is in).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The custom section the manifest lives in.
pub const SECTION: &str = "defops-manifest";

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    #[serde(rename = "read-write")]
    pub read_write: Vec<String>,
    #[serde(rename = "read-only")]
    pub read_only: Vec<String>,
    pub logs: Vec<String>,
    pub params: Vec<Param>,
    /// The TOML text as the author wrote it.
    #[serde(skip)]
    pub source: String,
}

/// A parameter the fix takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Param {
    pub name: String,
    pub description: String,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Raw {
    name: Spanned<String>,
    version: Spanned<String>,
    description: String,
    #[serde(default)]
    read_write: Vec<Spanned<String>>,
    #[serde(default)]
    read_only: Vec<Spanned<String>>,
    #[serde(default)]
    logs: Vec<Spanned<String>>,
    #[serde(default)]
    param: Vec<RawParam>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawParam {
    name: Spanned<String>,
    description: String,
    #[serde(default)]
    required: bool,
    default: Option<String>,
}

/// What is wrong with a manifest: the line (1-based) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ManifestError {
    pub line: Option<usize>,
    pub message: String,
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The `${...}` references in `path`: (param, the `:dir` form).
fn references(path: &str) -> Result<Vec<(String, bool)>, String> {
    let mut refs = Vec::new();
    let mut rest = path;
    while let Some(at) = rest.find("${") {
        let end = rest[at..]
            .find('}')
            .ok_or_else(|| format!("{path:?}: an unclosed ${{"))?;
        let inner = &rest[at + 2..at + end];
        let (name, dir) = match inner.split_once(':') {
            Some((n, "dir")) => (n, true),
            Some((_, other)) => {
                return Err(format!(
                    "{path:?}: unknown form :{other} (only ${{name}} and ${{name:dir}})"
                ));
            }
            None => (inner, false),
        };
        refs.push((name.to_string(), dir));
        rest = &rest[at + end + 1..];
    }
    Ok(refs)
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let line_of = |at: usize| Some(text[..at.min(text.len())].matches('\n').count() + 1);
        let raw: Raw = toml::from_str(text).map_err(|e| ManifestError {
            line: e.span().and_then(|s| line_of(s.start)),
            message: e.message().trim().replace('\n', " "),
        })?;
        let bad = |span: std::ops::Range<usize>, message: String| ManifestError {
            line: line_of(span.start),
            message,
        };
        if !name_ok(raw.name.get_ref()) {
            return Err(bad(
                raw.name.span(),
                format!(
                    "name {:?}: use letters, digits, '-' and '_' (at most 64)",
                    raw.name.get_ref()
                ),
            ));
        }
        let v = raw.version.get_ref();
        let semver = v.split('.').count() == 3
            && v.split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !semver {
            return Err(bad(
                raw.version.span(),
                format!("version {v:?}: use MAJOR.MINOR.PATCH, like 1.0.0"),
            ));
        }
        let mut params: Vec<Param> = Vec::new();
        for p in &raw.param {
            let name = p.name.get_ref();
            if !name_ok(name) {
                return Err(bad(
                    p.name.span(),
                    format!("param {name:?}: use letters, digits, '-' and '_'"),
                ));
            }
            if params.iter().any(|q| &q.name == name) {
                return Err(bad(
                    p.name.span(),
                    format!("param {name:?} is declared twice"),
                ));
            }
            if p.required && p.default.is_some() {
                return Err(bad(
                    p.name.span(),
                    format!("param {name:?} is required and has a default; choose one"),
                ));
            }
            params.push(Param {
                name: name.clone(),
                description: p.description.clone(),
                required: p.required,
                default: p.default.clone(),
            });
        }
        let check_paths = |list: &[Spanned<String>],
                           what: &str|
         -> Result<Vec<String>, ManifestError> {
            let mut out = Vec::new();
            for p in list {
                let path = p.get_ref();
                let refs = references(path).map_err(|m| bad(p.span(), format!("{what}: {m}")))?;
                for (r, _) in &refs {
                    if !params.iter().any(|q| &q.name == r) {
                        return Err(bad(
                            p.span(),
                            format!(
                                "{what}: {path:?} uses ${{{r}}}, which is not a declared param"
                            ),
                        ));
                    }
                }
                let starts_with_ref = path.starts_with("${");
                if !path.starts_with('/') && !starts_with_ref {
                    return Err(bad(
                        p.span(),
                        format!("{what}: {path:?} is not an absolute path"),
                    ));
                }
                if path.split('/').any(|c| c == ".." || c == ".") || path.contains("//") {
                    return Err(bad(
                        p.span(),
                        format!("{what}: {path:?} has '.', '..' or '//' in it"),
                    ));
                }
                if what != "logs" && path.contains(['*', '?', '[']) {
                    return Err(bad(
                        p.span(),
                        format!("{what}: {path:?}: wildcards are for logs only"),
                    ));
                }
                if out.contains(path) {
                    return Err(bad(p.span(), format!("{what}: {path:?} is listed twice")));
                }
                out.push(path.clone());
            }
            Ok(out)
        };
        Ok(Manifest {
            name: raw.name.into_inner(),
            version: raw.version.into_inner(),
            description: raw.description,
            read_write: check_paths(&raw.read_write, "read-write")?,
            read_only: check_paths(&raw.read_only, "read-only")?,
            logs: check_paths(&raw.logs, "logs")?,
            params,
            source: text.to_string(),
        })
    }

    /// The declared paths with the params (or their defaults) put in.
    /// `None` for a path that uses a param with no value.
    pub fn resolve(&self, params: &BTreeMap<String, String>) -> Resolved {
        let value = |name: &str| {
            params.get(name).cloned().or_else(|| {
                self.params
                    .iter()
                    .find(|p| p.name == name)
                    .and_then(|p| p.default.clone())
            })
        };
        let fill = |path: &String| -> Result<String, String> {
            let mut out = String::new();
            let mut rest = path.as_str();
            while let Some(at) = rest.find("${") {
                out.push_str(&rest[..at]);
                let end = at + rest[at..].find('}').expect("checked at parse");
                let inner = &rest[at + 2..end];
                let (name, dir) = match inner.split_once(':') {
                    Some((n, _)) => (n, true),
                    None => (inner, false),
                };
                let v = value(name).ok_or_else(|| format!("${{{name}}} has no value"))?;
                let v = match dir {
                    true => match v.rfind('/') {
                        Some(0) => "/".to_string(),
                        Some(i) => v[..i].to_string(),
                        None => return Err(format!("${{{name}}} = {v:?} has no directory")),
                    },
                    false => v,
                };
                out.push_str(&v);
                rest = &rest[end + 1..];
            }
            out.push_str(rest);
            let clean = out.starts_with('/')
                && !out.split('/').any(|c| c == ".." || c == ".")
                && !out.contains('\0');
            match clean {
                true => Ok(normalize(&out)),
                false => Err(format!(
                    "{path:?} becomes {out:?}, not a clean absolute path"
                )),
            }
        };
        let all = |list: &[String]| list.iter().map(|p| (p.clone(), fill(p))).collect();
        Resolved {
            read_write: all(&self.read_write),
            read_only: all(&self.read_only),
            logs: all(&self.logs),
        }
    }

    /// The parameters that are required but not given.
    pub fn missing_params(&self, params: &BTreeMap<String, String>) -> Vec<&str> {
        self.params
            .iter()
            .filter(|p| p.required && !params.contains_key(&p.name))
            .map(|p| p.name.as_str())
            .collect()
    }

    /// The names in `params` this manifest does not declare (a typo, or a
    /// param of another version of the fix).
    pub fn undeclared_params<'a>(&self, params: &'a BTreeMap<String, String>) -> Vec<&'a str> {
        params
            .keys()
            .filter(|k| !self.params.iter().any(|p| &p.name == *k))
            .map(String::as_str)
            .collect()
    }
}

/// `//` collapsed and no trailing slash (but `/`).
fn normalize(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.split('/').filter(|c| !c.is_empty()) {
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() { "/".into() } else { out }
}

/// Declared paths with the params put in: (as declared, as resolved).
#[derive(Debug)]
pub struct Resolved {
    pub read_write: Vec<(String, Result<String, String>)>,
    pub read_only: Vec<(String, Result<String, String>)>,
    pub logs: Vec<(String, Result<String, String>)>,
}

/// Whether `path` is `base` or below it.
fn within(path: &str, base: &str) -> bool {
    let path = normalize(path);
    let base = normalize(base);
    base == "/" || path == base || path.starts_with(&format!("{base}/"))
}

/// `path` in the canonical form grants are compared in: its longest
/// existing ancestor with symlinks resolved by the kernel, then the rest as
/// written. A declared path that is spelled through a symlink names what
/// the symlink leads to, as a grant of it would.
fn canonical(path: &str) -> String {
    let path = normalize(path);
    let mut rest: Vec<&str> = Vec::new();
    let mut head = path.as_str();
    loop {
        if let Ok(c) = std::fs::canonicalize(head)
            && let Some(c) = c.to_str()
        {
            let mut out = c.to_string();
            for name in rest.iter().rev() {
                if !out.ends_with('/') {
                    out.push('/');
                }
                out.push_str(name);
            }
            return out;
        }
        match head.rfind('/') {
            Some(0) | None => return path,
            Some(i) => {
                rest.push(&head[i + 1..]);
                head = &head[..i];
            }
        }
    }
}

/// Whether the text of `glob` (its wildcards taken literally) matches the
/// declared `pattern` (a glob): then everything `glob` names, `pattern` does.
pub fn glob_within(glob: &str, pattern: &str) -> bool {
    fn m(t: &[u8], p: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(t, &p[1..]) || (!t.is_empty() && t[0] != b'/' && m(&t[1..], p)),
            (Some(b'?'), Some(c)) if *c != b'/' => m(&t[1..], &p[1..]),
            (Some(a), Some(b)) if a == b && *a != b'?' => m(&t[1..], &p[1..]),
            _ => false,
        }
    }
    m(glob.as_bytes(), pattern.as_bytes())
}

/// Checks the operator's grants against the manifest: every grant must lie
/// within what it declares. Each difference named.
pub fn check_grants(
    manifest: &Manifest,
    params: &BTreeMap<String, String>,
    read_write: &[&Path],
    read_only: &[&Path],
    logs: &[&str],
) -> Result<(), Vec<String>> {
    let r = manifest.resolve(params);
    let ok = |list: &[(String, Result<String, String>)]| -> Vec<String> {
        list.iter().filter_map(|(_, p)| p.clone().ok()).collect()
    };
    let (rw, ro, lg) = (ok(&r.read_write), ok(&r.read_only), ok(&r.logs));
    let (rw, ro): (Vec<String>, Vec<String>) = (
        rw.iter().map(|p| canonical(p)).collect(),
        ro.iter().map(|p| canonical(p)).collect(),
    );
    let mut problems = Vec::new();
    let show = |l: &[String]| match l.is_empty() {
        true => "nothing".to_string(),
        false => l.join(", "),
    };
    for g in read_write {
        let g = g.to_string_lossy();
        if !rw.iter().any(|d| within(&g, d)) {
            problems.push(format!(
                "--allow {g} is not within what the manifest declares read-write ({})",
                show(&rw)
            ));
        }
    }
    for g in read_only {
        let g = g.to_string_lossy();
        if !rw.iter().chain(&ro).any(|d| within(&g, d)) {
            let all: Vec<String> = rw.iter().chain(&ro).cloned().collect();
            problems.push(format!(
                "--allow-ro {g} is not within what the manifest declares ({})",
                show(&all)
            ));
        }
    }
    for g in logs {
        if !lg.iter().any(|d| glob_within(g, d)) {
            problems.push(format!(
                "--allow-log {g} is not within the logs the manifest declares ({})",
                show(&lg)
            ));
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems),
    }
}

// ---------------------------------------------------------------------------
// The custom section.

fn read_leb(bytes: &[u8], at: &mut usize) -> Option<usize> {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return usize::try_from(v).ok();
        }
        shift += 7;
        if shift > 35 {
            return None;
        }
    }
}

fn write_leb(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A top-level section of a wasm binary.
struct Section {
    id: u8,
    /// A custom section's name.
    name: Option<String>,
    /// The whole section, id included.
    range: std::ops::Range<usize>,
}

/// The top-level sections of a wasm binary; `None` when it is not
/// well-formed at the top level.
fn sections(bytes: &[u8]) -> Option<Vec<Section>> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 8;
    while at < bytes.len() {
        let start = at;
        let id = bytes[at];
        at += 1;
        let size = read_leb(bytes, &mut at)?;
        let end = at.checked_add(size).filter(|e| *e <= bytes.len())?;
        let name = match id {
            0 => {
                let mut p = at;
                let len = read_leb(bytes, &mut p)?;
                let name = bytes.get(p..p.checked_add(len)?)?;
                Some(String::from_utf8_lossy(name).into_owned())
            }
            _ => None,
        };
        out.push(Section {
            id,
            name,
            range: start..end,
        });
        at = end;
    }
    Some(out)
}

/// The manifest text embedded in `wasm`, if any.
pub fn embedded(wasm: &[u8]) -> Option<Result<String, String>> {
    custom_section(wasm, SECTION)
        .map(|r| r.map_err(|_| "the embedded manifest is not UTF-8".to_string()))
}

/// The text of the last top-level custom section `name` of `wasm`, if any.
pub fn custom_section(wasm: &[u8], name: &str) -> Option<Result<String, String>> {
    let secs = sections(wasm)?;
    let range = &secs
        .iter()
        .rev()
        .find(|s| s.id == 0 && s.name.as_deref() == Some(name))?
        .range;
    let mut at = range.start + 1;
    let _size = read_leb(wasm, &mut at)?;
    let len = read_leb(wasm, &mut at)?;
    let data = wasm.get(at.checked_add(len)?..range.end)?;
    Some(String::from_utf8(data.to_vec()).map_err(|_| format!("the {name} section is not UTF-8")))
}

/// `wasm` with `manifest` as its `defops-manifest` section (replacing any).
pub fn embed(wasm: &[u8], manifest: &str) -> Result<Vec<u8>, String> {
    let secs = sections(wasm).ok_or("not a WebAssembly binary")?;
    let mut out = wasm[..8].to_vec();
    for s in &secs {
        if s.id == 0 && s.name.as_deref() == Some(SECTION) {
            continue;
        }
        out.extend_from_slice(&wasm[s.range.clone()]);
    }
    let mut body = Vec::new();
    write_leb(SECTION.len(), &mut body);
    body.extend_from_slice(SECTION.as_bytes());
    body.extend_from_slice(manifest.as_bytes());
    out.push(0);
    write_leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "config-set"
version = "0.1.0"
description = "Set KEY = VALUE"
read-write = ["${file:dir}"]
read-only = ["/etc/app"]
logs = ["/var/log/app/*.log*"]

[[param]]
name = "file"
description = "the file"
required = true

[[param]]
name = "key"
description = "the key"
default = "max_conn"
"#;

    #[test]
    fn a_good_manifest_and_its_paths() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.name, "config-set");
        assert_eq!(m.params.len(), 2);
        let params = BTreeMap::from([("file".to_string(), "/var/lib/app/app.conf".to_string())]);
        let r = m.resolve(&params);
        assert_eq!(r.read_write[0].1, Ok("/var/lib/app".to_string()));
        assert_eq!(m.missing_params(&BTreeMap::new()), vec!["file"]);
        let typo = BTreeMap::from([
            ("file".to_string(), "/x".to_string()),
            ("kye".to_string(), "v".to_string()),
        ]);
        assert_eq!(m.undeclared_params(&typo), vec!["kye"]);
        assert!(m.undeclared_params(&params).is_empty());
        let ok = check_grants(
            &m,
            &params,
            &[Path::new("/var/lib/app")],
            &[Path::new("/etc/app/conf.d")],
            &["/var/log/app/app.log*"],
        );
        assert_eq!(ok, Ok(()));
        let more = check_grants(
            &m,
            &params,
            &[Path::new("/var/lib")],
            &[Path::new("/etc")],
            &["/var/log/*"],
        )
        .unwrap_err();
        assert_eq!(more.len(), 3, "{more:?}");
        assert!(
            more[0].contains("--allow /var/lib is not within"),
            "{}",
            more[0]
        );
    }

    #[test]
    fn globs_within_declared_globs() {
        assert!(glob_within("/var/log/app/app.log*", "/var/log/app/*.log*"));
        assert!(glob_within("/var/log/app/app.log", "/var/log/app/*.log*"));
        assert!(!glob_within("/var/log/app/*", "/var/log/app/*.log*"));
        assert!(!glob_within("/var/log/other/a.log", "/var/log/app/*.log*"));
        assert!(!glob_within("/var/log/app/x/a.log", "/var/log/app/*.log"));
    }

    #[test]
    fn section_round_trip() {
        // The smallest component: the preamble alone.
        let bare = b"\0asm\x0d\x00\x01\x00".to_vec();
        assert_eq!(embedded(&bare), None);
        let with = embed(&bare, "name = \"x\"").unwrap();
        assert_eq!(embedded(&with), Some(Ok("name = \"x\"".to_string())));
        let again = embed(&with, "name = \"y\"").unwrap();
        assert_eq!(embedded(&again), Some(Ok("name = \"y\"".to_string())));
        assert_eq!(again.len(), with.len());
        assert!(embed(b"not wasm", "").is_err());
    }

    #[test]
    fn malformed_sections_never_panic() {
        let bare = b"\0asm\x0d\x00\x01\x00".to_vec();
        let with = embed(&bare, "name = \"x\"").unwrap();
        for cut in 0..with.len() {
            let _ = embedded(&with[..cut]);
        }
        // Every byte of the section set to every value.
        for at in 8..with.len() {
            for b in 0..=255u8 {
                let mut w = with.clone();
                w[at] = b;
                let _ = embedded(&w);
                let _ = embed(&w, "y");
            }
        }
    }
}
