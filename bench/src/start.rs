//! Start: `run --dry-run` of config-set on one file, warm and cold (an
//! empty compile cache), against a bash script doing the same check and
//! diff; where a warm start's time goes (its phases); the peak RSS of a
//! small fix. Alone: `defops-bench start`.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::{BASH_CHECK, CONF, Env, defops, fresh_dir, median, ms, peak_rss, run_ok};

pub fn run(env: &Env, config_set: &Path, reps: usize, line: &mut dyn FnMut(String)) {
    let one = env.work.join("one");
    fresh_dir(&one);
    let conf = one.join("app.conf");
    fs::write(&conf, CONF).unwrap();
    let warm_state = env.work.join("state-warm");
    let script = env.work.join("check.sh");
    fs::write(&script, BASH_CHECK).unwrap();
    let dry = |state: &Path| {
        let mut c = defops(env, state);
        c.args([
            "run",
            config_set.to_str().unwrap(),
            "--allow",
            one.to_str().unwrap(),
            "--dry-run",
        ])
        .args([
            "-p",
            &format!("file={}", conf.display()),
            "-p",
            "key=max_conn",
            "-p",
            "value=50",
        ]);
        c
    };
    run_ok(&mut dry(&warm_state));
    let (mut warm, mut bash) = (Vec::new(), Vec::new());
    // Each warm start against the bash run right after it. The cold starts
    // come after them all: each removes its state directory, and on ext4
    // without a journal the files made next scan past every inode freed
    // in the seconds before (`recently_deleted`), which cost the warm run
    // right after a cold one 0.3-0.5 ms in its journal and record.
    let mut pairs = Vec::new();
    for _ in 0..reps.max(5) * 4 {
        let w = run_ok(&mut dry(&warm_state));
        let b = run_ok(Command::new("bash").arg(&script).arg(&conf));
        warm.push(w);
        bash.push(b);
        pairs.push(w.as_secs_f64() / b.as_secs_f64());
    }
    pairs.sort_by(f64::total_cmp);
    let worst = pairs[pairs.len() * 9 / 10];
    let (warm, bash) = (median(warm), median(bash));
    // Where a warm start's time goes: the phases it reports (-vv), the
    // median of each over ten runs, and what is outside them (the process
    // itself: exec, the dynamic loader, exit).
    let mut phases: Vec<(String, Vec<f64>)> = Vec::new();
    let mut outside = Vec::new();
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let out = dry(&warm_state).arg("--json").output().unwrap();
        let wall = started.elapsed().as_secs_f64() * 1e3;
        let timings = crate::last_json_line(&out.stdout)["timings_ms"].clone();
        let Some(t) = timings.as_object() else {
            continue;
        };
        for (k, v) in t {
            // `load` (the phases up to `load fix`) and `run` are kept for
            // older readers; `total` is the sum.
            if ["load", "run", "total"].contains(&k.as_str()) {
                continue;
            }
            let v = v.as_f64().unwrap_or(0.0);
            match phases.iter_mut().find(|(n, _)| n == k) {
                Some((_, vs)) => vs.push(v),
                None => phases.push((k.clone(), vec![v])),
            }
        }
        outside.push(wall - t.get("total").and_then(|v| v.as_f64()).unwrap_or(0.0));
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut shown: Vec<(String, f64)> = phases
        .iter_mut()
        .map(|(n, v)| (n.clone(), med(v)))
        .collect();
    shown.push(("process (exec, loader, exit)".into(), med(&mut outside)));
    let largest = shown
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(n, _)| n.clone())
        .unwrap_or_default();
    let mut cold = Vec::new();
    for i in 0..reps.max(5) * 2 {
        let cold_state = env.work.join(format!("state-cold-{i}"));
        cold.push(run_ok(&mut dry(&cold_state)));
        let _ = fs::remove_dir_all(&cold_state);
    }
    let cold = median(cold);
    let ratio = warm.as_secs_f64() / bash.as_secs_f64();
    line(format!(
        "| start, warm (`run --dry-run` config-set, 1 file) | {} | bash grep+sed+diff {} | {ratio:.2}x (9 in 10 pairs under {worst:.2}x) | at most 0.7x bash in 9 of 10 pairs: {} |",
        ms(warm),
        ms(bash),
        if worst <= 0.7 { "met" } else { "MISSED" }
    ));
    line(format!(
        "| start, warm: where the time goes (medians, ms) | {} | | | largest: {largest} |",
        shown
            .iter()
            .map(|(n, v)| format!("{n} {v:.2}"))
            .collect::<Vec<_>>()
            .join(" · ")
    ));
    // What a process pays here before it does anything (exec, the loader,
    // the C library's start): this binary doing nothing, against an empty
    // program. The bash script starts four processes (bash, grep, sed,
    // diff); a run starts one.
    let (mut version, mut empty) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        version.push(run_ok(Command::new(&env.bin).arg("--version")));
        empty.push(run_ok(&mut Command::new("true")));
    }
    let (version, empty) = (median(version), median(empty));
    line(format!(
        "| start: a process that does nothing (`defops-wasm --version`) | {} | `true` {} | {:.2}x | (reported) |",
        ms(version),
        ms(empty),
        version.as_secs_f64() / empty.as_secs_f64()
    ));
    if Command::new("wasmtime").arg("--version").output().is_err() {
        line(
            "| start: `wasmtime run` of a trivial component | | | | not measured: no wasmtime CLI on this machine |"
                .into(),
        );
    }
    line(format!(
        "| start, cold (empty compile cache) | {} | bash {} | {:.2}x | (reported) |",
        ms(cold),
        ms(bash),
        cold.as_secs_f64() / bash.as_secs_f64()
    ));

    // The peak RSS of a small fix.
    let rss = peak_rss(&[
        env.bin.display().to_string(),
        "run".into(),
        config_set.display().to_string(),
        "--allow".into(),
        one.display().to_string(),
        "--dry-run".into(),
        "-p".into(),
        format!("file={}", conf.display()),
        "-p".into(),
        "key=max_conn".into(),
        "-p".into(),
        "value=50".into(),
        "--state-dir".into(),
        warm_state.display().to_string(),
    ]);
    line(format!(
        "| peak RSS, small fix (warm dry-run) | {:.1} MiB | | | under 64 MiB: {} |",
        rss as f64 / 1024.0,
        if rss < 64 * 1024 { "met" } else { "MISSED" }
    ));
}
