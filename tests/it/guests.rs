//! Test guests that misbehave: each ends with its own clear message and
//! exit code, and leaves the disk as it was.

use crate::util::{Out, Tree, guest};

fn hostile(t: &Tree, mode: &str, extra: &[&str]) -> Out {
    let mut args = vec!["-p".to_string(), format!("mode={mode}")];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    t.run(&guest("hostile"), &args)
}

fn assert_limit(out: &Out, needle: &str) {
    out.assert_code(4);
    let s = out.summary();
    assert_eq!(s["outcome"], "limit");
    let err = s["error"].as_str().unwrap();
    assert!(err.contains(needle), "{err:?} does not mention {needle:?}");
    assert!(out.stderr.contains(needle), "stderr: {}", out.stderr);
}

#[test]
fn an_infinite_loop_hits_the_deadline() {
    let t = Tree::new();
    let out = hostile(&t, "loop", &["--timeout", "1s"]);
    assert_limit(&out, "deadline of 1s");
    assert_eq!(out.summary()["phase"], "apply");
}

#[test]
fn a_loop_in_check_hits_the_deadline_in_check() {
    let t = Tree::new();
    let out = hostile(&t, "check-loop", &["--timeout", "500ms"]);
    assert_limit(&out, "deadline of 500ms");
    assert_eq!(out.summary()["phase"], "check");
}

#[test]
fn a_sleeping_guest_hits_the_deadline() {
    let t = Tree::new();
    let started = std::time::Instant::now();
    let out = hostile(&t, "sleep", &["--timeout", "1s"]);
    assert_limit(&out, "deadline of 1s");
    // Not a speed check: a guest sleeping for an hour must not hold the run.
    assert!(started.elapsed().as_secs() < 60);
}

/// The CPU time, in milliseconds, that the threads of `pid` have had.
fn cpu_ms(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e6
}

/// A computing guest that got no CPU time from before its deadline until
/// after it (its process stopped, as a throttled or starved one is) stops
/// as soon as it runs again, not after computing on to its next tick of
/// CPU time: a tick comes on the wall clock just past the deadline, and a
/// guest that yields past its deadline is not resumed to find out. (Under
/// a 1% CPU quota each 10 ms tick of CPU time took a second.)
///
/// Measured in the CPU time the process takes once continued until it
/// writes its summary, held there by a full pipe: the guest's end, the
/// journal and the record, 1-2 ms (a debug build). Without the tick past
/// the deadline a trial takes 2-15 ms, 10 ms at the median: the rest of a
/// tick of CPU time from wherever the stop fell. The process's exit is
/// left out on purpose: unmapping its memory took 2-3 ms more and
/// stretched under the parallel suite, past any margin. The median of five
/// trials must be under 4 ms. (A guest resumed once more before it is
/// stopped also computes up to the next tick.) The timer signal is the
/// one path checked: where the kernel would have a thread tick instead,
/// the test is skipped.
#[test]
fn a_guest_starved_past_its_deadline_stops_without_computing_on() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipped: the ticks come from a thread on this architecture");
        return;
    }
    // A trial whose stop came too late to fall before the deadline (a
    // loaded machine) measures nothing and is made again.
    let mut took: Vec<f64> = (0..10)
        .filter_map(|_| cpu_after_a_stop_past_the_deadline())
        .take(5)
        .collect();
    if took.len() < 3 {
        eprintln!("skipped: the guest could not be stopped before its deadline here");
        return;
    }
    took.sort_by(f64::total_cmp);
    assert!(
        took[took.len() / 2] < 4.0,
        "the guest computed on after its deadline: {took:.1?} ms of CPU time"
    );
}

/// One trial: the CPU time, in milliseconds, a dry-run of a looping guest
/// takes, once continued after a stop from before its 1 s deadline to
/// after it, to end the guest and come to writing its summary; `None` if
/// the stop came too late to be before the deadline.
fn cpu_after_a_stop_past_the_deadline() -> Option<f64> {
    use std::io::{BufRead, Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    let t = Tree::new();
    let hostile = guest("hostile");
    let (reader, writer) = std::io::pipe().unwrap();
    let mut cmd = t.defops().into_command();
    cmd.args([
        "run",
        hostile.to_str().unwrap(),
        "--allow",
        &t.p("grant"),
        "--dry-run",
        "-p",
        "mode=loop",
        "--timeout",
        "1s",
        "--json",
    ])
    .stdout(writer)
    .stderr(std::process::Stdio::null());
    // SAFETY: between fork and exec, only async-signal-safe calls: the
    // tick's signal as the binary expects it (default, unblocked), whatever
    // the test harness inherited.
    unsafe {
        cmd.pre_exec(|| {
            let sig = libc::SIGRTMIN() + 4;
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    // Reaped by `waitpid` below.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap();
    // The only write end left is the child's.
    drop(cmd);
    let mut out = std::io::BufReader::new(reader);
    assert!(
        out.by_ref()
            .lines()
            .any(|l| l.unwrap().contains("\"start\""))
    );
    let (pid, started) = (child.id(), std::time::Instant::now());
    // Stopped once the guest computes (the host's work between the start
    // line and the guest is far less than 30 ms of CPU time).
    let before = cpu_ms(pid);
    while cpu_ms(pid) - before < 30.0 {
        assert!(started.elapsed().as_secs() < 60, "the guest never ran");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let pid = pid as libc::pid_t;
    // SAFETY: a signal to the child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let stopped = std::time::Instant::now();
    // The deadline's clock starts before the guest runs, so after the
    // start line was read; a stop within 800 ms of that is before it.
    if stopped.duration_since(started) > std::time::Duration::from_millis(800) {
        // SAFETY: as above; `waitpid` reaps the child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return None;
    }
    // The pipe filled through a writer of its own (not the child's, which
    // must block), so the summary waits for room in it.
    let mut filler = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", out.get_ref().as_raw_fd()))
        .unwrap();
    let mut filled = 0;
    for chunk in [4096, 1] {
        while let Ok(n) = filler.write(&vec![b'.'; chunk]) {
            filled += n;
        }
    }
    // Continued 300 ms past the deadline at the least: it began before
    // the stop.
    std::thread::sleep(std::time::Duration::from_millis(1300).saturating_sub(stopped.elapsed()));
    let stopped_at = cpu_ms(pid as u32);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    // Blocked writing to standard output (`write` is system call 1 here).
    let syscall = format!("/proc/{pid}/syscall");
    while !std::fs::read_to_string(&syscall)
        .unwrap()
        .starts_with("1 0x1 ")
    {
        // SAFETY: polls the child this test started; reaps it only if
        // it has ended, and then the test stops here.
        let ended = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(ended, 0, "the run ended without blocking on its summary");
        assert!(started.elapsed().as_secs() < 60, "the summary never came");
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let took = cpu_ms(pid as u32) - stopped_at;
    drop(filler);
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    assert!(rest.len() > filled, "no summary after the filler");
    assert!(String::from_utf8_lossy(&rest).contains("\"outcome\":\"limit\""));
    let mut status = 0;
    // SAFETY: reaps the child this test started.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 4,
        "not stopped by the deadline ({status:#x})"
    );
    Some(took)
}

/// A file-system call cut short with EINTR (as on a FUSE file system that
/// honours interrupts, when the deadline's signal arrives during the call)
/// ends the run as its deadline when it returns past it, not as the fix's
/// failure; before the deadline the fix is handed the error. `strace`
/// makes the one `openat` of the file fail so, delayed past the deadline
/// or not.
#[test]
fn an_fs_call_interrupted_past_the_deadline_ends_the_run_at_its_deadline() {
    if !crate::util::strace_can_trace() {
        eprintln!("skipped: no strace that can trace here, to inject the failure");
        return;
    }
    // A 3 s deadline: the call fails 4 s in, or at once.
    for (delay_us, code, outcome) in [(4_000_000, 4, "limit"), (0, 1, "failed")] {
        let t = Tree::new();
        t.write("grant/target.txt", "hello\n");
        let inject = format!("inject=openat:error=EINTR:delay_enter={delay_us}");
        let out = t
            .defops_under(&[
                "strace",
                "-f",
                "--seccomp-bpf",
                "-o",
                "/dev/null",
                "-P",
                "target.txt",
                "-e",
                "trace=openat",
                "-e",
                &inject,
            ])
            .args(&[
                "run",
                guest("fsops").to_str().unwrap(),
                "--allow",
                &t.p("grant"),
            ])
            .args(&["--dry-run", "--json", "--timeout", "3s"])
            .args(&["-p", &format!("ops=read {}", t.p("grant/target.txt"))])
            .output();
        out.assert_code(code);
        let s = out.summary();
        assert_eq!(s["outcome"], outcome, "{s}");
        let error = s["error"].as_str().unwrap();
        match code {
            4 => assert!(error.contains("deadline of 3s"), "{error}"),
            _ => assert!(error.contains("Interrupted system call"), "{error}"),
        }
    }
}

#[test]
fn a_memory_bomb_hits_the_memory_cap() {
    let t = Tree::new();
    assert_limit(
        &hostile(&t, "membomb", &["--max-memory", "64MiB"]),
        "more than 64 MiB of memory",
    );
}

#[test]
fn a_chatty_guest_hits_the_output_cap() {
    let t = Tree::new();
    assert_limit(
        &hostile(&t, "chatty", &["--max-output", "64KiB"]),
        "more than 64 KiB of output",
    );
}

#[test]
fn deep_recursion_is_a_stack_limit() {
    let t = Tree::new();
    assert_limit(&hostile(&t, "recurse", &[]), "recursed too deeply");
}

#[test]
fn a_panic_is_a_crash_with_its_message() {
    let t = Tree::new();
    let out = hostile(&t, "panic", &[]);
    out.assert_code(1);
    assert_eq!(out.summary()["outcome"], "crashed");
    let output = out.of("output");
    assert!(
        output[0]["text"]
            .as_str()
            .unwrap()
            .contains("panics on purpose")
    );
}

#[test]
fn calling_exit_is_a_crash() {
    let t = Tree::new();
    let out = hostile(&t, "exit", &[]);
    out.assert_code(1);
    assert!(
        out.summary()["error"]
            .as_str()
            .unwrap()
            .contains("called exit")
    );
}

#[test]
fn std_fs_finds_nothing_and_touches_nothing() {
    let t = Tree::new();
    let before = t.snapshot("");
    let out = hostile(&t, "stdfs", &[]);
    out.assert_code(0);
    assert_eq!(
        out.summary()["result"],
        "read: Err(NotFound); write: Err(NotFound); list: Err(NotFound)"
    );
    assert!(!std::path::Path::new("/tmp/defops-stdfs-probe").exists());
    assert_eq!(t.snapshot(""), before);
}

#[test]
fn a_million_host_calls_complete() {
    let t = Tree::new();
    let out = hostile(&t, "many-calls", &[]);
    out.assert_code(0);
    assert_eq!(out.summary()["result"], "1000000 calls, dry-run 0 times");
}

#[test]
fn a_fix_that_fails_after_writing_commits_nothing() {
    let t = Tree::new();
    t.write("grant/f", "original\n");
    let before = t.snapshot("");
    let out = hostile(
        &t,
        "fail-after-write",
        &["-p", &format!("file={}", t.p("grant/f"))],
    );
    out.assert_code(1);
    assert_eq!(out.summary()["outcome"], "failed");
    assert_eq!(t.snapshot(""), before);
}

#[test]
fn a_guest_importing_sockets_is_refused_naming_every_import() {
    let t = Tree::new();
    let out = t.run(&guest("sockets"), &[]);
    out.assert_code(3);
    let err = out.summary()["error"].as_str().unwrap().to_string();
    for import in [
        "wasi:sockets/tcp@",
        "wasi:sockets/udp@",
        "wasi:sockets/ip-name-lookup@",
    ] {
        assert!(err.contains(import), "{err}");
    }
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
}

#[test]
fn a_corrupt_file_and_a_core_module_are_refused_clearly() {
    let t = Tree::new();
    let cases = [
        (
            "text.wasm",
            b"not wasm at all".to_vec(),
            "is not a WebAssembly file",
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0".to_vec(),
            "is a core WebAssembly module, not a component",
        ),
        (
            "torn.wasm",
            b"\0asm\x0d\0\x01\0\x01\xff\xff".to_vec(),
            "is not a valid component",
        ),
        ("missing.wasm", Vec::new(), "cannot read"),
    ];
    for (name, bytes, message) in cases {
        let path = t.path(&format!("state/../{name}"));
        if !bytes.is_empty() {
            std::fs::write(&path, bytes).unwrap();
        }
        let out = t.run(&path, &[]);
        out.assert_code(2);
        assert!(out.stderr.contains(message), "{name}: {}", out.stderr);
        assert_eq!(
            out.stderr.lines().count(),
            1,
            "{name}: one line: {}",
            out.stderr
        );
    }
}

#[test]
fn a_file_changed_under_the_plan_is_refused_at_commit() {
    let t = Tree::new();
    t.write("grant/f", "original\n");
    let (mut child, lines) = t.start_waiting_run();
    // Someone edits the file after the fix planned its write.
    t.write("grant/f", "edited by someone else\n");
    t.write("grant/go", "");
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{rest:?}");
    let summary: serde_json::Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(summary["outcome"], "refused");
    let err = summary["error"].as_str().unwrap();
    assert!(
        err.contains("changed since the plan was made (content)"),
        "{err}"
    );
    assert_eq!(t.read("grant/f"), "edited by someone else\n");
}

#[test]
fn a_state_directory_inside_a_grant_is_refused() {
    let t = Tree::new();
    let before = t.snapshot("grant");
    let out = t
        .defops()
        .args(&[
            "run",
            guest("hostile").to_str().unwrap(),
            "--allow",
            &t.p("grant"),
            "--state-dir",
            &t.p("grant/state"),
            "-p",
            "mode=stdfs",
        ])
        .output();
    out.assert_code(2);
    out.assert_stderr("overlaps the granted directory");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert_eq!(
        t.snapshot("grant"),
        before,
        "the refused state directory was created"
    );
}

#[test]
fn the_compile_cache_is_used_and_refused_when_others_can_write_it() {
    use std::os::unix::fs::PermissionsExt;
    let t = Tree::new();
    let cache = |out: &Out| {
        out.summary_of("start")["compile_cache"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The fix's SHA-256 (its fix_id) is kept in the cache; whether it is
    // computed or read from there, it is the file's.
    let fix = guest("hostile");
    let sha = defops_host::digest::Alg::Sha256.hex(&std::fs::read(&fix).unwrap());
    let fix_id = |out: &Out| {
        out.summary_of("start")["fix_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let want = defops_host::digest::fix_id_of(&sha);
    let out = hostile(&t, "stdfs", &[]);
    assert_eq!((cache(&out), fix_id(&out)), ("miss".into(), want.clone()));
    let out = hostile(&t, "stdfs", &[]);
    assert_eq!((cache(&out), fix_id(&out)), ("hit".into(), want.clone()));
    let memos: Vec<_> = std::fs::read_dir(t.path("state/cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sha256"))
        .collect();
    assert_eq!(memos.len(), 1, "{memos:?}");
    assert_eq!(std::fs::read_to_string(&memos[0]).unwrap(), sha);
    // A memo that is not a SHA-256 in lowercase hex is not believed, and
    // one that is not a regular file does not hold the run up.
    for bad in ["not a digest", &sha.to_uppercase(), &format!("{sha}\n")] {
        std::fs::write(&memos[0], bad).unwrap();
        assert_eq!(fix_id(&hostile(&t, "stdfs", &[])), want, "{bad:?}");
    }
    std::fs::remove_file(&memos[0]).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &memos[0],
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    assert_eq!(fix_id(&hostile(&t, "stdfs", &[])), want);
    std::fs::remove_file(&memos[0]).unwrap();
    assert_eq!(fix_id(&hostile(&t, "stdfs", &[])), want);
    // A cache directory others could write, or another user's, is never
    // loaded from, the memo included, and never written to: what is there
    // stays as it is.
    std::fs::write(&memos[0], "0".repeat(64)).unwrap();
    // A temp file a dead run left is not swept from there either.
    std::fs::File::create(t.path("state/cache/.tmp-4242-1f-0"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        .unwrap();
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(t.path("state/cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    std::fs::set_permissions(
        t.path("state/cache"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let out = hostile(&t, "stdfs", &[]);
    assert_eq!((cache(&out), fix_id(&out)), ("miss".into(), want.clone()));
    std::fs::set_permissions(
        t.path("state/cache"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::chown(t.path("state/cache"), Some(65534), Some(65534)).unwrap();
    let out = hostile(&t, "stdfs", &[]);
    assert_eq!((cache(&out), fix_id(&out)), ("miss".into(), want));
    assert_eq!(
        listing(),
        before,
        "the run wrote into a cache it does not trust"
    );
    assert_eq!(std::fs::read_to_string(&memos[0]).unwrap(), "0".repeat(64));
}

#[test]
fn writing_the_compile_cache_removes_temp_files_a_dead_run_left() {
    let t = Tree::new();
    hostile(&t, "stdfs", &[]);
    let dir = t.path("state/cache");
    let hours_ago = |name: &str, hours: u64| {
        let p = dir.join(name);
        let f = std::fs::File::create(&p).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(hours * 3600))
            .unwrap();
        p
    };
    let dead = hours_ago(".tmp-4242-1f-0", 2);
    let writing = hours_ago(".tmp-4243-2e-0", 0);
    let other = hours_ago("notes.txt", 2);
    let old_dir = dir.join(".tmp-a-directory");
    std::fs::create_dir(&old_dir).unwrap();
    // A link is not a temp file of ours, whatever it names.
    let outside = t.path("outside-old");
    std::fs::File::create(&outside)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        .unwrap();
    let link = dir.join(".tmp-4244-3d-0");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    // Nor is a second name of a file elsewhere.
    let hard = dir.join(".tmp-4245-4c-0");
    std::fs::hard_link(&outside, &hard).unwrap();
    // A warm run writes nothing, so it sweeps nothing.
    hostile(&t, "stdfs", &[]);
    assert!(dead.exists());
    // A run that writes the cache (its compiled fix is gone) removes only
    // old temp files.
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "cwasm") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let out = hostile(&t, "stdfs", &[]);
    assert_eq!(out.summary_of("start")["compile_cache"], "miss");
    assert!(!dead.exists(), "a temp file 2 hours old stayed");
    assert!(writing.exists() && other.exists() && old_dir.exists());
    assert!(link.symlink_metadata().is_ok() && outside.exists() && hard.exists());
}

#[test]
fn a_4_gib_allocation_hits_the_memory_cap() {
    let t = Tree::new();
    let before = t.snapshot("");
    let out = hostile(&t, "alloc4g", &[]);
    assert_limit(&out, "memory");
    assert_eq!(t.snapshot(""), before);
}

#[test]
fn a_trap_in_check_is_a_crash_in_check() {
    let t = Tree::new();
    let before = t.snapshot("");
    let out = hostile(&t, "check-panic", &[]);
    out.assert_code(1);
    let s = out.summary();
    assert_eq!(s["outcome"], "crashed");
    assert_eq!(s["phase"], "check");
    assert!(
        out.stdout.contains("panics in check on purpose"),
        "{}",
        out.stdout
    );
    assert_eq!(t.snapshot(""), before);
}
