//! The plan the operator reviewed is the plan that runs: a real run that
//! follows a dry-run is held to that dry-run's plan, and `--plan FILE` to
//! exactly a saved one.

use defops_host::fuzzing::Rng;
use serde_json::{Value, json};

use crate::util::{Out, Tree, fix, guest};

fn header_of(t: &Tree, out: &Out) -> Value {
    t.header(out.summary()["run_id"].as_str().unwrap())
}

fn config_file(t: &Tree, text: &str) -> String {
    t.write("grant/app.conf", text);
    t.p("grant/app.conf")
}

/// How many runs the state directory holds.
fn runs(t: &Tree) -> usize {
    std::fs::read_dir(t.path("state/runs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[track_caller]
fn assert_difference(out: &Out, change: &str, path: &str) -> Value {
    let diffs = out.of("plan-difference");
    diffs
        .iter()
        .find(|d| d["change"] == change && d["path"] == path)
        .unwrap_or_else(|| panic!("no {change} difference at {path}: {diffs:?}\n{out:?}"))
        .clone()
}

#[test]
fn a_tree_changed_since_the_dry_run_refuses_the_real_run_and_names_the_path() {
    let t = Tree::new();
    let file = config_file(&t, "max_conn = 20\n");
    let strict = t.config("strict.toml", "");
    let dry = t.set_max_conn(&file, "50", &["--config", &strict, "--dry-run"]);
    dry.assert_code(0);
    // Someone edits the file between the review and the real run.
    t.write("grant/app.conf", "max_conn = 30\n");
    let before = t.snapshot("");

    let real = t.set_max_conn(&file, "50", &["--config", &strict]);
    real.assert_code(3)
        .assert_stderr("differs from the plan dry-run")
        .assert_stderr("Dry-run again")
        .assert_stderr("--accept-new-plan --reason");
    let d = assert_difference(&real, "before-changed", &file);
    assert_eq!(d["what"], "content", "{d}");
    assert_eq!(real.summary()["outcome"], "refused");
    assert_eq!(t.snapshot(""), before, "a refused run changed the disk");
    assert_eq!(t.read("grant/app.conf"), "max_conn = 30\n");
    // The refusal is journaled: the header says why, the differences follow.
    let records = t.journal(real.summary()["run_id"].as_str().unwrap());
    let plan = &records[0]["policy"]["plan"];
    assert_eq!(plan["compared"], true);
    assert_eq!(plan["matches"], false);
    assert_eq!(plan["reviewed"]["digest"], dry.summary()["plan_digest"]);
    assert!(records.iter().any(|r| r["type"] == "plan-difference"));
    assert_eq!(records.last().unwrap()["outcome"], "refused");

    // For people: one line naming the path and what changed.
    let fixp = fix("config-set");
    let human = t
        .defops()
        .args(&["run", fixp.to_str().unwrap(), "--allow", &t.p("grant")])
        .args(&["-p", &format!("file={file}"), "-p", "key=max_conn"])
        .args(&["-p", "value=50", "--config", &strict])
        .output();
    human.assert_code(3);
    let line = human
        .stdout
        .lines()
        .find(|l| l.contains("changed before-state"))
        .unwrap_or_else(|| panic!("{}", human.stdout));
    assert!(line.contains(&file) && line.contains("content"), "{line}");
    assert_eq!(t.snapshot(""), before);

    // Reviewing the new plan unlocks it.
    t.set_max_conn(&file, "50", &["--config", &strict, "--dry-run"])
        .assert_code(0);
    t.set_max_conn(&file, "50", &["--config", &strict])
        .assert_code(0);
    assert_eq!(t.read("grant/app.conf"), "max_conn = 50\n");
}

#[test]
fn a_dry_run_that_found_nothing_to_do_does_not_cover_a_run_that_applies() {
    // With dry-run-first required, and off: a dry-run that exists binds.
    for config in ["", "[dry-run-first]\nrequired = false\n"] {
        let t = Tree::new();
        let file = config_file(&t, "max_conn = 50\n");
        let cfg = t.config("c.toml", config);
        let dry = t.set_max_conn(&file, "50", &["--config", &cfg, "--dry-run"]);
        dry.assert_code(0);
        assert_eq!(dry.summary()["outcome"], "not-needed");
        t.write("grant/app.conf", "max_conn = 20\n");
        let before = t.snapshot("");
        let real = t.set_max_conn(&file, "50", &["--config", &cfg]);
        real.assert_code(3);
        assert_difference(&real, "only-new", &file);
        assert_eq!(t.snapshot(""), before, "{config:?}");
    }
}

/// A dry-run whose record cannot be written (here `dry-runs` is a file)
/// says so, naming where the record goes (not the journal), exits 2, and
/// leaves the tree as it was; a real run is then still refused.
#[test]
fn a_dry_run_that_cannot_record_itself_says_where() {
    let t = Tree::new();
    let file = config_file(&t, "max_conn = 20\n");
    std::fs::create_dir_all(t.path("state")).unwrap();
    std::fs::write(t.path("state/dry-runs"), "").unwrap();
    let out = t.set_max_conn(&file, "50", &["--dry-run"]);
    out.assert_code(2);
    let dir = t.path("state/dry-runs").display().to_string();
    assert!(
        out.stderr
            .contains(&format!("cannot record the dry-run in {dir}")),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "max_conn = 20\n");
    t.set_max_conn(&file, "50", &[]).assert_code(3);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "max_conn = 20\n");
}

#[test]
fn a_dry_run_record_that_cannot_be_read_is_not_taken_for_none() {
    // With dry-run-first required, and off: the run refuses, says why and
    // changes nothing (it would otherwise go unbound to the plan the
    // operator reviewed); the override still follows no dry-run.
    for config in ["", "[dry-run-first]\nrequired = false\n"] {
        let t = Tree::new();
        let file = config_file(&t, "max_conn = 20\n");
        let cfg = t.config("c.toml", config);
        t.set_max_conn(&file, "50", &["--config", &cfg, "--dry-run"])
            .assert_code(0);
        let records: Vec<_> = std::fs::read_dir(t.path("state/dry-runs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(records.len(), 1, "{records:?}");
        for damaged in ["", "{\"run_id\": \"20261204T000000Z-abcdef\"", "\0{}", "[]"] {
            std::fs::write(&records[0], damaged).unwrap();
            let before = t.snapshot("");
            let real = t.set_max_conn(&file, "50", &["--config", &cfg]);
            real.assert_code(3)
                .assert_stderr("the record of the last dry-run")
                .assert_stderr("cannot be read");
            assert_eq!(t.snapshot(""), before, "{config:?} {damaged:?}");
        }
        t.set_max_conn(
            &file,
            "50",
            &["--config", &cfg, "--no-dry-run-first", "--reason", "INC-7"],
        )
        .assert_code(0);
        assert_eq!(t.read("grant/app.conf"), "max_conn = 50\n");
    }
}

#[test]
fn accept_new_plan_commits_the_new_plan_and_journals_who_and_why() {
    let t = Tree::new();
    let file = config_file(&t, "max_conn = 20\n");
    let strict = t.config("strict.toml", "");
    t.set_max_conn(&file, "50", &["--config", &strict, "--dry-run"])
        .assert_code(0);
    t.write("grant/app.conf", "max_conn = 30\n");
    // It needs a reason, and it is no dry-run flag.
    t.set_max_conn(&file, "50", &["--config", &strict, "--accept-new-plan"])
        .assert_code(2)
        .assert_stderr("--reason");
    t.set_max_conn(
        &file,
        "50",
        &["--dry-run", "--accept-new-plan", "--reason", "x"],
    )
    .assert_code(2);
    let out = t.set_max_conn(
        &file,
        "50",
        &[
            "--config",
            &strict,
            "--accept-new-plan",
            "--reason",
            "INC-42: changed by hand during the incident",
        ],
    );
    out.assert_code(0);
    assert_eq!(t.read("grant/app.conf"), "max_conn = 50\n");
    assert_difference(&out, "before-changed", &file);
    let h = header_of(&t, &out);
    let plan = &h["policy"]["plan"];
    assert_eq!(plan["matches"], false);
    assert_eq!(
        plan["accept_new_plan"]["reason"],
        "INC-42: changed by hand during the incident"
    );
    assert_eq!(plan["accept_new_plan"]["used"], true);
    assert!(plan["accept_new_plan"]["by"]["uid"].is_u64(), "{plan}");
    // The retrospective and the journal say it too.
    let id = out.summary()["run_id"].as_str().unwrap().to_string();
    let md = t.defops().args(&["report", &id]).output();
    md.assert_code(0);
    assert!(
        md.stdout.contains("difference(s) from the plan of dry-run")
            && md
                .stdout
                .contains("accepted with --accept-new-plan: INC-42"),
        "{}",
        md.stdout
    );
    let facts = t.defops().args(&["report", &id, "--json"]).output();
    let facts = facts.summary_of("report");
    assert_eq!(facts["plan_differences"][0]["path"], file.as_str());
    assert_eq!(facts["plan"]["digest"], out.summary()["plan_digest"]);
    let shown = t.defops().args(&["journal", "show", &id]).output();
    assert!(
        shown.stdout.contains("differs before-changed"),
        "{}",
        shown.stdout
    );
    t.verify_and_roll_back(&id);
    assert_eq!(t.read("grant/app.conf"), "max_conn = 30\n");
}

#[test]
fn an_unchanged_tree_runs_as_reviewed_and_the_header_says_what_was_compared() {
    let t = Tree::new();
    let file = config_file(&t, "max_conn = 20\n");
    let strict = t.config("strict.toml", "");
    let dry = t.set_max_conn(&file, "50", &["--config", &strict, "--dry-run"]);
    dry.assert_code(0);
    let digest = dry.summary()["plan_digest"].clone();
    assert_eq!(digest.as_str().unwrap().len(), 64, "{digest}");
    let dry_records = t.journal(dry.summary()["run_id"].as_str().unwrap());
    let rec = dry_records.iter().find(|r| r["type"] == "plan").unwrap();
    assert_eq!(rec["digest"], digest);

    let real = t.set_max_conn(&file, "50", &["--config", &strict]);
    real.assert_code(0);
    assert_eq!(real.summary()["plan_digest"], digest);
    let plan = &header_of(&t, &real)["policy"]["plan"];
    assert_eq!(plan["compared"], true);
    assert_eq!(plan["matches"], true);
    assert_eq!(plan["planned"], digest);
    assert_eq!(plan["reviewed"]["dry_run"], dry.summary()["run_id"]);

    // Once applied, running it again changes nothing and is not refused.
    let again = t.set_max_conn(&file, "50", &["--config", &strict]);
    again.assert_code(0);
    assert_eq!(again.summary()["outcome"], "not-needed");
    assert_eq!(
        header_of(&t, &again)["policy"]["plan"]["nothing_to_commit"],
        true
    );

    // No dry-run and the rule off, or the rule overridden: nothing to
    // compare, and the record says so.
    let off = t.set_max_conn(&file, "60", &[]);
    off.assert_code(0);
    let plan = &header_of(&t, &off)["policy"]["plan"];
    assert_eq!(plan["compared"], false);
    assert!(
        plan["why"]
            .as_str()
            .unwrap()
            .contains("dry-run first is off"),
        "{plan}"
    );
    let over = t.set_max_conn(
        &file,
        "70",
        &[
            "--config",
            &strict,
            "--no-dry-run-first",
            "--reason",
            "INC-1",
        ],
    );
    over.assert_code(0);
    let plan = &header_of(&t, &over)["policy"]["plan"];
    assert_eq!(plan["compared"], false);
    assert!(
        plan["why"].as_str().unwrap().contains("--no-dry-run-first"),
        "{plan}"
    );
}

/// Dry-runs `config-set` with `--save-plan plan.json` (value 50).
fn save_plan(t: &Tree, strict: &str) -> (String, Out) {
    let file = t.p("grant/app.conf");
    let path = t.p("plan.json");
    let dry = t.set_max_conn(
        &file,
        "50",
        &["--config", strict, "--dry-run", "--save-plan", &path],
    );
    dry.assert_code(0);
    (path, dry)
}

#[test]
fn a_saved_plan_round_trips_and_a_real_run_makes_exactly_it() {
    let t = Tree::new();
    let file = config_file(&t, "max_conn = 20\n");
    let strict = t.config("strict.toml", "");
    let (path, dry) = save_plan(&t, &strict);
    let s = dry.summary();
    assert_eq!(s["plan_saved"], path);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(saved["kind"], "defops-wasm-plan");
    assert_eq!(saved["format"], 1);
    assert_eq!(saved["digest"], s["plan_digest"]);
    assert_eq!(saved["made"]["dry_run"], s["run_id"]);
    let plan = &saved["plan"];
    assert_eq!(plan["made_for"]["fix_digest"], s["digest"]);
    assert_eq!(plan["made_for"]["params"]["value"], "50");
    let e = &plan["effects"][0];
    assert_eq!((&e["op"], &e["path"]), (&json!("write"), &json!(file)));
    assert_eq!(e["before"]["kind"], "file");
    assert_eq!(e["before"]["mode"], "0644");
    assert_eq!(e["after"]["size"], "max_conn = 50\n".len());
    assert_eq!(t.read("grant/app.conf"), "max_conn = 20\n");

    // The saved plan is the dry-run the rule asks for (the index is gone).
    std::fs::remove_dir_all(t.path("state/dry-runs")).unwrap();
    let real = t.set_max_conn(&file, "50", &["--config", &strict, "--plan", &path]);
    real.assert_code(0);
    assert_eq!(t.read("grant/app.conf"), "max_conn = 50\n");
    let h = header_of(&t, &real);
    assert_eq!(h["policy"]["dry_run_first"]["plan_file"], path);
    assert_eq!(h["policy"]["plan"]["reviewed"]["file"], path);
    assert_eq!(h["policy"]["plan"]["matches"], true);

    // Exactly that plan: planning nothing now is refused too.
    let again = t.set_max_conn(&file, "50", &["--config", &strict, "--plan", &path]);
    again
        .assert_code(3)
        .assert_stderr("differs from the saved plan");
    assert_difference(&again, "only-reviewed", &file);
    // And no override, of the plan or of the rule it stands for.
    for flag in ["--accept-new-plan", "--no-dry-run-first"] {
        t.set_max_conn(&file, "50", &["--plan", &path, flag, "--reason", "x"])
            .assert_code(2)
            .assert_stderr("cannot be used with");
    }
}

/// Rewrites a saved plan with `edit` and seals it again with a correct
/// digest (what a plan made elsewhere would look like).
fn resealed(path: &str, edit: impl Fn(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    let plan: defops_host::binding::CanonicalPlan =
        serde_json::from_value(v["plan"].clone()).unwrap();
    v["digest"] = json!(plan.digest().unwrap());
    v.to_string()
}

#[test]
fn a_saved_plan_made_for_something_else_or_edited_is_refused_before_the_fix_runs() {
    let t = Tree::new();
    let file = config_file(&t, "max_conn = 20\n");
    let strict = t.config("strict.toml", "");
    std::fs::create_dir(t.path("grant/sub")).unwrap();
    let (path, _) = save_plan(&t, &strict);
    let original = std::fs::read_to_string(&path).unwrap();
    let bad = t.p("bad.json");
    let before = (t.snapshot("grant"), t.snapshot("outside"));
    let started = runs(&t);

    let mut v: Value = serde_json::from_str(&original).unwrap();
    v["format"] = json!(2);
    let newer = v.to_string();
    let mut v: Value = serde_json::from_str(&original).unwrap();
    v["plan"]["effects"][0]["after"]["mode"] = json!("0666");
    let tampered = v.to_string();
    let other_host = resealed(&path, |v| v["plan"]["made_for"]["host"] = json!("db-7"));
    let other_fix = resealed(&path, |v| {
        v["plan"]["made_for"]["fix_digest"] = json!("0".repeat(64))
    });
    let other_grants = resealed(&path, |v| {
        v["plan"]["made_for"]["grants"][0]["access"] = json!("read-only")
    });
    let other_params = resealed(&path, |v| {
        v["plan"]["made_for"]["params"]["value"] = json!("60")
    });
    for (text, code, needle) in [
        (None, 2, "cannot read the plan"),
        (Some("{ torn"), 2, "is not a saved plan"),
        (Some("{\"kind\": \"something\"}"), 2, "is not a saved plan"),
        (Some(newer.as_str()), 2, "a plan of format 2"),
        (Some(tampered.as_str()), 3, "was changed after it was saved"),
        (Some(other_host.as_str()), 3, "made for the host \"db-7\""),
        (Some(other_fix.as_str()), 3, "made for another fix"),
        (Some(other_grants.as_str()), 3, "made for other grants"),
        (Some(other_params.as_str()), 3, "value: the plan has \"60\""),
    ] {
        let _ = std::fs::remove_file(&bad);
        if let Some(text) = text {
            std::fs::write(&bad, text).unwrap();
        }
        let out = t.set_max_conn(&file, "50", &["--config", &strict, "--plan", &bad]);
        out.assert_code(code).assert_stderr(needle);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
    // The real mismatches: another digest algorithm, other params, other
    // grants, another binary.
    let fips = t.config("fips.toml", "fips = true\nfips-accept-unvalidated = true\n");
    t.set_max_conn(&file, "50", &["--config", &fips, "--plan", &path])
        .assert_code(3)
        .assert_stderr("made for blake3 digests, and this run uses sha256");
    t.set_max_conn(&file, "60", &["--config", &strict, "--plan", &path])
        .assert_code(3)
        .assert_stderr("value: the plan has \"50\", this run \"60\"");
    t.set_max_conn(
        &file,
        "50",
        &[
            "--config",
            &strict,
            "--plan",
            &path,
            "--allow-ro",
            &t.p("grant/sub"),
        ],
    )
    .assert_code(3)
    .assert_stderr("made for other grants");
    let manifest =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixes/config-set/manifest.toml");
    let text = std::fs::read_to_string(manifest)
        .unwrap()
        .replace("version = \"0.1.0\"", "version = \"0.1.1\"");
    t.write("m.toml", &text);
    let copy = t.p("config-set-0.1.1.wasm");
    let config_set = fix("config-set");
    t.defops()
        .args(&["embed", config_set.to_str().unwrap(), &t.p("m.toml")])
        .args(&["-o", &copy])
        .output()
        .assert_code(0);
    let params = ["-p", "key=max_conn", "-p", "value=50", "--config", &strict];
    let file_param = format!("file={file}");
    let mut args = vec!["-p", file_param.as_str(), "--plan", &path];
    args.extend_from_slice(&params);
    t.run(std::path::Path::new(&copy), &args)
        .assert_code(3)
        .assert_stderr("made for another fix");

    assert_eq!((t.snapshot("grant"), t.snapshot("outside")), before);
    assert_eq!(runs(&t), started, "a refused plan let the fix run");
    // The plan itself still holds.
    t.set_max_conn(&file, "50", &["--config", &strict, "--plan", &path])
        .assert_code(0);
}

#[test]
fn a_plan_is_never_saved_inside_a_grant() {
    let t = Tree::new();
    let file = config_file(&t, "max_conn = 20\n");
    t.symlink("../grant", "outside/into-grant");
    let before = t.snapshot("");
    for target in ["grant/plan.json", "outside/into-grant/plan.json"] {
        t.set_max_conn(&file, "50", &["--dry-run", "--save-plan", &t.p(target)])
            .assert_code(2)
            .assert_stderr("inside the granted directory");
    }
    t.set_max_conn(
        &file,
        "50",
        &["--dry-run", "--save-plan", &t.p("nodir/plan.json")],
    )
    .assert_code(2)
    .assert_stderr("--save-plan");
    t.set_max_conn(&file, "50", &["--save-plan", &t.p("plan.json")])
        .assert_code(2);
    assert_eq!(t.snapshot(""), before);
    assert!(!t.exists("plan.json"));
}

/// Random trees and random plans (fsops): the same tree gives the same
/// plan digest; flipping one bit of a file the plan has an effect on
/// changes the digest, and the real run that follows the dry-run is refused
/// naming that file, with nothing changed; flipping a bit of a file outside
/// the plan leaves the digest as it was, and the real run goes ahead.
#[test]
fn a_plan_digest_is_stable_and_every_byte_it_depends_on_counts() {
    let mut rng = Rng::new(0xb1d_1a9);
    let (mut inside, mut outside) = (0, 0);
    for round in 0..16 {
        let t = Tree::new();
        let n = 3 + rng.below(4);
        let mut ops = Vec::new();
        for j in 0..n {
            let content: Vec<u8> = (0..1 + rng.below(40))
                .map(|_| b'a' + rng.below(26) as u8)
                .collect();
            let rel = format!("grant/f{j}");
            std::fs::write(t.path(&rel), &content).unwrap();
            let p = t.p(&rel);
            match rng.below(6) {
                0 => ops.push(format!("write {p} new{}", rng.below(1000))),
                1 => ops.push(format!("rm {p}")),
                2 => ops.push(format!("chmod {p} 600")),
                3 => ops.push(format!("mv {p} {}", t.p(&format!("grant/g{j}")))),
                _ => {}
            }
        }
        let script = format!("ops={}", ops.join(";"));
        let run = |extra: &[&str]| {
            let mut args = vec!["-p", script.as_str()];
            args.extend_from_slice(extra);
            t.run(&guest("fsops"), &args)
        };
        let first = run(&["--dry-run"]);
        first.assert_code(0);
        let digest = first.summary()["plan_digest"].clone();
        let second = run(&["--dry-run"]);
        assert_eq!(second.summary()["plan_digest"], digest, "round {round}");
        let planned: Vec<String> = first
            .of("effect")
            .iter()
            .filter_map(|e| e["path"].as_str().or(e["from"].as_str()).map(String::from))
            .collect();

        let j = rng.below(n);
        let rel = format!("grant/f{j}");
        let mut bytes = std::fs::read(t.path(&rel)).unwrap();
        let at = rng.below(bytes.len());
        bytes[at] ^= 1 << rng.below(7);
        std::fs::write(t.path(&rel), &bytes).unwrap();
        let p = t.p(&rel);
        let before = t.snapshot("");
        if planned.contains(&p) {
            inside += 1;
            let real = run(&[]);
            real.assert_code(3);
            let diffs = real.of("plan-difference");
            assert!(
                diffs.iter().any(|d| d["path"] == p.as_str()),
                "round {round}: the difference does not name {p}: {diffs:?}"
            );
            assert_eq!(t.snapshot(""), before, "round {round}");
            let again = run(&["--dry-run"]);
            assert_ne!(again.summary()["plan_digest"], digest, "round {round}: {p}");
        } else {
            outside += 1;
            let real = run(&[]);
            real.assert_code(0);
            assert_eq!(real.summary()["plan_digest"], digest, "round {round}: {p}");
        }
    }
    assert!(
        inside > 3 && outside > 3,
        "inside {inside}, outside {outside}"
    );
}
