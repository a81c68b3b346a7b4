//! Python fixes: the one runtime component that runs them, and the
//! manifest a script carries in its PEP 723 metadata block.
//!
//! A Python fix is data. The runtime (`python.wasm`, built by the project
//! with componentize-py) is the component that runs; it gets the script's
//! source through `defops:fix/script`. The script is what is hashed,
//! signed, journaled and reviewed; the runtime's digest is journaled beside
//! it.

use std::path::{Path, PathBuf};

/// The runtime this binary was made for: its `defops-runtime` custom
/// section must say exactly this.
pub const RUNTIME_TAG: &str = "defops-python-runtime 2";
/// The custom section that carries [`RUNTIME_TAG`].
pub const RUNTIME_SECTION: &str = "defops-runtime";
/// What `$DEFOPS_PYTHON_RUNTIME` names: the runtime to use.
pub const RUNTIME_ENV: &str = "DEFOPS_PYTHON_RUNTIME";

/// True when `path` names a Python fix.
pub fn is_script(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "py")
}

/// Where the runtime is looked for, in order: `$DEFOPS_PYTHON_RUNTIME`,
/// next to the binary, the installed data directory, the source tree's
/// build output.
pub fn runtime_candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os(RUNTIME_ENV) {
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join("python.wasm"));
        out.push(dir.join("../share/defops-wasm/python.wasm"));
        // target/<profile>/defops-wasm -> target/python/python.wasm
        out.push(dir.join("../python/python.wasm"));
    }
    out.push(PathBuf::from("/usr/share/defops-wasm/python.wasm"));
    out
}

/// The runtime's path, or a message naming where it was looked for.
pub fn locate_runtime() -> Result<PathBuf, String> {
    let candidates = runtime_candidates();
    candidates
        .iter()
        .find(|p| p.is_file())
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .ok_or_else(|| {
            format!(
                "no Python runtime (python.wasm) found; looked at {}; install defops-wasm's package, build it with scripts/build-python-runtime, or set {RUNTIME_ENV}",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Checks that `bytes` is the runtime this binary was made for.
pub fn check_runtime(bytes: &[u8], path: &Path) -> Result<(), String> {
    match crate::manifest::custom_section(bytes, RUNTIME_SECTION) {
        Some(Ok(tag)) if tag == RUNTIME_TAG => Ok(()),
        Some(Ok(tag)) => Err(format!(
            "{} is {tag:?}, not the {RUNTIME_TAG:?} this defops-wasm {} was made for; install the runtime of the same release",
            path.display(),
            env!("CARGO_PKG_VERSION")
        )),
        _ => Err(format!(
            "{} is not a defops-wasm Python runtime (no {RUNTIME_SECTION} section); install the runtime of the same release",
            path.display()
        )),
    }
}

/// The manifest in `source`'s PEP 723 block (`# /// script` … `# ///`),
/// under `[tool.defops]`: as `manifest.toml` text whose line numbers are
/// the script's own, so every error names the script's line. `None` when
/// the script declares none.
pub fn manifest_text(source: &str) -> Option<Result<String, String>> {
    let lines: Vec<&str> = source.lines().collect();
    let mut out: Vec<String> = vec![String::new(); lines.len()];
    let mut block: Option<usize> = None;
    let mut found: Option<usize> = None;
    let mut in_defops = false;
    let mut any_defops = false;
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if block.is_none() {
            if line == "# /// script" {
                if let Some(first) = found {
                    return Some(Err(format!(
                        "line {n}: a second `# /// script` block (the first is at line {first}); a script has one"
                    )));
                }
                block = Some(n);
                found = Some(n);
            }
            continue;
        }
        if line == "# ///" {
            block = None;
            continue;
        }
        let content = match line.strip_prefix('#') {
            Some("") => "",
            Some(rest) => match rest.strip_prefix(' ') {
                Some(c) => c,
                None => {
                    return Some(Err(format!(
                        "line {n}: a metadata line must start with \"# \" (or be \"#\")"
                    )));
                }
            },
            None => {
                return Some(Err(format!(
                    "line {n}: the `# /// script` block of line {} is not closed with `# ///`",
                    found.unwrap_or(n)
                )));
            }
        };
        let header = content.trim();
        if header.starts_with('[') {
            let name = header.trim_matches(|c| c == '[' || c == ']').trim();
            in_defops = name == "tool.defops" || name.starts_with("tool.defops.");
            any_defops |= in_defops;
            out[i] = match name.strip_prefix("tool.defops.") {
                Some(rest) if header.starts_with("[[") => format!("[[{rest}]]"),
                Some(rest) => format!("[{rest}]"),
                None => String::new(),
            };
            continue;
        }
        if in_defops {
            out[i] = content.to_string();
        }
    }
    if let Some(start) = block {
        return Some(Err(format!(
            "line {start}: the `# /// script` block is not closed with `# ///`"
        )));
    }
    any_defops.then(|| Ok(out.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_keeps_the_script_s_line_numbers() {
        let src = "import defops\n# /// script\n# requires-python = \">=3.11\"\n# [tool.defops]\n# name = \"x\"\n#\n# [[tool.defops.param]]\n# name = \"p\"\n# ///\n";
        let text = manifest_text(src).unwrap().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[4], "name = \"x\"");
        assert_eq!(lines[6], "[[param]]");
        assert_eq!(lines[2], "", "requires-python is not ours");
    }

    #[test]
    fn two_blocks_an_open_block_and_a_bad_line_are_errors() {
        let two = "# /// script\n# [tool.defops]\n# ///\n# /// script\n# ///\n";
        assert!(manifest_text(two).unwrap().unwrap_err().contains("line 4"));
        let open = "# /// script\n# [tool.defops]\n";
        assert!(manifest_text(open).unwrap().unwrap_err().contains("line 1"));
        let bad = "# /// script\n#[tool.defops]\n# ///\n";
        assert!(manifest_text(bad).unwrap().unwrap_err().contains("line 2"));
        assert!(manifest_text("print(1)\n").is_none());
        assert!(manifest_text("# /// script\n# dependencies = []\n# ///\n").is_none());
    }
}
