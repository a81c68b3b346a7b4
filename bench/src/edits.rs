//! Edits: one journaled run of config-set over N config files, against a
//! bash loop with `cp` backups and `sed -i` and against the native floor
//! (the same atomic replaces in Rust, one sync at the end: no sandbox, no
//! journal); the rollback of that run; `report` against `journal show
//! --json`; `journal verify`; the same run and rollback with
//! `keep-replaced` (reported). Every tree is on disk (synced) before a case
//! starts, as a real one would be. Alone: `defops-bench edits`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{
    BASH_EDIT, CONF, Env, defops, fresh_dir, last_json_line, make_tree, median, ms, native_edit,
    run_ok, secs, with_rss,
};

pub fn run(env: &Env, config_set: &Path, reps: usize, files: usize, line: &mut dyn FnMut(String)) {
    let tree = env.work.join("tree");
    let edit_script = env.work.join("edit.sh");
    fs::write(&edit_script, BASH_EDIT).unwrap();
    let (mut ours, mut theirs, mut floor, mut back) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut verify_rate = Vec::new();
    let (mut report_times, mut show_times) = (Vec::new(), Vec::new());
    let mut syncs = 0;
    let keep_config = env.work.join("keep.toml");
    fs::write(
        &keep_config,
        "[dry-run-first]\nrequired = false\n[rollback]\nkeep-replaced = true\n",
    )
    .unwrap();
    let (mut keep_runs, mut keep_backs) = (Vec::new(), Vec::new());
    let (mut run_rss, mut back_rss) = (0u64, 0u64);
    for rep in 0..reps {
        make_tree(&tree, files);
        let state = env.work.join(format!("state-edit-{rep}"));
        let (took, rss, out) = journaled_run(env, config_set, &tree, &state, None);
        ours.push(took);
        run_rss = run_rss.max(rss);
        let summary = last_json_line(&out.stdout);
        assert_eq!(
            summary["outcome"],
            "applied",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(summary["changed"].as_u64(), Some(files as u64));
        syncs = summary["syncs"].as_u64().unwrap_or(0);
        let run_id = summary["run_id"].as_str().unwrap().to_string();
        let journal = PathBuf::from(summary["journal"].as_str().unwrap());

        let bytes = fs::metadata(&journal).unwrap().len();
        // A short command: the median of ten.
        let took = median(
            (0..10)
                .map(|_| {
                    run_ok(defops(env, &state).args([
                        "journal",
                        "verify",
                        journal.to_str().unwrap(),
                    ]))
                })
                .collect(),
        );
        verify_rate.push((bytes, took));
        report_times.push(run_ok(
            defops(env, &state).args(["report", &run_id, "--format", "markdown"]),
        ));
        show_times.push(run_ok(
            defops(env, &state).args(["journal", "show", &run_id, "--json"]),
        ));

        let mut rollback_cmd = defops(env, &state);
        rollback_cmd.args(["rollback", &run_id]);
        let (took, rss, out) = with_rss(&rollback_cmd);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        back.push(took);
        back_rss = back_rss.max(rss);
        assert_eq!(
            fs::read_to_string(tree.join("site00000.conf")).unwrap(),
            CONF
        );

        make_tree(&tree, files);
        theirs.push(run_ok(Command::new("bash").arg(&edit_script).arg(&tree)));
        make_tree(&tree, files);
        floor.push(native_edit(&tree));
        let _ = fs::remove_dir_all(&state);

        // The same run and its rollback with `keep-replaced` (reported).
        make_tree(&tree, files);
        let state = env.work.join(format!("state-keep-{rep}"));
        let (took, _, out) = journaled_run(env, config_set, &tree, &state, Some(&keep_config));
        let run_id = last_json_line(&out.stdout)["run_id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut rollback_cmd = defops(env, &state);
        rollback_cmd
            .env("DEFOPS_CONFIG", &keep_config)
            .args(["rollback", &run_id]);
        let (back_took, _, out) = with_rss(&rollback_cmd);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        keep_runs.push(took);
        keep_backs.push(back_took);
        let _ = fs::remove_dir_all(&state);
    }
    let (ours, theirs, floor, back) = (median(ours), median(theirs), median(floor), median(back));
    line(format!(
        "| {files} journaled edits (one run) | {} ({syncs} syncs, peak {:.0} MiB) | bash cp+sed -i loop {} | {:.2}x | at most bash (<= 1x): {} |",
        secs(ours),
        run_rss as f64 / 1024.0,
        secs(theirs),
        ours.as_secs_f64() / theirs.as_secs_f64(),
        if ours <= theirs { "met" } else { "MISSED" }
    ));
    line(format!(
        "| same, against the native floor | {} | Rust atomic replace, 1 sync {} | {:.2}x | at most 1.5x: {} |",
        secs(ours),
        secs(floor),
        ours.as_secs_f64() / floor.as_secs_f64(),
        if ours.as_secs_f64() <= 1.5 * floor.as_secs_f64() {
            "met"
        } else {
            "MISSED"
        }
    ));
    line(format!(
        "| rollback of those {files} edits | {} (peak {:.0} MiB) | the run {} | {:.2}x | at most 0.8x the run: {} |",
        secs(back),
        back_rss as f64 / 1024.0,
        secs(ours),
        back.as_secs_f64() / ours.as_secs_f64(),
        if back.as_secs_f64() <= 0.8 * ours.as_secs_f64() {
            "met"
        } else {
            "MISSED"
        }
    ));
    // Why the rollback is not far below the run: restoring a file is the
    // same atomic replace as changing it, so both sit at about the same
    // fraction of the floor, and what is left between them is the work
    // around the changes.
    line(format!(
        "| rollback, against the native floor | {} | Rust atomic replace, 1 sync {} | {:.2}x | (reported; the run: {:.2}x) |",
        secs(back),
        secs(floor),
        back.as_secs_f64() / floor.as_secs_f64(),
        ours.as_secs_f64() / floor.as_secs_f64(),
    ));
    let (keep_run, keep_back) = (median(keep_runs), median(keep_backs));
    line(format!(
        "| the run with `keep-replaced` (the files it replaces kept for the rollback) | {} | the run without {} | {:.2}x | (reported) |",
        secs(keep_run),
        secs(ours),
        keep_run.as_secs_f64() / ours.as_secs_f64(),
    ));
    line(format!(
        "| its rollback (the kept files renamed back) | {} | its run {} | {:.2}x | (reported; at most 0.8x the run: {}) |",
        secs(keep_back),
        secs(keep_run),
        keep_back.as_secs_f64() / keep_run.as_secs_f64(),
        if keep_back.as_secs_f64() <= 0.8 * keep_run.as_secs_f64() {
            "met"
        } else {
            "MISSED"
        }
    ));
    let (bytes, took) = verify_rate[verify_rate.len() / 2];
    let mbps = bytes as f64 / 1e6 / took.as_secs_f64();
    line(format!(
        "| `journal verify` ({:.1} MB journal, whole process) | {mbps:.0} MB/s ({}) | | | at least 1 GB/s: {} |",
        bytes as f64 / 1e6,
        ms(took),
        if mbps >= 1000.0 { "met" } else { "MISSED" }
    ));

    let (report_t, show_t) = (median(report_times), median(show_times));
    line(format!(
        "| `report` of the {files}-effect run (Markdown) | {} | `journal show --json` {} | {:.2}x | at most 2x: {} |",
        secs(report_t),
        secs(show_t),
        report_t.as_secs_f64() / show_t.as_secs_f64(),
        if report_t.as_secs_f64() <= 2.0 * show_t.as_secs_f64() {
            "met"
        } else {
            "MISSED"
        }
    ));
}

/// A journaled run of config-set over every file of `tree`, its compile
/// cache warmed first (as an operator's second run would find it), with the
/// state directory `state` made afresh and, when given, a configuration.
fn journaled_run(
    env: &Env,
    config_set: &Path,
    tree: &Path,
    state: &Path,
    config: Option<&Path>,
) -> (std::time::Duration, u64, std::process::Output) {
    fresh_dir(state);
    let _ = defops(env, state)
        .args([
            "run",
            config_set.to_str().unwrap(),
            "--allow",
            tree.to_str().unwrap(),
            "--dry-run",
            "-p",
            "file=/nonexistent",
            "-p",
            "key=a",
            "-p",
            "value=b",
        ])
        .output();
    let mut run_cmd = defops(env, state);
    if let Some(c) = config {
        run_cmd.env("DEFOPS_CONFIG", c);
    }
    run_cmd
        .args([
            "run",
            config_set.to_str().unwrap(),
            "--allow",
            tree.to_str().unwrap(),
            "--json",
        ])
        .args([
            "-p",
            &format!("file={}/*.conf", tree.display()),
            "-p",
            "key=max_conn",
            "-p",
            "value=50",
        ])
        .args([
            "--timeout",
            "10m",
            "--max-memory",
            "1GiB",
            "--max-output",
            "64MiB",
        ]);
    with_rss(&run_cmd)
}
