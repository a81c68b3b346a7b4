//! What a reviewer uses: `inspect` (the manifest, digests, real imports
//! and whether they agree; or what changed between two versions), `embed`
//! (put a manifest into a component) and `approve` (sign it).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::exit::Exit;
use crate::manifest::{self, Manifest};
use crate::output::Printer;
use crate::run::Stop;
use crate::sandbox::{ALLOWED_IMPORTS, Sandbox};

/// The capability an import gives, for grouping. The Python runtime's
/// `script` and sockets imports are its own; a fix component's sockets
/// are refused.
fn group(import: &str, runtime: bool) -> &'static str {
    let bare = import.split('@').next().unwrap_or(import);
    match bare {
        "defops:fix/fs" => "files",
        "defops:fix/logs" => "logs",
        "defops:fix/context" => "context",
        "defops:fix/report" => "messages",
        "defops:fix/types" => "types",
        "defops:fix/script" if runtime => "script",
        b if runtime && b.starts_with("wasi:sockets/") => "sockets",
        _ if ALLOWED_IMPORTS.contains(&bare) => "std",
        _ => "refused",
    }
}

const GROUPS: [(&str, &str); 9] = [
    ("files", "the granted files (defops:fix/fs)"),
    ("logs", "the granted logs (defops:fix/logs)"),
    ("context", "params, the dry-run flag, the host name"),
    ("messages", "messages to the operator"),
    ("types", "shared types"),
    (
        "std",
        "what a standard library needs: stdout/stderr, clocks, random, an empty file system",
    ),
    ("script", "the Python fix's source, handed to the runtime"),
    (
        "sockets",
        "linked, always denied: no TCP, no UDP, no name lookup (the Python runtime's libc imports them)",
    ),
    (
        "refused",
        "imports the runner refuses: this fix will not run",
    ),
];

/// Everything `inspect` says about one component.
pub fn report(path: &Path, sandbox: &Sandbox, cache: Option<&Path>) -> Result<Value, Stop> {
    let script = crate::python::is_script(path);
    let (bytes, imports, runtime) = match script {
        true => sandbox
            .script_imports(path, cache)
            .map(|(b, i, r)| (b, i, Some(r))),
        false => sandbox.imports(path, cache).map(|(b, i)| (b, i, None)),
    }
    .map_err(|e| Stop::new(Exit::Usage, e))?;
    let mut groups = serde_json::Map::new();
    for (g, _) in GROUPS {
        groups.insert(g.into(), json!([]));
    }
    for i in &imports {
        if let Some(Value::Array(list)) = groups.get_mut(group(i, script)) {
            list.push(json!(i));
        }
    }
    let uses = |g: &str| groups[g].as_array().is_some_and(|l| !l.is_empty());
    let mut problems: Vec<String> = Vec::new();
    let text = match script {
        true => std::str::from_utf8(&bytes)
            .ok()
            .and_then(crate::python::manifest_text),
        false => manifest::embedded(&bytes),
    };
    let (manifest, manifest_error) = match text {
        None if script => {
            problems.push(format!(
                "no manifest: {} has no `# /// script` block with a [tool.defops] table, so nothing declares what it may touch; see `defops-wasm new NAME --lang python`",
                path.display()
            ));
            (None, None)
        }
        None => {
            problems.push(format!(
                "no embedded manifest: nothing declares what it may touch; embed one with `defops-wasm embed {} manifest.toml`",
                path.display()
            ));
            (None, None)
        }
        Some(Err(e)) => {
            problems.push(format!("the embedded manifest is unreadable: {e}"));
            (None, Some(e))
        }
        Some(Ok(text)) => match Manifest::parse(&text) {
            Ok(m) => (Some(m), None),
            Err(e) => {
                problems.push(format!("the embedded manifest is invalid: {e}"));
                (None, Some(e.to_string()))
            }
        },
    };
    if uses("refused") {
        problems.push(format!(
            "imports what the runner refuses: {}",
            groups["refused"]
                .as_array()
                .map(|l| l
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ));
    }
    // The runtime imports every interface whatever the script uses: only
    // a component's imports say what it can do.
    if let Some(m) = manifest.as_ref().filter(|_| !script) {
        let paths = !m.read_write.is_empty() || !m.read_only.is_empty();
        if uses("logs") && m.logs.is_empty() {
            problems.push("imports the logs interface but declares no logs".into());
        }
        if !uses("logs") && !m.logs.is_empty() {
            problems.push("declares logs but does not import the logs interface".into());
        }
        if uses("files") && !paths {
            problems.push("imports the file-system interface but declares no paths".into());
        }
        if !uses("files") && paths {
            problems.push("declares paths but does not import the file-system interface".into());
        }
    }
    let sig = signature_path(path);
    let digests = digests(&bytes);
    Ok(json!({
        "type": "inspect",
        "path": path.display().to_string(),
        "fix_id": digests["fix_id"],
        "size": bytes.len(),
        "digests": digests,
        "manifest": manifest,
        "manifest_error": manifest_error,
        "imports": groups,
        "consistent": problems.is_empty(),
        "problems": problems,
        "signature": sig.exists().then(|| sig.display().to_string()),
        "language": if script { "python" } else { "wasm" },
        "crypto": crate::crypto::describe(),
        "runtime": runtime.map(|r| json!({
            "path": r.path.display().to_string(),
            "blake3": r.blake3,
            "sha256": r.sha256,
        })),
    }))
}

/// A component's identity and both digests: `{"fix_id", "blake3",
/// "sha256"}` (`fix_id` is `sha256:<hex>`, the form shown to people).
pub fn digests(bytes: &[u8]) -> Value {
    use crate::digest::Alg;
    let sha256 = Alg::Sha256.hex(bytes);
    json!({
        "fix_id": crate::digest::fix_id_of(&sha256),
        "blake3": Alg::Blake3.hex(bytes),
        "sha256": sha256,
    })
}

/// Writes `bytes` to `dest` by a temporary file renamed over it, so `dest`
/// is never half-written.
pub fn write_replacing(dest: &Path, bytes: &[u8]) -> Result<(), Stop> {
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, dest))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Stop::new(Exit::Usage, format!("cannot write {}: {e}", dest.display()))
        })
}

/// `wasm` (read from `source`) with `manifest` embedded, written to `dest`;
/// the bytes written.
pub fn embed_and_write(
    wasm: &[u8],
    manifest: &str,
    source: &Path,
    dest: &Path,
) -> Result<Vec<u8>, Stop> {
    let with = manifest::embed(wasm, manifest)
        .map_err(|e| Stop::new(Exit::Usage, format!("{}: {e}", source.display())))?;
    write_replacing(dest, &with)?;
    Ok(with)
}

/// `FIX.wasm.sig`, where `ssh-keygen -Y sign` puts the signature.
pub fn signature_path(fix: &Path) -> PathBuf {
    let mut s = fix.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

fn sandbox() -> Result<Sandbox, Stop> {
    Sandbox::new().map_err(|e| Stop::new(Exit::Usage, format!("cannot start wasmtime: {e:#}")))
}

fn print_report(r: &Value, out: &Printer) {
    // Every field on one line, escaped: a manifest's text is the fix
    // author's.
    let s = |v: &Value| crate::escape::line(v.as_str().unwrap_or("")).into_owned();
    out.note(&format!("{}  {} bytes", s(&r["path"]), r["size"]));
    out.note(&format!("  {}", s(&r["fix_id"])));
    out.note(&format!(
        "  sha256 by {}",
        s(&serde_json::json!(crate::crypto::describe_line(
            &r["crypto"]
        )))
    ));
    if r["runtime"].is_object() {
        out.note(&format!(
            "  runtime   {} sha256:{}",
            s(&r["runtime"]["path"]),
            s(&r["runtime"]["sha256"])
        ));
    }
    let m = &r["manifest"];
    if m.is_object() {
        out.note(&format!(
            "manifest  {} {} — {}",
            s(&m["name"]),
            s(&m["version"]),
            s(&m["description"])
        ));
        for (key, label) in [
            ("read-write", "read-write"),
            ("read-only", "read-only"),
            ("logs", "logs"),
        ] {
            let list: Vec<String> = m[key]
                .as_array()
                .map(|l| l.iter().map(s).collect())
                .unwrap_or_default();
            out.note(&format!(
                "  {label:<10}  {}",
                if list.is_empty() {
                    "(none)".into()
                } else {
                    list.join(", ")
                }
            ));
        }
        for p in m["params"].as_array().into_iter().flatten() {
            let how = match (&p["required"], &p["default"]) {
                (Value::Bool(true), _) => "required".to_string(),
                (_, Value::String(d)) => format!("default \"{}\"", crate::escape::line(d)),
                _ => "optional".to_string(),
            };
            out.note(&format!(
                "  param       {} ({how}) — {}",
                s(&p["name"]),
                s(&p["description"])
            ));
        }
        if m["params"].as_array().is_none_or(Vec::is_empty) {
            out.note("  param       (none: a run with any --param is refused)");
        }
    } else {
        out.note(
            "manifest  none: any --param is passed on unchecked, and the grants are not checked",
        );
    }
    out.note("imports");
    for (g, what) in GROUPS {
        let list: Vec<String> = r["imports"][g]
            .as_array()
            .map(|l| l.iter().map(s).collect())
            .unwrap_or_default();
        if !list.is_empty() {
            out.note(&format!("  {g:<9} {what}: {}", list.join(", ")));
        }
    }
    if let Some(sig) = r["signature"].as_str() {
        out.note(&format!("signature {}", crate::escape::line(sig)));
    }
    match r["consistent"] == json!(true) {
        true => out.note("verdict   the manifest and the imports agree"),
        false => {
            out.note("verdict   DISAGREE:");
            for p in r["problems"].as_array().into_iter().flatten() {
                out.note(&format!("  - {}", s(p)));
            }
        }
    }
}

/// `inspect FIX`: exit 0 when manifest and imports agree, 1 when not.
pub fn inspect(fix: &Path, state: Option<&Path>, out: &Printer) -> Result<Exit, Stop> {
    let sb = sandbox()?;
    let cache = state.map(|s| s.join("cache"));
    let r = report(fix, &sb, cache.as_deref())?;
    match out.is_json() {
        true => out.raw(&r),
        false => print_report(&r, out),
    }
    Ok(match r["consistent"] == json!(true) {
        true => Exit::Success,
        false => Exit::FixFailed,
    })
}

/// The differences between two lists: (added, removed).
fn list_diff(old: &Value, new: &Value) -> (Vec<Value>, Vec<Value>) {
    let (o, n) = (
        old.as_array().cloned().unwrap_or_default(),
        new.as_array().cloned().unwrap_or_default(),
    );
    (
        n.iter().filter(|v| !o.contains(v)).cloned().collect(),
        o.iter().filter(|v| !n.contains(v)).cloned().collect(),
    )
}

/// `inspect OLD NEW`: what changed, for re-review. Exit 0 when the two are
/// the same binary, 1 when anything changed: the manifest, the imports, or
/// only the code (a reviewer looks at new code again; its signature no
/// longer verifies).
pub fn inspect_diff(
    old: &Path,
    new: &Path,
    state: Option<&Path>,
    out: &Printer,
) -> Result<Exit, Stop> {
    let sb = sandbox()?;
    let cache = state.map(|s| s.join("cache"));
    let a = report(old, &sb, cache.as_deref())?;
    let b = report(new, &sb, cache.as_deref())?;
    let mut changes: Vec<Value> = Vec::new();
    for key in ["name", "version", "description"] {
        let (x, y) = (&a["manifest"][key], &b["manifest"][key]);
        if x != y {
            changes.push(json!({"what": key, "old": x, "new": y}));
        }
    }
    if a["manifest"].is_null() != b["manifest"].is_null() {
        changes.push(json!({"what": "manifest", "old": !a["manifest"].is_null(), "new": !b["manifest"].is_null()}));
    }
    for key in ["read-write", "read-only", "logs", "params"] {
        let (added, removed) = list_diff(&a["manifest"][key], &b["manifest"][key]);
        if !added.is_empty() || !removed.is_empty() {
            changes.push(json!({"what": key, "added": added, "removed": removed}));
        }
    }
    for (g, _) in GROUPS {
        let (added, removed) = list_diff(&a["imports"][g], &b["imports"][g]);
        if !added.is_empty() || !removed.is_empty() {
            changes
                .push(json!({"what": format!("imports: {g}"), "added": added, "removed": removed}));
        }
    }
    let same_code = a["digests"] == b["digests"];
    if out.is_json() {
        out.raw(&json!({
            "type": "inspect-diff",
            "old": a,
            "new": b,
            "same_binary": same_code,
            "changes": changes,
        }));
    } else {
        let s = |v: &Value| crate::escape::line(v.as_str().unwrap_or("")).into_owned();
        out.note(&format!("{} -> {}", s(&a["path"]), s(&b["path"])));
        out.note(&format!("  {} -> {}", s(&a["fix_id"]), s(&b["fix_id"])));
        if changes.is_empty() {
            out.note(match same_code {
                true => "the same binary",
                false => "the code changed; the manifest and the imports did not",
            });
        }
        for c in &changes {
            let what = c["what"].as_str().unwrap_or("");
            let b = |v: &Value| crate::escape::line(&brief(v)).into_owned();
            if c.get("added").is_some() {
                for v in c["added"].as_array().into_iter().flatten() {
                    out.note(&format!("  + {what}: {}", b(v)));
                }
                for v in c["removed"].as_array().into_iter().flatten() {
                    out.note(&format!("  - {what}: {}", b(v)));
                }
            } else {
                // JSON's quoting: every control escaped.
                out.note(&format!("  ~ {what}: {} -> {}", c["old"], c["new"]));
            }
        }
        if b["consistent"] != json!(true) {
            out.note("the new version's manifest and imports DISAGREE (see inspect)");
        }
    }
    Ok(match changes.is_empty() && same_code {
        true => Exit::Success,
        false => Exit::FixFailed,
    })
}

fn brief(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("name") => {
            let mut s = o["name"].as_str().unwrap_or("").to_string();
            if o.get("required") == Some(&json!(true)) {
                s.push_str(" (required)");
            }
            if let Some(d) = o.get("default").and_then(|d| d.as_str()) {
                s.push_str(&format!(" (default {d:?})"));
            }
            s
        }
        other => other.to_string(),
    }
}

/// `embed FIX.wasm MANIFEST.toml [-o OUT]`: checks the manifest and puts it
/// into the component (replacing one already there).
pub fn embed(
    fix: &Path,
    manifest_path: &Path,
    output: Option<&Path>,
    out: &Printer,
) -> Result<Exit, Stop> {
    let text = crate::regular_file::read_to_string(manifest_path).map_err(|e| {
        Stop::new(
            Exit::Usage,
            format!("cannot read {}: {e}", manifest_path.display()),
        )
    })?;
    let m = Manifest::parse(&text).map_err(|e| {
        Stop::new(
            Exit::Usage,
            format!("{}: {}; fix the manifest", manifest_path.display(), e),
        )
    })?;
    let wasm = crate::regular_file::read(fix)
        .map_err(|e| Stop::new(Exit::Usage, format!("cannot read {}: {e}", fix.display())))?;
    if wasm.len() < 8 || wasm[..4] != *b"\0asm" || wasm[4..8] == [1, 0, 0, 0] {
        return Err(Stop::new(
            Exit::Usage,
            format!(
                "{} is not a WebAssembly component; build the fix for wasm32-wasip2",
                fix.display()
            ),
        ));
    }
    let dest = output.unwrap_or(fix);
    let with = embed_and_write(&wasm, &text, fix, dest)?;
    let mut r = digests(&with);
    r["type"] = json!("embed");
    r["fix"] = json!(dest.display().to_string());
    r["name"] = json!(m.name);
    r["version"] = json!(m.version);
    r["size"] = json!(with.len());
    match out.is_json() {
        true => out.raw(&r),
        false => out.note(&format!(
            "embedded the manifest of {} {} into {} ({})",
            m.name,
            m.version,
            crate::escape::line(&dest.display().to_string()),
            r["fix_id"].as_str().unwrap_or("")
        )),
    }
    Ok(Exit::Success)
}

/// `approve FIX --key KEY`: `ssh-keygen -Y sign -f KEY -n defops-wasm FIX`,
/// after showing what is being approved.
pub fn approve(fix: &Path, key: &Path, out: &Printer) -> Result<Exit, Stop> {
    // ssh-keygen would wait on a FIFO given as the key: refuse it here.
    crate::regular_file::open(key).map_err(|e| {
        Stop::new(
            Exit::Usage,
            format!("cannot read the key {}: {e}", key.display()),
        )
    })?;
    let sb = sandbox()?;
    let r = report(fix, &sb, None)?;
    if !out.is_json() {
        print_report(&r, out);
    }
    // Signed from stdin so that the new signature replaces an old one only
    // once it exists.
    let input = crate::regular_file::open(fix)
        .map_err(|e| Stop::new(Exit::Usage, format!("cannot read {}: {e}", fix.display())))?;
    let output = std::process::Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", crate::approval::NAMESPACE, "-f"])
        .arg(key)
        .arg("-")
        .stdin(input)
        .output()
        .map_err(|e| {
            Stop::new(
                Exit::Usage,
                format!("cannot run ssh-keygen: {e}; install OpenSSH (ssh-keygen 8.1 or later)"),
            )
        })?;
    if !output.status.success() || !output.stdout.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
        return Err(Stop::new(
            Exit::Usage,
            format!(
                "ssh-keygen -Y sign failed ({}): {}; check the key {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                key.display()
            ),
        ));
    }
    let sig = signature_path(fix);
    write_replacing(&sig, &output.stdout)?;
    let v = json!({
        "type": "approve",
        "fix": fix.display().to_string(),
        "signature": sig.display().to_string(),
        "fix_id": r["fix_id"],
        "sha256": r["digests"]["sha256"],
        "consistent": r["consistent"],
    });
    match out.is_json() {
        true => out.raw(&v),
        false => out.note(&format!(
            "approved: {} signs {} (namespace {})",
            crate::escape::line(&sig.display().to_string()),
            r["fix_id"].as_str().unwrap_or(""),
            crate::approval::NAMESPACE
        )),
    }
    Ok(Exit::Success)
}
