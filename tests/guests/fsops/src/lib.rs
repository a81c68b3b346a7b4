//! Test guest: performs the file-system calls its `ops` parameter lists, one
//! per line (or `;`-separated), and reports each result as a message:
//! `OP ARGS -> ok [DATA]` or `OP ARGS -> ERROR`.
//!
//! Ops: read P, stat P, lstat P, ls P, readlink P, write P TEXT, mkdir P,
//! rm P, rmdir P, mv A B, chmod P OCTAL, chown P UID GID, ln TARGET LINK,
//! grep GLOB PATTERN [MAX], count GLOB PATTERN, tail GLOB N, print TEXT
//! (to stdout).
//! Arguments understand `\0`, `\n`, `\t`, `\s` (space), `\\`, `\u{HEX}`
//! (a character) and `\xHH` (a raw byte: `write` and `print` take bytes,
//! so they can write what is not UTF-8); other backslashes are kept (for
//! regular expressions).
//! Params: `phase=check` runs the ops in check instead of apply;
//! `ignore_errors=1` succeeds even when ops fail.

use defops_guest::{Check, Fix, Result, fs, info, logs, param};

struct FsOps;

fn push(out: &mut Vec<u8>, c: char) {
    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}

/// `\u{HEX}`'s character, after the `u`.
fn braced(chars: &mut std::iter::Peekable<std::str::Chars>) -> Option<char> {
    let rest: String = chars.clone().collect();
    let hex = rest.strip_prefix('{')?.split_once('}')?.0;
    let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
    for _ in 0..hex.len() + 2 {
        chars.next();
    }
    Some(c)
}

/// `\xHH`'s byte, after the `x`.
fn hex_byte(chars: &mut std::iter::Peekable<std::str::Chars>) -> Option<u8> {
    let hex: String = chars.clone().take(2).collect();
    let b = u8::from_str_radix(&hex, 16)
        .ok()
        .filter(|_| hex.len() == 2)?;
    chars.next();
    chars.next();
    Some(b)
}

fn unescape_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            push(&mut out, c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push(0),
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('s') => out.push(b' '),
            Some('\\') => out.push(b'\\'),
            Some('u') if braced(&mut chars.clone()).is_some() => {
                push(&mut out, braced(&mut chars).unwrap_or_default())
            }
            Some('x') if hex_byte(&mut chars.clone()).is_some() => {
                out.push(hex_byte(&mut chars).unwrap_or_default())
            }
            // Anything else (a regex's \S, \d, ...) is kept as written.
            Some(other) => {
                out.push(b'\\');
                push(&mut out, other);
            }
            None => out.push(b'\\'),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    String::from_utf8_lossy(&unescape_bytes(s)).into_owned()
}

fn one(line: &str) -> std::result::Result<String, String> {
    let mut words = line.split_whitespace();
    let op = words.next().unwrap_or_default();
    let raw: Vec<&str> = words.collect();
    let bytes = |i: usize| raw.get(i).map(|w| unescape_bytes(w)).unwrap_or_default();
    let args: Vec<String> = raw.iter().map(|w| unescape(w)).collect();
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or_else(|| format!("{op}: missing argument {}", i + 1))
    };
    let e = |e: fs::Error| e.to_string();
    match op {
        "read" => fs::read(arg(0)?)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(e),
        "stat" => fs::metadata(arg(0)?).map(|m| format!("{m:?}")).map_err(e),
        "lstat" => fs::symlink_metadata(arg(0)?)
            .map(|m| format!("{m:?}"))
            .map_err(e),
        "ls" => fs::read_dir(arg(0)?)
            .map(|v| v.into_iter().map(|d| d.name).collect::<Vec<_>>().join(","))
            .map_err(e),
        "readlink" => fs::read_link(arg(0)?).map_err(e),
        "write" => fs::write(arg(0)?, bytes(1))
            .map(|()| String::new())
            .map_err(e),
        "mkdir" => fs::create_dir(arg(0)?).map(|()| String::new()).map_err(e),
        "rm" => fs::remove_file(arg(0)?).map(|()| String::new()).map_err(e),
        "rmdir" => fs::remove_dir(arg(0)?).map(|()| String::new()).map_err(e),
        "mv" => fs::rename(arg(0)?, arg(1)?)
            .map(|()| String::new())
            .map_err(e),
        "chmod" => {
            let mode = u32::from_str_radix(&arg(1)?, 8).map_err(|x| x.to_string())?;
            fs::set_mode(arg(0)?, mode)
                .map(|()| String::new())
                .map_err(e)
        }
        "chown" => {
            let uid = arg(1)?
                .parse()
                .map_err(|x: std::num::ParseIntError| x.to_string())?;
            let gid = arg(2)?
                .parse()
                .map_err(|x: std::num::ParseIntError| x.to_string())?;
            fs::set_owner(arg(0)?, uid, gid)
                .map(|()| String::new())
                .map_err(e)
        }
        "ln" => fs::symlink(arg(0)?, arg(1)?)
            .map(|()| String::new())
            .map_err(e),
        "grep" => {
            let max = args.get(2).and_then(|m| m.parse().ok()).unwrap_or(1000);
            let r = logs::grep(arg(0)?, arg(1)?).max(max).run().map_err(e)?;
            let base = |f: &str| f.rsplit('/').next().unwrap_or(f).to_string();
            let files: Vec<String> = r.files.iter().map(|f| base(f)).collect();
            let hits: Vec<String> = r
                .iter()
                .map(|m| {
                    let cap = m.capture(1).unwrap_or("-");
                    format!(
                        "{}:{}:{}:{cap}:{}",
                        base(&m.file),
                        m.line_number,
                        m.offset,
                        m.line.len()
                    )
                })
                .collect();
            Ok(format!(
                "total={} truncated={} files={} hits={}",
                r.total,
                r.truncated,
                files.join(","),
                hits.join(",")
            ))
        }
        "count" => logs::count(&arg(0)?, &arg(1)?)
            .map(|n| n.to_string())
            .map_err(e),
        "tail" => {
            let n = arg(1)?
                .parse()
                .map_err(|x: std::num::ParseIntError| x.to_string())?;
            logs::tail(&arg(0)?, n).map(|l| l.join("|")).map_err(e)
        }
        "print" => {
            use std::io::Write;
            let line: Vec<u8> = (0..raw.len()).map(bytes).collect::<Vec<_>>().join(&b' ');
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&line);
            let _ = out.write_all(b"\n");
            Ok(String::new())
        }
        other => Err(format!("unknown op {other:?}")),
    }
}

/// Runs every op; the first failure, if any.
fn run_ops() -> Option<String> {
    let ops = param("ops").unwrap_or_default();
    let mut first = None;
    for line in ops
        .split(['\n', ';'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        match one(line) {
            Ok(data) => info(format!("{line} -> ok {data}")),
            Err(err) => {
                info(format!("{line} -> {err}"));
                first.get_or_insert(format!("{line} -> {err}"));
            }
        }
    }
    first.filter(|_| param("ignore_errors").is_none())
}

impl Fix for FsOps {
    fn check() -> Result<Check> {
        if param("phase").as_deref() == Some("check")
            && let Some(err) = run_ops()
        {
            return Err(err.into());
        }
        Ok(Check::applies("ops to run"))
    }

    fn apply() -> Result<String> {
        if param("phase").as_deref() != Some("check")
            && let Some(err) = run_ops()
        {
            return Err(err.into());
        }
        Ok("ops done".into())
    }
}

defops_guest::export_fix!(FsOps);
