//! Case 8: a Python fix. The warm `run --dry-run` of `fixes/python/
//! config-set.py` against its Rust twin and against the bash script of
//! case 1, interleaved; its first use on an empty compile cache (the
//! runtime compiled once); its peak RSS.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::{BASH_CHECK, CONF, Env, defops, median, ms, run_ok, secs, with_rss};

pub fn run(env: &Env, root: &Path, reps: usize, line: &mut dyn FnMut(String)) {
    let script = root.join("fixes/python/config-set.py");
    let rust = env.fixes.join("config-set.wasm");
    let dir = env.work.join("python");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("app.conf");
    fs::write(&conf, CONF).unwrap();
    let bash = env.work.join("check-python.sh");
    fs::write(&bash, BASH_CHECK).unwrap();
    let warm_state = env.work.join("state-python");
    let dry = |fix: &Path, state: &Path| {
        let mut c = defops(env, state);
        c.args([
            "run",
            fix.to_str().unwrap(),
            "--allow",
            dir.to_str().unwrap(),
        ])
        .args(["--dry-run", "-p", &format!("file={}", conf.display())])
        .args(["-p", "key=max_conn", "-p", "value=50"]);
        c
    };
    // First use: the runtime is compiled into the empty cache.
    let cold = run_ok(&mut dry(&script, &warm_state));
    run_ok(&mut dry(&rust, &warm_state));
    let (mut py, mut rs, mut sh) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps.max(5) * 2 {
        py.push(run_ok(&mut dry(&script, &warm_state)));
        rs.push(run_ok(&mut dry(&rust, &warm_state)));
        sh.push(run_ok(Command::new("bash").arg(&bash).arg(&conf)));
    }
    let (py, rs, sh) = (median(py), median(rs), median(sh));
    let ratio = py.as_secs_f64() / rs.as_secs_f64();
    line(format!(
        "| Python fix, warm (`run config-set.py --dry-run`) | {} | its Rust twin {} | {ratio:.2}x | at most 3x the Rust twin: {} |",
        ms(py),
        ms(rs),
        if ratio <= 3.0 { "met" } else { "MISSED" }
    ));
    line(format!(
        "| Python fix, warm, against bash | {} | bash grep+sed+diff {} | {:.2}x | (reported) |",
        ms(py),
        ms(sh),
        py.as_secs_f64() / sh.as_secs_f64()
    ));
    line(format!(
        "| Python fix, first use (runtime compiled, empty cache) | {} | | | under 30 s: {} |",
        secs(cold),
        if cold.as_secs() < 30 { "met" } else { "MISSED" }
    ));
    let (_, rss, _) = with_rss(&dry(&script, &warm_state));
    line(format!(
        "| peak RSS, Python dry-run | {:.1} MiB | | | under 128 MiB: {} |",
        rss as f64 / 1024.0,
        if rss < 128 * 1024 { "met" } else { "MISSED" }
    ));
}
