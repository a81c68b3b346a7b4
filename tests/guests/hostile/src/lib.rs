//! Test guest that misbehaves on purpose, chosen by the `mode` parameter:
//! `loop`, `check-loop`, `check-panic`, `sleep`, `membomb`, `alloc4g`, `chatty`, `panic`, `exit`,
//! `recurse`, `stdfs`, `many-calls`, `write-then-wait`, `append`, `fail-after-write`,
//! `stat-loop` (metadata of `path`, forever), `rewrite-every-line` (of `file`).
//! `before=FILE` plans a write to FILE first; `announce=1` reports
//! "started" when `apply` begins.

use std::hint::black_box;

use defops_guest::{Check, Fix, Result, dry_run, fs, info, param, require_param};

struct Hostile;

/// Recursion whose frames live on the wasm stack (no locals in linear
/// memory), so it overflows the engine's stack, not the guest's own.
fn recurse(n: u64) -> u64 {
    let next: fn(u64) -> u64 = black_box(recurse);
    if n == u64::MAX {
        0
    } else {
        next(n + 1).wrapping_add(n)
    }
}

impl Fix for Hostile {
    fn check() -> Result<Check> {
        if param("mode").as_deref() == Some("check-panic") {
            panic!("the hostile guest panics in check on purpose");
        }
        if param("mode").as_deref() == Some("check-loop") {
            let mut i: u64 = 0;
            loop {
                i = black_box(i.wrapping_add(1));
            }
        }
        Ok(Check::applies("misbehaving on purpose"))
    }

    fn apply() -> Result<String> {
        let mode = require_param("mode")?;
        // Optionally plan a write first, and say when apply has started.
        if let Some(file) = param("before") {
            fs::write(&file, "planned before misbehaving\n")?;
        }
        if param("announce").is_some() {
            info("started");
        }
        match mode.as_str() {
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            "sleep" => std::thread::sleep(std::time::Duration::from_secs(3600)),
            "membomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    black_box(&hoard);
                }
            }
            "chatty" => {
                let line = "x".repeat(1023);
                for _ in 0..(100 << 10) {
                    println!("{line}");
                }
            }
            "panic" => panic!("the hostile guest panics on purpose"),
            "alloc4g" => {
                // 4 GiB, the whole 32-bit address space, 1 GiB at a time.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                for _ in 0..4 {
                    hoard.push(vec![1u8; black_box(1 << 30)]);
                }
                black_box(&hoard);
            }
            "exit" => std::process::exit(3),
            "recurse" => {
                black_box(recurse(0));
            }
            "stdfs" => {
                let read = std::fs::read_to_string("/etc/hostname")
                    .map(|_| ())
                    .map_err(|e| e.kind());
                let write = std::fs::write("/tmp/defops-stdfs-probe", "x").map_err(|e| e.kind());
                let list = std::fs::read_dir("/").map(|_| ()).map_err(|e| e.kind());
                return Ok(format!("read: {read:?}; write: {write:?}; list: {list:?}"));
            }
            "many-calls" => {
                let n: u64 = param("calls")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1_000_000);
                let mut yes = 0u64;
                for _ in 0..n {
                    yes += u64::from(dry_run());
                }
                return Ok(format!("{n} calls, dry-run {yes} times"));
            }
            "write-then-wait" => {
                // Plan a write, say so, then wait for the test to change the
                // disk under the plan and create the `go` file.
                fs::write(require_param("file")?, "planned\n")?;
                info("planned");
                let go = require_param("go")?;
                while !fs::exists(&go)? {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                return Ok("waited".into());
            }
            "append" => {
                // Not idempotent on purpose: one more line every time.
                let file = require_param("file")?;
                let mut text = fs::read_to_string(&file)?;
                text.push_str("one more line\n");
                fs::write(&file, text)?;
                return Ok("appended".into());
            }
            "stat-loop" => {
                // Host calls that each take the host a while (a deep path,
                // chains of symlinks), until the run is stopped.
                let path = require_param("path")?;
                let mut n = 0u64;
                loop {
                    let _ = fs::metadata(&path);
                    n += 1;
                    if n.is_multiple_of(100) {
                        info(format!("{n} calls"));
                    }
                }
            }
            "rewrite-every-line" => {
                // A write whose diff changes every line of a large file.
                let file = require_param("file")?;
                let text = fs::read_to_string(&file)?;
                let new: String = text.lines().map(|l| format!("{l} changed\n")).collect();
                fs::write(&file, new)?;
                return Ok("rewritten".into());
            }
            "fail-after-write" => {
                fs::write(require_param("file")?, "half-done\n")?;
                return Err("failing after a write, on purpose".into());
            }
            other => return Err(format!("unknown mode {other:?}").into()),
        }
        Ok(format!("{mode} ended"))
    }
}

defops_guest::export_fix!(Hostile);
