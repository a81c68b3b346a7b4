//! Fuzz targets, each with its oracle. `fuzz/` runs them under libFuzzer
//! (`cargo +nightly fuzz run journal`); the normal test suite runs them
//! over seeded random mutations of a small corpus ([`mutate`]).
//!
//! - [`journal`]: line checks and file verification never panic; a journal
//!   called intact loads with `seq` 0, 1, 2, ... and each `prev` the hash
//!   before it.
//! - [`manifest`]: parsing never panics; an accepted manifest resolves only
//!   to clean absolute paths; embedding round-trips.
//! - [`resolve`]: whatever the path, reads through the overlay never reach
//!   outside the grant (the canary outside is never read or listed), and
//!   every planned effect lies inside the grant.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::digest::Alg;
use crate::grants::{Access, Grants, VPath};
use crate::journal::{self, GENESIS, Verdict};
use crate::manifest::{self, Manifest};
use crate::overlay::{Overlay, OverlayLimits};

/// The journal target.
pub fn journal(data: &[u8]) {
    let mut prev = GENESIS.to_string();
    for (seq, line) in data.split(|b| *b == b'\n').enumerate() {
        for alg in [Alg::Blake3, Alg::Sha256] {
            if let Ok(h) = journal::check_line(line, seq as u64, &prev, alg)
                && alg == Alg::Blake3
            {
                prev = h;
            }
        }
    }
    let dir = scratch();
    let path = dir.join(format!("j-{:?}.jsonl", std::thread::current().id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(loaded) = journal::load(&path, None)
        && let Verdict::Intact { records, head } = &loaded.verdict
    {
        assert_eq!(*records as usize, loaded.records.len());
        let mut prev = GENESIS.to_string();
        for (i, r) in loaded.records.iter().enumerate() {
            assert_eq!(
                r["seq"].as_u64(),
                Some(i as u64),
                "seq of an intact journal"
            );
            assert_eq!(
                r["prev"].as_str(),
                Some(prev.as_str()),
                "prev of an intact journal"
            );
            prev = r["hash"].as_str().unwrap_or_default().to_string();
        }
        assert_eq!(&prev, head);
    }
    let _ = std::fs::remove_file(&path);
}

/// The manifest target.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Manifest::parse(text) {
        let params: BTreeMap<String, String> = m
            .params
            .iter()
            .map(|p| (p.name.clone(), format!("/srv/{}/x", p.name)))
            .collect();
        let r = m.resolve(&params);
        for (_, p) in r.read_write.iter().chain(&r.read_only).chain(&r.logs) {
            if let Ok(p) = p {
                assert!(p.starts_with('/'), "resolved to a relative path: {p:?}");
                assert!(
                    !p.split('/').any(|c| c == ".." || c == "."),
                    "resolved with a dot component: {p:?}"
                );
            }
        }
    }
    let bare = b"\0asm\x0d\x00\x01\x00";
    let with = manifest::embed(bare, text).expect("embeds into a component");
    assert_eq!(manifest::embedded(&with), Some(Ok(text.to_string())));
    let _ = manifest::embedded(data);
}

/// A scratch directory for this process.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("defops-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d
    })
}

const CANARY: &[u8] = b"OUTSIDE-CANARY";

/// The tree the resolution target works on: `grant/` with files, dirs and
/// symlinks of every sort (inside, outside, absolute, relative, loops,
/// `/proc/self/root`), and `outside/` holding the canary.
fn tree() -> &'static (PathBuf, Arc<Grants>) {
    static TREE: OnceLock<(PathBuf, Arc<Grants>)> = OnceLock::new();
    TREE.get_or_init(|| {
        let root = scratch().join("tree");
        let _ = std::fs::remove_dir_all(&root);
        let g = root.join("grant");
        let o = root.join("outside");
        for d in [g.join("a/b"), g.join("c"), o.join("dir")] {
            std::fs::create_dir_all(d).expect("scratch tree");
        }
        std::fs::write(g.join("a/file"), b"inside").expect("scratch tree");
        std::fs::write(g.join("c/x"), b"inside too").expect("scratch tree");
        std::fs::write(o.join("canary"), CANARY).expect("scratch tree");
        std::fs::write(o.join("dir/canary"), CANARY).expect("scratch tree");
        let links: [(&str, String); 9] = [
            ("up", "..".into()),
            ("out", o.display().to_string()),
            ("outrel", "../outside".into()),
            ("in", "a".into()),
            ("inabs", g.join("c").display().to_string()),
            ("loop", "loop".into()),
            ("proc", "/proc/self/root".into()),
            ("fd", "/proc/self/fd".into()),
            ("a/b/deep", "../../../outside/dir".into()),
        ];
        for (name, target) in links {
            let _ = std::os::unix::fs::symlink(target, g.join(name));
        }
        let grants = Grants::open(&[(g, Access::ReadWrite)]).expect("the grant opens");
        (root, Arc::new(grants))
    })
}

/// The resolution target: each line of `data` is a path (relative ones are
/// taken under the grant), tried with every read and a few mutations.
pub fn resolve(data: &[u8]) {
    let (root, grants) = tree();
    let grant = root.join("grant");
    let mut overlay = Overlay::new(
        grants.clone(),
        OverlayLimits {
            max_read: 1 << 20,
            max_plan_bytes: 1 << 20,
        },
    );
    let outside_names = ["canary", "dir"];
    for raw in data.split(|b| *b == b'\n').take(16) {
        let raw = String::from_utf8_lossy(raw);
        let full = match raw.starts_with('/') {
            true => raw.to_string(),
            false => format!("{}/{raw}", grant.display()),
        };
        let Ok(p) = VPath::parse(&full) else {
            continue;
        };
        if let Ok(content) = overlay.read(&p) {
            assert!(
                !content.windows(CANARY.len()).any(|w| w == CANARY),
                "read the canary outside the grant through {full:?}"
            );
        }
        if let Ok(entries) = overlay.list_dir(&p) {
            let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
            assert!(
                !(names.contains(&outside_names[0]) && names.contains(&outside_names[1])),
                "listed the outside directory through {full:?}"
            );
        }
        let _ = overlay.metadata(&p, true);
        let _ = overlay.metadata(&p, false);
        let _ = overlay.read_link(&p);
        let _ = overlay.write(&p, b"fuzz".to_vec());
        let _ = overlay.create_dir(&p);
        let _ = overlay.symlink("../outside/canary", &p);
        let _ = overlay.remove_file(&p);
    }
    let plan = overlay.into_plan();
    let base = grant.display().to_string();
    for e in &plan.effects {
        for path in e.paths() {
            let s = path.to_string();
            assert!(
                s == base || s.starts_with(&format!("{base}/")),
                "a planned effect outside the grant: {s}"
            );
        }
    }
    let canary = std::fs::read(root.join("outside/canary")).unwrap_or_default();
    assert_eq!(canary, CANARY, "the canary changed");
}

/// A small deterministic generator (xorshift), for the seeded runs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// One random mutation of `input`, with `dictionary` words spliced in: byte
/// flips, insertions, deletions, duplications, truncations.
pub fn mutate(input: &[u8], dictionary: &[&[u8]], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, rng.next_u64() as u8),
            2 if at < v.len() => {
                let end = (at + 1 + rng.below(8)).min(v.len());
                v.drain(at..end);
            }
            3 if !dictionary.is_empty() => {
                let w = dictionary[rng.below(dictionary.len())];
                v.splice(at..at, w.iter().copied());
            }
            4 if at < v.len() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                let chunk = v[at..end].to_vec();
                v.splice(at..at, chunk);
            }
            _ => v.truncate(at),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    //! The short runs of the normal suite: seeded mutations of a small
    //! corpus. `DEFOPS_FUZZ_ITERS` sets how many inputs per target.

    use super::*;
    use serde_json::json;

    fn iterations(default: usize) -> usize {
        std::env::var("DEFOPS_FUZZ_ITERS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    }

    fn run(name: &str, corpus: &[Vec<u8>], dictionary: &[&[u8]], n: usize, target: fn(&[u8])) {
        let mut rng = Rng::new(0x5eed_0000 + name.len() as u64);
        for c in corpus {
            target(c);
        }
        let mut last = corpus[0].clone();
        for i in 0..n {
            let base = if i % 4 == 0 {
                &last
            } else {
                &corpus[rng.below(corpus.len())]
            };
            let input = mutate(base, dictionary, &mut rng);
            target(&input);
            last = input;
        }
        eprintln!("fuzz {name}: {} executions, no failure", n + corpus.len());
    }

    #[test]
    fn journal_short_run() {
        let records = [
            json!({"type": "header", "format": 2, "kind": "run", "run_id": "r", "hash_alg": "blake3"}),
            json!({"type": "message", "level": "info", "text": "a \"quoted\" {seq} \\ text"}),
            json!({"type": "intent", "n": 0, "op": "write", "path": "/a/b", "before": {"kind": "absent"}}),
            json!({"type": "outcome", "outcome": "applied", "changed": 1}),
        ];
        let mut text = String::new();
        let mut prev = GENESIS.to_string();
        for (seq, r) in records.iter().enumerate() {
            let mut r = r.clone();
            r["seq"] = json!(seq);
            r["prev"] = json!(prev);
            let line = journal::encode(&r);
            prev = line[line.len() - 67..line.len() - 3].to_string();
            text.push_str(&line);
        }
        let corpus = vec![
            text.clone().into_bytes(),
            text.as_bytes()[..text.len() - 10].to_vec(),
        ];
        let dict: [&[u8]; 8] = [
            b"\n",
            b"\"seq\":",
            b"\"prev\":\"",
            b",\"hash\":\"",
            b"\"}",
            b"{",
            b"\\\"",
            b"\"format\":99",
        ];
        run("journal", &corpus, &dict, iterations(3_000), journal);
    }

    #[test]
    fn manifest_short_run() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/manifests");
        let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        corpus.push(
            b"name = \"x\"\nversion = \"1.0.0\"\ndescription = \"d\"\nread-write = [\"${f:dir}\"]\nlogs = [\"/var/log/*.log\"]\n[[param]]\nname = \"f\"\ndescription = \"f\"\nrequired = true\n"
                .to_vec(),
        );
        let dict: [&[u8]; 9] = [
            b"${f}",
            b"${f:dir}",
            b"..",
            b"/",
            b"\"",
            b"[[param]]\n",
            b"= ",
            b"\n",
            b"*",
        ];
        run("manifest", &corpus, &dict, iterations(20_000), manifest);
    }

    #[test]
    fn resolve_short_run() {
        let corpus: Vec<Vec<u8>> = [
            "a/file",
            "up/outside/canary",
            "out/canary\nout",
            "outrel/dir/canary",
            "in/b/../file",
            "loop/x",
            "proc/etc/passwd",
            "fd/0",
            "a/b/deep/canary",
            "inabs/x",
            "/etc/passwd",
            "a//file",
            "a/./file",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let dict: [&[u8]; 10] = [
            b"/", b"..", b"out", b"up", b"proc", b"deep", b"canary", b"loop", b"\n", b"\0",
        ];
        run("resolve", &corpus, &dict, iterations(5_000), resolve);
    }
}
