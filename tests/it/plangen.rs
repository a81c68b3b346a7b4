//! Generated plans: a seeded generator of random but valid sequences of
//! `fsops` calls over a random starting tree in `grant/`, biased to the
//! hard cases of the way back (a directory renamed and written beneath, a
//! file written then renamed, renames back, chmod after a rename, rmdir of
//! emptied directories, a symlink whose directory is renamed), and a
//! [`Snapshot`] oracle of the real disk. The properties of the way back
//! run over them (`way_back.rs`).
//!
//! `DEFOPS_GEN_SEEDS=N` runs N plans (default 8); `DEFOPS_GEN_SEED=S`
//! starts at seed S (default 1), to replay one.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use defops_host::fuzzing::Rng;

use crate::util::{Out, Tree, guest};

// ---- the oracle -------------------------------------------------------------

/// One path as the disk has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    /// blake3 of a file's content.
    pub content: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i128,
    pub target: Option<String>,
}

/// Every path under a directory (but the state directory), with its kind,
/// content hash, mode, owner, mtime in nanoseconds and symlink target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<String, Entry>);

impl Snapshot {
    pub fn of(t: &Tree) -> Snapshot {
        let mut map = BTreeMap::new();
        walk(&t.path(""), "", &mut map);
        map.retain(|k, _| k != "state" && !k.starts_with("state/"));
        Snapshot(map)
    }

    /// The paths that differ, one line each: for failure messages.
    pub fn diff(&self, other: &Snapshot) -> String {
        let keys: BTreeSet<&String> = self.0.keys().chain(other.0.keys()).collect();
        let mut out = String::new();
        for k in keys {
            let (a, b) = (self.0.get(k), other.0.get(k));
            if a != b {
                out.push_str(&format!("  /{k}:\n    was {a:?}\n    now {b:?}\n"));
            }
        }
        out
    }
}

fn walk(path: &Path, rel: &str, out: &mut BTreeMap<String, Entry>) {
    let Ok(meta) = path.symlink_metadata() else {
        return;
    };
    let ft = meta.file_type();
    let (kind, content, target) = if ft.is_symlink() {
        let t = std::fs::read_link(path).unwrap().display().to_string();
        ("symlink", String::new(), Some(t))
    } else if ft.is_dir() {
        ("dir", String::new(), None)
    } else {
        let bytes = std::fs::read(path).unwrap();
        ("file", blake3::hash(&bytes).to_hex().to_string(), None)
    };
    out.insert(
        rel.to_string(),
        Entry {
            kind,
            content,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            target,
        },
    );
    if ft.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            let child = match rel {
                "" => name.clone(),
                _ => format!("{rel}/{name}"),
            };
            walk(&path.join(&name), &child, out);
        }
    }
}

// ---- the model --------------------------------------------------------------

#[derive(Clone, Debug)]
enum Node {
    Dir { mode: u32 },
    File { content: String, mode: u32 },
    Link { target: String },
}

/// The tree under `grant/` as the plan so far leaves it: path (relative to
/// the grant) -> node identity and node. Every name a node ever had is
/// kept, so a drift named by an older name can be recognised.
#[derive(Clone, Default)]
struct Model {
    nodes: BTreeMap<String, (u64, Node)>,
    names: BTreeMap<u64, BTreeSet<String>>,
    next: u64,
}

fn parent(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(a, _)| a)
}

fn under(p: &str, base: &str) -> bool {
    p == base || p.starts_with(&format!("{base}/"))
}

impl Model {
    fn exists(&self, p: &str) -> bool {
        p.is_empty() || self.nodes.contains_key(p)
    }

    fn is_dir(&self, p: &str) -> bool {
        p.is_empty() || matches!(self.nodes.get(p), Some((_, Node::Dir { .. })))
    }

    fn children(&self, dir: &str) -> Vec<String> {
        self.nodes
            .keys()
            .filter(|k| parent(k) == dir && !k.is_empty())
            .cloned()
            .collect()
    }

    fn add(&mut self, p: &str, node: Node) {
        self.next += 1;
        self.nodes.insert(p.to_string(), (self.next, node));
        self.names
            .entry(self.next)
            .or_default()
            .insert(p.to_string());
    }

    fn remove(&mut self, p: &str) {
        self.nodes.remove(p);
    }

    fn rename(&mut self, from: &str, to: &str) {
        let moved: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| under(k, from))
            .cloned()
            .collect();
        // Over an existing file: that one goes.
        self.nodes.remove(to);
        for k in moved {
            let (id, node) = self.nodes.remove(&k).unwrap();
            let new = format!("{to}{}", &k[from.len()..]);
            self.names.entry(id).or_default().insert(new.clone());
            self.nodes.insert(new, (id, node));
        }
    }

    fn dirs(&self) -> Vec<String> {
        std::iter::once(String::new())
            .chain(
                self.nodes
                    .iter()
                    .filter(|(_, (_, n))| matches!(n, Node::Dir { .. }))
                    .map(|(k, _)| k.clone()),
            )
            .collect()
    }

    fn of_kind(&self, want: fn(&Node) -> bool) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, (_, n))| want(n))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every name the node now at `p` had.
    fn aliases(&self, p: &str) -> BTreeSet<String> {
        self.nodes
            .get(p)
            .and_then(|(id, _)| self.names.get(id).cloned())
            .unwrap_or_else(|| BTreeSet::from([p.to_string()]))
    }
}

// ---- the generator ----------------------------------------------------------

/// One fs call of the `fsops` guest, paths relative to the grant.
#[derive(Clone, Debug)]
pub enum Op {
    Mkdir(String),
    Write(String, String),
    Rm(String),
    Rmdir(String),
    Mv(String, String),
    Chmod(String, u32),
    Ln(String, String),
}

impl Op {
    fn line(&self, g: &str) -> String {
        match self {
            Op::Mkdir(p) => format!("mkdir {g}/{p}"),
            Op::Write(p, c) => format!("write {g}/{p} {c}"),
            Op::Rm(p) => format!("rm {g}/{p}"),
            Op::Rmdir(p) => format!("rmdir {g}/{p}"),
            Op::Mv(a, b) => format!("mv {g}/{a} {g}/{b}"),
            Op::Chmod(p, m) => format!("chmod {g}/{p} {m:o}"),
            Op::Ln(target, link) => format!("ln {target} {g}/{link}"),
        }
    }

    /// The paths the call changes (a symlink's target is text, not a path).
    fn paths(&self) -> Vec<&str> {
        match self {
            Op::Mkdir(p) | Op::Write(p, _) | Op::Rm(p) | Op::Rmdir(p) | Op::Chmod(p, _) => {
                vec![p]
            }
            Op::Mv(a, b) => vec![a, b],
            Op::Ln(_, l) => vec![l],
        }
    }
}

const FILE_MODES: [u32; 4] = [0o600, 0o640, 0o644, 0o664];
const DIR_MODES: [u32; 3] = [0o700, 0o750, 0o755];

/// A starting tree and a plan over it, from one seed.
pub struct Case {
    pub seed: u64,
    /// The starting tree, parents first, with each node's mtime.
    start: Vec<(String, Node, (i64, u32))>,
    root_mtime: (i64, u32),
    pub ops: Vec<Op>,
    /// The tree after the plan.
    end: Model,
}

struct Gen {
    rng: Rng,
    model: Model,
    ops: Vec<Op>,
    fresh: u32,
}

impl Gen {
    fn pick<T: Clone>(&mut self, v: &[T]) -> Option<T> {
        (!v.is_empty()).then(|| v[self.rng.below(v.len())].clone())
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.rng.below(100) < percent
    }

    fn name(&mut self) -> String {
        self.fresh += 1;
        format!("n{}", self.fresh)
    }

    fn content(&mut self) -> String {
        let len = 1 + self.rng.below(24);
        (0..len)
            .map(|_| (b'a' + self.rng.below(26) as u8) as char)
            .collect()
    }

    fn join(dir: &str, name: &str) -> String {
        match dir {
            "" => name.to_string(),
            _ => format!("{dir}/{name}"),
        }
    }

    fn new_path_in(&mut self, dir: &str) -> String {
        let n = self.name();
        Self::join(dir, &n)
    }

    fn random_dir(&mut self) -> String {
        let dirs = self.model.dirs();
        self.pick(&dirs).unwrap()
    }

    fn push(&mut self, op: Op) {
        match &op {
            Op::Mkdir(p) => self.model.add(p, Node::Dir { mode: 0o755 }),
            Op::Write(p, c) => match self.model.nodes.get_mut(p) {
                Some((_, Node::File { content, .. })) => *content = c.clone(),
                _ => self.model.add(
                    p,
                    Node::File {
                        content: c.clone(),
                        mode: 0o644,
                    },
                ),
            },
            Op::Rm(p) | Op::Rmdir(p) => self.model.remove(p),
            Op::Mv(a, b) => self.model.rename(a, b),
            Op::Chmod(p, m) => match self.model.nodes.get_mut(p) {
                Some((_, Node::File { mode, .. } | Node::Dir { mode })) => *mode = *m,
                _ => unreachable!("chmod of a non-file"),
            },
            Op::Ln(t, l) => self.model.add(l, Node::Link { target: t.clone() }),
        }
        self.ops.push(op);
    }

    fn starting_tree(&mut self) {
        for _ in 0..2 + self.rng.below(3) {
            let d = self.random_dir();
            let p = self.new_path_in(&d);
            let mode = self.pick(&DIR_MODES).unwrap();
            self.model.add(&p, Node::Dir { mode });
        }
        for _ in 0..3 + self.rng.below(6) {
            let d = self.random_dir();
            let p = self.new_path_in(&d);
            let (content, mode) = (self.content(), self.pick(&FILE_MODES).unwrap());
            self.model.add(&p, Node::File { content, mode });
        }
        for _ in 0..1 + self.rng.below(3) {
            self.symlink_op(false);
        }
        // An empty directory, for rmdir.
        let d = self.random_dir();
        let p = self.new_path_in(&d);
        self.model.add(&p, Node::Dir { mode: 0o755 });
    }

    /// A symlink to a sibling file, by a relative name: it stays inside
    /// whatever its directory is renamed to.
    fn symlink_op(&mut self, as_op: bool) -> Option<()> {
        let files = self
            .model
            .of_kind(|n| matches!(n, Node::File { .. } | Node::Dir { .. }));
        let target = self.pick(&files)?;
        let link = self.new_path_in(parent(&target));
        let name = target.rsplit('/').next().unwrap().to_string();
        match as_op {
            true => self.push(Op::Ln(name, link)),
            false => self.model.add(&link, Node::Link { target: name }),
        }
        Some(())
    }

    fn files(&self) -> Vec<String> {
        self.model.of_kind(|n| matches!(n, Node::File { .. }))
    }

    fn real_dirs(&self) -> Vec<String> {
        self.model.of_kind(|n| matches!(n, Node::Dir { .. }))
    }

    /// A new name for `from` somewhere not under itself.
    fn destination(&mut self, from: &str) -> String {
        let dirs: Vec<String> = self
            .model
            .dirs()
            .into_iter()
            .filter(|d| !under(d, from))
            .collect();
        let d = self.pick(&dirs).unwrap();
        self.new_path_in(&d)
    }

    fn chmod(&mut self, p: &str) {
        let (choices, now) = match &self.model.nodes[p].1 {
            Node::File { mode, .. } => (&FILE_MODES[..], *mode),
            Node::Dir { mode } => (&DIR_MODES[..], *mode),
            Node::Link { .. } => return,
        };
        let others: Vec<u32> = choices.iter().copied().filter(|m| *m != now).collect();
        let m = self.pick(&others).unwrap();
        self.push(Op::Chmod(p.to_string(), m));
    }

    /// One step: a single call or a short sequence of the hard kind.
    fn step(&mut self) -> Option<()> {
        match self.rng.below(14) {
            // mkdir d; write d/f; mv d e; write e/g; mv e/g e/h; chmod;
            // symlink; maybe rename back.
            0 | 1 => {
                let dir = self.random_dir();
                let d = self.new_path_in(&dir);
                self.push(Op::Mkdir(d.clone()));
                let f = self.new_path_in(&d);
                let c = self.content();
                self.push(Op::Write(f, c));
                let e = self.destination(&d);
                self.push(Op::Mv(d.clone(), e.clone()));
                let g = self.new_path_in(&e);
                let c = self.content();
                self.push(Op::Write(g.clone(), c));
                let h = self.new_path_in(&e);
                self.push(Op::Mv(g, h.clone()));
                self.chmod(&h);
                let name = h.rsplit('/').next().unwrap().to_string();
                let l = self.new_path_in(&e);
                self.push(Op::Ln(name, l));
                if self.chance(40) && !self.model.exists(&d) {
                    self.push(Op::Mv(e, d));
                }
            }
            // An existing directory renamed, then written beneath.
            2 | 3 => {
                let dirs = self.real_dirs();
                let d = self.pick(&dirs)?;
                let e = self.destination(&d);
                self.push(Op::Mv(d.clone(), e.clone()));
                let inside: Vec<String> =
                    self.files().into_iter().filter(|f| under(f, &e)).collect();
                match self.pick(&inside) {
                    Some(f) if self.chance(60) => {
                        let c = self.content();
                        self.push(Op::Write(f, c));
                    }
                    _ => {
                        let f = self.new_path_in(&e);
                        let c = self.content();
                        self.push(Op::Write(f, c));
                    }
                }
                if self.chance(30) {
                    self.chmod(&e);
                }
                if self.chance(40) && !self.model.exists(&d) && self.model.is_dir(parent(&d)) {
                    self.push(Op::Mv(e, d));
                }
            }
            // A file written, then renamed (maybe over another, maybe back).
            4 | 5 => {
                let files = self.files();
                let f = match self.pick(&files) {
                    Some(f) if self.chance(50) => f,
                    _ => {
                        let dir = self.random_dir();
                        self.new_path_in(&dir)
                    }
                };
                let c = self.content();
                self.push(Op::Write(f.clone(), c));
                let over: Vec<String> = self.files().into_iter().filter(|o| *o != f).collect();
                let to = match self.pick(&over) {
                    Some(o) if self.chance(25) => o,
                    _ => self.destination(&f),
                };
                self.push(Op::Mv(f.clone(), to.clone()));
                if self.chance(40) {
                    self.chmod(&to);
                }
                if self.chance(30) && !self.model.exists(&f) && self.model.is_dir(parent(&f)) {
                    self.push(Op::Mv(to, f));
                }
            }
            // A directory emptied, then removed.
            6 => {
                let dirs = self.real_dirs();
                let d = self.pick(&dirs)?;
                let below: Vec<String> = self
                    .model
                    .nodes
                    .keys()
                    .filter(|k| under(k, &d) && *k != &d)
                    .cloned()
                    .collect();
                if below.len() > 4 {
                    return None;
                }
                for p in below.iter().rev() {
                    match self.model.is_dir(p) {
                        true => self.push(Op::Rmdir(p.clone())),
                        false => self.push(Op::Rm(p.clone())),
                    }
                }
                self.push(Op::Rmdir(d));
            }
            // A symlink, then its directory renamed.
            7 => {
                self.symlink_op(true)?;
                let Some(Op::Ln(_, l)) = self.ops.last().cloned() else {
                    return None;
                };
                let d = parent(&l).to_string();
                if !d.is_empty() {
                    let e = self.destination(&d);
                    self.push(Op::Mv(d, e));
                }
            }
            8 => {
                let files = self.files();
                let f = self.pick(&files)?;
                self.chmod(&f);
            }
            9 => {
                let gone = self.model.of_kind(|n| !matches!(n, Node::Dir { .. }));
                let p = self.pick(&gone)?;
                self.push(Op::Rm(p));
            }
            10 => {
                let dirs = self.real_dirs();
                let d = self.pick(&dirs)?;
                self.chmod(&d);
            }
            11 => {
                let d = self.random_dir();
                let p = self.new_path_in(&d);
                self.push(Op::Mkdir(p));
            }
            12 => {
                let links = self.model.of_kind(|n| matches!(n, Node::Link { .. }));
                let l = self.pick(&links)?;
                let to = self.destination(&l);
                self.push(Op::Mv(l, to));
            }
            _ => {
                let dir = self.random_dir();
                let f = self.new_path_in(&dir);
                let c = self.content();
                self.push(Op::Write(f, c));
            }
        }
        Some(())
    }
}

impl Case {
    pub fn generate(seed: u64) -> Case {
        let mut g = Gen {
            rng: Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            model: Model::default(),
            ops: Vec::new(),
            fresh: 0,
        };
        g.starting_tree();
        let mut times = Vec::new();
        let start: Vec<(String, Node, (i64, u32))> = g
            .model
            .nodes
            .iter()
            .map(|(p, (_, n))| (p.clone(), n.clone()))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|(p, n)| {
                let t = (
                    1_000_000_000 + g.rng.below(600_000_000) as i64,
                    g.rng.below(1_000_000_000) as u32,
                );
                times.push(t);
                (p, n, t)
            })
            .collect();
        let root_mtime = (1_500_000_000, g.rng.below(1_000_000_000) as u32);
        let steps = 2 + g.rng.below(3);
        for _ in 0..steps {
            let _ = g.step();
        }
        Case {
            seed,
            start,
            root_mtime,
            ops: g.ops,
            end: g.model,
        }
    }

    /// Makes the starting tree in `t`'s `grant/`, modes and mtimes included.
    pub fn build(&self, t: &Tree) {
        let g = t.path("grant");
        for (p, node, _) in &self.start {
            let path = g.join(p);
            match node {
                Node::Dir { .. } => std::fs::create_dir(&path).unwrap(),
                Node::File { content, .. } => std::fs::write(&path, content).unwrap(),
                Node::Link { target } => std::os::unix::fs::symlink(target, &path).unwrap(),
            }
        }
        // Modes, then times children first (a child's creation changes its
        // directory's mtime).
        for (p, node, _) in &self.start {
            if let Node::Dir { mode } | Node::File { mode, .. } = node {
                std::fs::set_permissions(g.join(p), PermissionsExt::from_mode(*mode)).unwrap();
            }
        }
        for (p, _, t) in self.start.iter().rev() {
            set_mtime(&g.join(p), *t);
        }
        set_mtime(&g, self.root_mtime);
    }

    /// The plan as the `ops` parameter of `fsops`, for `t`'s grant.
    pub fn ops_param(&self, t: &Tree) -> String {
        let g = t.p("grant");
        let lines: Vec<String> = self.ops.iter().map(|o| o.line(&g)).collect();
        format!("ops={}", lines.join(";"))
    }

    /// `defops-wasm run fsops --allow grant --json -p ops=...` with more
    /// arguments and, when given, a fail point.
    pub fn run(&self, t: &Tree, failpoint: Option<&str>, extra: &[&str]) -> Out {
        let (fsops, grant, ops) = (guest("fsops"), t.p("grant"), self.ops_param(t));
        let mut cmd = t.defops();
        if let Some(point) = failpoint {
            cmd = cmd.env("DEFOPS_FAILPOINT", point);
        }
        cmd.args(&[
            "run",
            fsops.to_str().unwrap(),
            "--allow",
            &grant,
            "--json",
            "-p",
            &ops,
        ])
        .args(extra)
        .output()
    }

    /// The paths (relative to the grant) the plan changed, with the names
    /// their node had: those that exist after the plan, and those that do
    /// not but whose directory does.
    fn touched(&self) -> (Vec<String>, Vec<String>) {
        let args: BTreeSet<&str> = self.ops.iter().flat_map(|o| o.paths()).collect();
        let present = args
            .iter()
            .filter(|p| self.end.exists(p))
            .map(|p| p.to_string())
            .collect();
        let absent = args
            .iter()
            .filter(|p| !self.end.exists(p) && self.end.is_dir(parent(p)))
            .map(|p| p.to_string())
            .collect();
        (present, absent)
    }

    /// What the starting tree had at `p`.
    fn started_with(&self, p: &str) -> Option<&Node> {
        self.start
            .iter()
            .find(|(q, _, _)| q == p)
            .map(|(_, n, _)| n)
    }

    /// One line per call, for failure messages.
    pub fn describe(&self) -> String {
        let ops: Vec<String> = self.ops.iter().map(|o| o.line("G")).collect();
        format!(
            "seed {} (DEFOPS_GEN_SEED={} DEFOPS_GEN_SEEDS=1 replays it):\n  {}",
            self.seed,
            self.seed,
            ops.join("\n  ")
        )
    }
}

fn set_mtime(path: &Path, (s, ns): (i64, u32)) {
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: s,
            tv_nsec: ns.into(),
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: s,
            tv_nsec: ns.into(),
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// The seeds to run: `DEFOPS_GEN_SEEDS` of them (default `default`) from
/// `DEFOPS_GEN_SEED` (default 1).
pub fn seeds(default: u64) -> std::ops::Range<u64> {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let first = env("DEFOPS_GEN_SEED").unwrap_or(1);
    first..first + env("DEFOPS_GEN_SEEDS").unwrap_or(default)
}

/// A change by someone else after a complete run, to a path the run
/// changed: recreated, chmod'ed, rewritten or removed.
pub fn change_one_path(t: &Tree, case: &Case, rng: &mut Rng) -> (String, BTreeSet<String>) {
    let (present, absent) = case.touched();
    let g = t.path("grant");
    loop {
        match rng.below(4) {
            // The application puts back a file: as it was before the run
            // when there was one (the hardest case: its before-state).
            0 if !absent.is_empty() => {
                let p = &absent[rng.below(absent.len())];
                match case.started_with(p) {
                    Some(Node::File { content, mode }) => {
                        std::fs::write(g.join(p), content).unwrap();
                        std::fs::set_permissions(g.join(p), PermissionsExt::from_mode(*mode))
                            .unwrap();
                    }
                    _ => std::fs::write(g.join(p), "put back by the application\n").unwrap(),
                }
                return (format!("recreated {p}"), BTreeSet::from([p.clone()]));
            }
            // Someone changes a mode: back to the one before the run when
            // it was different.
            1 if !present.is_empty() => {
                let p = &present[rng.below(present.len())];
                let path = g.join(p);
                let mode = path.symlink_metadata().unwrap().mode() & 0o7777;
                if path.is_symlink() {
                    continue;
                }
                let new = match case.started_with(p) {
                    Some(Node::File { mode: m, .. } | Node::Dir { mode: m }) if *m != mode => *m,
                    _ if mode == 0o711 => 0o751,
                    _ => 0o711,
                };
                std::fs::set_permissions(&path, PermissionsExt::from_mode(new)).unwrap();
                return (format!("chmod {p}"), case.end.aliases(p));
            }
            2 => {
                let files: Vec<&String> = present
                    .iter()
                    .filter(|p| matches!(case.end.nodes[*p].1, Node::File { .. }))
                    .collect();
                let Some(p) = files.get(rng.below(files.len().max(1))) else {
                    continue;
                };
                std::fs::write(g.join(p), "edited since\n").unwrap();
                return (format!("rewrote {p}"), case.end.aliases(p));
            }
            3 => {
                let gone: Vec<&String> = present
                    .iter()
                    .filter(|p| !case.end.is_dir(p) || case.end.children(p).is_empty())
                    .collect();
                let Some(p) = gone.get(rng.below(gone.len().max(1))) else {
                    continue;
                };
                match case.end.is_dir(p) {
                    true => std::fs::remove_dir(g.join(p)).unwrap(),
                    false => std::fs::remove_file(g.join(p)).unwrap(),
                }
                return (format!("removed {p}"), case.end.aliases(p));
            }
            _ => {}
        }
    }
}
