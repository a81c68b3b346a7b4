//! The fix's view of the file system: the grants, with the fix's own planned
//! mutations laid over them.
//!
//! Nothing here writes to the disk. A mutation updates the in-memory node of
//! its path and appends an [`Effect`] to the plan; a read sees the overlay
//! first and falls back to the disk. A renamed directory keeps a pointer to
//! where its untouched children still live on disk (`Node::Dir::source`), so
//! the fix sees exactly what it would see after a real run.
//!
//! Path resolution happens here too ([`Overlay::resolve`]): one component at
//! a time, following symlinks (from disk or planned) by hand, so that every
//! intermediate path is checked against the grants.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;

use crate::disk::{self, Kind};
use crate::grants::{Access, Grants, MAX_NAME, MAX_PATH, VPath};
use crate::plan::{Effect, Op, Plan, State};
use crate::policy::Until;

mod containment;

pub use containment::Escape;

/// Files read from disk are kept (up to these sizes) so a fix that reads a
/// file in `check`, again in `apply`, then writes it costs one read. An
/// entry is used only while the file's identity is unchanged.
const CACHE_FILE_MAX: u64 = 1 << 20;
const CACHE_MAX: u64 = 64 << 20;

/// Symlinks followed while resolving one path, at most (Linux `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Why a file-system call of the fix failed; becomes the WIT `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    /// Outside the grants, read-only, during `check`, or a file never touched.
    #[error("denied: {0}")]
    Denied(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("i/o error: {0}")]
    Io(String),
    /// The run is being stopped (its deadline passed).
    #[error("aborted: {0}")]
    Aborted(String),
    /// The plan grew past its size limit: ends the run (a trap, not an error).
    #[error("plan limit: {0}")]
    PlanLimit(String),
    /// The run's deadline (this `--timeout`) passed during a host call:
    /// ends the run (a trap, not an error).
    #[error("the run's deadline of {} passed", crate::units::human(*.0))]
    Deadline(std::time::Duration),
}

fn denied(path: &VPath, why: impl std::fmt::Display) -> FsError {
    FsError::Denied(format!("{path}: {why}"))
}

/// A directory holding a name that is not UTF-8 cannot be listed, emptied
/// or replaced by a fix: WIT paths are strings, so the fix could neither
/// see nor address that entry, and a plan made without it would not be
/// the plan the commit meets.
fn not_utf8(dir: &VPath, name: &[u8]) -> FsError {
    denied(
        dir,
        format!(
            "holds the name \"{}\", which is not UTF-8 and cannot be addressed by a fix; rename it first",
            disk::escaped(name)
        ),
    )
}

fn not_found(path: &VPath) -> FsError {
    FsError::NotFound(path.to_string())
}

fn invalid(path: &VPath, why: impl std::fmt::Display) -> FsError {
    FsError::InvalidInput(format!("{path}: {why}"))
}

fn io_error(path: &VPath, e: io::Error) -> FsError {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => not_found(path),
        io::ErrorKind::PermissionDenied => denied(path, e),
        io::ErrorKind::FileTooLarge => invalid(path, e),
        _ if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            denied(path, "a directory on the way was replaced by a symlink")
        }
        _ => FsError::Io(format!("{path}: {e}")),
    }
}

/// Metadata of a node, as the fix sees it.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub nlink: u64,
}

#[derive(Clone, Debug)]
enum Content {
    /// Unchanged: read from this (physical) path on demand; the identity it
    /// had when looked at.
    Disk(VPath, disk::Identity),
    Mem(Arc<Vec<u8>>),
}

#[derive(Clone, Debug)]
enum Node {
    Absent,
    File {
        content: Content,
        meta: Meta,
    },
    /// `source`: where the children not in the overlay live on disk
    /// (`None` for a directory the fix created).
    Dir {
        source: Option<VPath>,
        meta: Meta,
    },
    Symlink {
        target: String,
        meta: Meta,
    },
    Other {
        meta: Meta,
    },
}

impl Node {
    fn meta(&self) -> Option<Meta> {
        match self {
            Node::Absent => None,
            Node::File { meta, .. }
            | Node::Dir { meta, .. }
            | Node::Symlink { meta, .. }
            | Node::Other { meta } => Some(*meta),
        }
    }

    fn with_meta(&self, meta: Meta) -> Node {
        match self {
            Node::Absent => Node::Absent,
            Node::File { content, .. } => Node::File {
                content: content.clone(),
                meta,
            },
            Node::Dir { source, .. } => Node::Dir {
                source: source.clone(),
                meta,
            },
            Node::Symlink { target, .. } => Node::Symlink {
                target: target.clone(),
                meta,
            },
            Node::Other { .. } => Node::Other { meta },
        }
    }
}

/// File contents read from disk, with the identity they were read at.
type ReadCache = HashMap<VPath, (disk::Identity, Arc<Vec<u8>>)>;

/// A state, with the content when it is a file.
type Image = (State, Option<Arc<Vec<u8>>>);

/// The on-disk identity of a file node read from disk and not changed since.
fn disk_identity(node: &Node) -> Option<disk::Identity> {
    match node {
        Node::File {
            content: Content::Disk(_, id),
            ..
        } => Some(*id),
        _ => None,
    }
}

/// Where one resolution is: each level from `/` down to the current path,
/// with the index of the nearest level (itself included) the overlay holds
/// a node for. Going down one name or up one level is constant work.
struct Walk {
    levels: Vec<(VPath, Option<usize>)>,
}

impl Walk {
    fn new(overlay: &Overlay) -> Walk {
        let root = VPath::root();
        let overlaid = overlay.nodes.contains_key(&root).then_some(0);
        Walk {
            levels: vec![(root, overlaid)],
        }
    }

    fn cur(&self) -> &VPath {
        &self.levels[self.levels.len() - 1].0
    }

    /// The nearest overlaid level, the current one included.
    fn overlaid(&self) -> Option<&VPath> {
        let (_, at) = &self.levels[self.levels.len() - 1];
        at.map(|i| &self.levels[i].0)
    }

    /// `..`: the root's parent is the root.
    fn up(&mut self) {
        if self.levels.len() > 1 {
            self.levels.pop();
        }
    }

    fn down(&mut self, overlay: &Overlay, name: &str) {
        let path = self.cur().join(name);
        let at = match overlay.nodes.contains_key(&path) {
            true => Some(self.levels.len()),
            false => self.levels[self.levels.len() - 1].1,
        };
        self.levels.push((path, at));
    }
}

/// The exact metadata of a file put back by rollback.
#[derive(Clone, Copy, Debug)]
pub struct Exact {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds and nanoseconds.
    pub mtime: Option<(i64, u32)>,
}

/// Sizes the overlay may not exceed.
#[derive(Clone, Copy, Debug)]
pub struct OverlayLimits {
    /// The largest file a fix may read.
    pub max_read: u64,
    /// The total bytes of content a plan may hold.
    pub max_plan_bytes: u64,
}

/// The fix's file system.
pub struct Overlay {
    grants: Arc<Grants>,
    nodes: BTreeMap<VPath, Node>,
    plan: Plan,
    /// `Some(reason)` while mutations are refused (during `check`).
    read_only: Option<&'static str>,
    uid: u32,
    gid: u32,
    limits: OverlayLimits,
    plan_bytes: u64,
    /// Set by rollback: symlinks may be re-created pointing anywhere,
    /// because they are restored as they were.
    restoring: bool,
    /// While restoring: what each path on disk was when first looked at
    /// (see [`Overlay::look_ahead`]).
    seen: RefCell<HashMap<VPath, Node>>,
    read_cache: RefCell<ReadCache>,
    cache_bytes: Cell<u64>,
    /// Effects before this index are never merged into (the first pass's,
    /// during the idempotency pass).
    merge_floor: usize,
    /// The run's deadline and off-switch: long resolutions and listings
    /// stop at either.
    until: Until,
}

impl Overlay {
    pub fn new(grants: Arc<Grants>, limits: OverlayLimits) -> Overlay {
        Overlay {
            grants,
            nodes: BTreeMap::new(),
            plan: Plan::default(),
            read_only: None,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            limits,
            plan_bytes: 0,
            restoring: false,
            seen: RefCell::default(),
            read_cache: RefCell::new(HashMap::new()),
            cache_bytes: Cell::new(0),
            merge_floor: 0,
            until: Until::never(),
        }
    }

    /// The grants this overlay is over.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// Stops long work at the run's deadline or a pause.
    pub fn with_until(mut self, until: Until) -> Overlay {
        self.until = until;
        self
    }

    /// For rollback: allow re-creating symlinks that point outside the
    /// grants (they were there before the run).
    pub fn set_restoring(&mut self) {
        self.restoring = true;
    }

    /// The state of the path itself (not following a final symlink).
    pub fn state(&self, path: &VPath) -> Result<State, FsError> {
        let real = match self.resolve(path, false) {
            Err(FsError::NotFound(_)) => return Ok(State::Absent),
            other => other?,
        };
        let node = self.lookup(&real)?;
        self.state_of(path, &node)
    }

    /// Refuse every mutation (with `reason`) or allow them again.
    pub fn set_read_only(&mut self, reason: Option<&'static str>) {
        self.read_only = reason;
    }

    /// Starts the idempotency pass: a second `apply` over this overlay.
    /// Returns what [`Overlay::end_second_pass`] needs.
    pub fn begin_second_pass(&mut self) -> (usize, usize) {
        self.merge_floor = self.plan.effects.len();
        (self.plan.effects.len(), self.plan.unchanged)
    }

    /// Ends the idempotency pass: the plan is the first pass's again; the
    /// second pass's effects (none, for an idempotent fix) are returned.
    pub fn end_second_pass(&mut self, (first, unchanged): (usize, usize)) -> Vec<Effect> {
        self.plan.unchanged = unchanged;
        self.plan.effects.split_off(first)
    }

    /// True while mutations are allowed (during `apply`).
    pub fn is_writable(&self) -> bool {
        self.read_only.is_none()
    }

    pub fn into_plan(self) -> Plan {
        self.plan
    }

    // ---- resolution -------------------------------------------------------

    /// Resolves `path` to the canonical path of what it names, following
    /// symlinks in every component but the last (and the last too when
    /// `follow_last`). Every step must stay inside a grant, or above one on
    /// the way down to it.
    ///
    /// Linear in the length of the path and of the symlink targets it
    /// meets: the walk keeps, for each level, its path and where its nearest
    /// overlaid ancestor is, and the directories it opened on disk
    /// ([`disk::DirCache`]). It stops at the run's deadline or a pause.
    pub fn resolve(&self, path: &VPath, follow_last: bool) -> Result<VPath, FsError> {
        let mut todo: Vec<String> = path.names().rev().map(String::from).collect();
        let mut walk = Walk::new(self);
        let mut cache = disk::DirCache::default();
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if let Some(stop) = self.until.stop() {
                return Err(stop);
            }
            match name.as_str() {
                "" | "." => continue,
                ".." => {
                    walk.up();
                    continue;
                }
                n if n.len() > MAX_NAME => {
                    return Err(denied(path, "a symlink target has an over-long name"));
                }
                _ => {}
            }
            walk.down(self, &name);
            let cur = walk.cur();
            if cur.as_str().len() > MAX_PATH {
                return Err(invalid(
                    path,
                    format!("it resolves to a path longer than {MAX_PATH} bytes"),
                ));
            }
            let last = todo.is_empty();
            if self.grants.find(cur).is_none() {
                if !last && self.grants.is_above_a_grant(cur) {
                    continue;
                }
                return Err(denied(
                    path,
                    format!("{cur} is outside the granted directories"),
                ));
            }
            if last && !follow_last {
                break;
            }
            match self.lookup_in(&walk, &mut cache)? {
                Node::Symlink { target, .. } => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(FsError::Io(format!("{path}: too many levels of symlinks")));
                    }
                    match target.starts_with('/') {
                        // An operator's spelling of a grant is the grant.
                        true => {
                            walk = Walk::new(self);
                            let rest = self.grants.canonical_target(&target);
                            todo.extend(rest.split('/').rev().map(String::from));
                        }
                        false => {
                            walk.up();
                            todo.extend(target.split('/').rev().map(String::from));
                        }
                    }
                }
                Node::Dir { .. } => {}
                Node::Absent if last => {}
                Node::Absent => return Err(not_found(path)),
                _ if last => {}
                _ => {
                    return Err(FsError::Io(format!(
                        "{path}: {} is not a directory",
                        walk.cur()
                    )));
                }
            }
        }
        let cur = walk.cur();
        if self.grants.find(cur).is_none() {
            return Err(denied(
                path,
                format!("{cur} is outside the granted directories"),
            ));
        }
        Ok(cur.clone())
    }

    /// The node at canonical `path`: the overlay's, or the disk's under the
    /// nearest overlaid ancestor's source.
    fn lookup(&self, path: &VPath) -> Result<Node, FsError> {
        if let Some(node) = self.nodes.get(path) {
            return Ok(node.clone());
        }
        let mut ancestor = path.parent();
        while let Some(a) = ancestor {
            if let Some(node) = self.nodes.get(&a) {
                return self.below(path, &a, node, &mut disk::DirCache::default());
            }
            ancestor = a.parent();
        }
        self.disk_node(path, &mut disk::DirCache::default())
    }

    /// [`Overlay::lookup`] of the walk's current path, with the nearest
    /// overlaid ancestor the walk already knows.
    fn lookup_in(&self, walk: &Walk, cache: &mut disk::DirCache) -> Result<Node, FsError> {
        let cur = walk.cur();
        match walk.overlaid() {
            Some(a) if a == cur => Ok(self.nodes[cur].clone()),
            Some(a) => self.below(cur, a, &self.nodes[a], cache),
            None => self.disk_node(cur, cache),
        }
    }

    /// The node at `path`, below the overlaid `ancestor` (and not itself
    /// overlaid): on disk under a directory's source, else absent.
    fn below(
        &self,
        path: &VPath,
        ancestor: &VPath,
        node: &Node,
        cache: &mut disk::DirCache,
    ) -> Result<Node, FsError> {
        match node {
            Node::Dir {
                source: Some(s), ..
            } => self.disk_node(&path.rebase(ancestor, s), cache),
            _ => Ok(Node::Absent),
        }
    }

    fn disk_node(&self, phys: &VPath, cache: &mut disk::DirCache) -> Result<Node, FsError> {
        if self.restoring
            && let Some(node) = self.seen.borrow().get(phys)
        {
            return Ok(node.clone());
        }
        disk_node(&self.grants, phys, cache)
    }

    /// While restoring: looks at `paths` on disk ahead of the plan, on two
    /// threads, each path's metadata and a regular file's content, so the
    /// plan that then visits them one by one (its state, then the write
    /// that puts it back) finds them looked at. What the disk showed is
    /// kept for the plan's whole life: the commit checks every path's
    /// identity again right before changing it, and the rollback looks at
    /// the whole tree once more afterwards.
    pub fn look_ahead(&self, paths: &[VPath]) {
        if !self.restoring || paths.len() < LOOK_AHEAD_FROM {
            return;
        }
        type Looked = (VPath, Node, Option<(disk::Identity, Vec<u8>)>);
        let grants = &*self.grants;
        let max_read = self.limits.max_read.min(CACHE_FILE_MAX);
        let look = |part: &[VPath]| -> Vec<Looked> {
            let mut cache = disk::DirCache::default();
            let mut looked = Vec::with_capacity(part.len());
            for path in part {
                let Ok(node) = disk_node(grants, path, &mut cache) else {
                    continue;
                };
                let bytes = match &node {
                    Node::File {
                        content: Content::Disk(_, identity),
                        meta,
                    } if meta.size <= max_read => grants
                        .find(path)
                        .and_then(|g| cache.locate(g, path).ok())
                        .and_then(|loc| loc.read_file_stat(max_read, &mut || Ok(())).ok())
                        // The file read is the one looked at.
                        .filter(|(_, st)| st.identity == *identity)
                        .map(|(bytes, _)| (*identity, bytes)),
                    _ => None,
                };
                looked.push((path.clone(), node, bytes));
            }
            looked
        };
        let looked = crate::in_two_halves(paths, 0, look);
        let (mut seen, mut read) = (self.seen.borrow_mut(), self.read_cache.borrow_mut());
        for (path, node, bytes) in looked {
            if let Some((identity, bytes)) = bytes {
                let size = bytes.len() as u64;
                if self.cache_bytes.get() + size <= CACHE_MAX {
                    self.cache_bytes.set(self.cache_bytes.get() + size);
                    read.insert(path.clone(), (identity, Arc::new(bytes)));
                }
            }
            seen.entry(path).or_insert(node);
        }
    }

    fn content(&self, path: &VPath, content: &Content) -> Result<Arc<Vec<u8>>, FsError> {
        match content {
            Content::Mem(bytes) => Ok(bytes.clone()),
            Content::Disk(phys, identity) => {
                if let Some((id, bytes)) = self.read_cache.borrow().get(phys)
                    && id == identity
                {
                    return Ok(bytes.clone());
                }
                let grant = self
                    .grants
                    .find(phys)
                    .ok_or_else(|| denied(path, "outside the grants"))?;
                let bytes = disk::locate(grant, phys)
                    .and_then(|loc| loc.read_file(self.limits.max_read, &mut || self.until.check()))
                    .map(Arc::new)
                    .map_err(|e| match self.until.stop() {
                        Some(stop) => stop,
                        None => io_error(path, e),
                    })?;
                let size = bytes.len() as u64;
                if size <= CACHE_FILE_MAX && self.cache_bytes.get() + size <= CACHE_MAX {
                    self.cache_bytes.set(self.cache_bytes.get() + size);
                    self.read_cache
                        .borrow_mut()
                        .insert(phys.clone(), (*identity, bytes.clone()));
                }
                Ok(bytes)
            }
        }
    }

    fn state_of(&self, path: &VPath, node: &Node) -> Result<State, FsError> {
        Ok(match node {
            Node::Absent => State::Absent,
            Node::File { content, meta } => {
                let bytes = self.content(path, content)?;
                State::file(&bytes, meta.mode, meta.uid, meta.gid)
            }
            Node::Dir { meta, .. } => State::Dir {
                mode: meta.mode,
                uid: meta.uid,
                gid: meta.gid,
            },
            Node::Symlink { target, meta } => State::Symlink {
                target: target.clone(),
                uid: meta.uid,
                gid: meta.gid,
            },
            Node::Other { .. } => State::Other,
        })
    }

    // ---- reads ------------------------------------------------------------

    pub fn read(&self, path: &VPath) -> Result<Arc<Vec<u8>>, FsError> {
        let real = self.resolve(path, true)?;
        match self.lookup(&real)? {
            Node::File { meta, .. } if meta.nlink > 1 => {
                Err(denied(path, disk::hard_links(meta.nlink)))
            }
            Node::File { content, .. } => self.content(path, &content),
            Node::Dir { .. } => Err(invalid(path, "is a directory")),
            Node::Absent => Err(not_found(path)),
            Node::Symlink { .. } | Node::Other { .. } => Err(denied(path, "is not a regular file")),
        }
    }

    /// Metadata, following a final symlink when `follow`.
    pub fn metadata(&self, path: &VPath, follow: bool) -> Result<Meta, FsError> {
        let real = self.resolve(path, follow)?;
        match self.lookup(&real)? {
            Node::File { meta, .. } if meta.nlink > 1 => {
                Err(denied(path, disk::hard_links(meta.nlink)))
            }
            node => node.meta().ok_or_else(|| not_found(path)),
        }
    }

    pub fn read_link(&self, path: &VPath) -> Result<String, FsError> {
        let real = self.resolve(path, false)?;
        match self.lookup(&real)? {
            Node::Symlink { target, .. } => Ok(target),
            Node::Absent => Err(not_found(path)),
            _ => Err(invalid(path, "is not a symlink")),
        }
    }

    /// The entries of a directory, sorted by name.
    pub fn list_dir(&self, path: &VPath) -> Result<Vec<(String, Kind)>, FsError> {
        let real = self.resolve(path, true)?;
        let source = match self.lookup(&real)? {
            Node::Dir { source, .. } => source,
            Node::Absent => return Err(not_found(path)),
            _ => return Err(invalid(path, "is not a directory")),
        };
        self.children(&real, source.as_ref(), path)
    }

    fn children(
        &self,
        real: &VPath,
        source: Option<&VPath>,
        shown: &VPath,
    ) -> Result<Vec<(String, Kind)>, FsError> {
        let mut entries: BTreeMap<String, Kind> = BTreeMap::new();
        if let Some(src) = source {
            let grant = self
                .grants
                .find(src)
                .ok_or_else(|| denied(shown, "outside the grants"))?;
            let listed = disk::locate(grant, src)
                .and_then(|loc| loc.read_dir(&mut || self.until.check()))
                .map_err(|e| match self.until.stop() {
                    Some(stop) => stop,
                    None => io_error(shown, e),
                })?;
            for (name, kind) in listed {
                entries.insert(name.map_err(|bytes| not_utf8(shown, &bytes))?, kind);
            }
        }
        for (p, node) in self.descendants(real) {
            if p.parent().as_ref() != Some(real) {
                continue;
            }
            let name = p.file_name().to_string();
            match node.meta() {
                None => {
                    entries.remove(&name);
                }
                Some(m) => {
                    entries.insert(name, m.kind);
                }
            }
        }
        Ok(entries.into_iter().collect())
    }

    /// Overlay entries strictly below `dir`.
    fn descendants<'a>(&'a self, dir: &VPath) -> impl Iterator<Item = (&'a VPath, &'a Node)> + 'a {
        // Keys below `dir` all start with "dir/" and are contiguous in the
        // map's string order ("dir-x" sorts before "dir/", so start there).
        let prefix = if dir.is_root() {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(VPath::range_bound(prefix.clone())..)
            .take_while(move |(p, _)| p.as_str().starts_with(&prefix))
            .filter(|(p, _)| !p.is_root())
    }

    // ---- mutations --------------------------------------------------------

    fn writable(&self, path: &VPath) -> Result<(), FsError> {
        if let Some(why) = self.read_only {
            return Err(denied(path, why));
        }
        let grant = self
            .grants
            .find(path)
            .ok_or_else(|| denied(path, "outside the grants"))?;
        if grant.access != Access::ReadWrite {
            return Err(denied(path, format!("{} is granted read-only", grant.path)));
        }
        if *path == grant.path {
            return Err(denied(
                path,
                "the granted directory itself cannot be changed",
            ));
        }
        if let Some(m) = self.grants.mounted_at_or_above(path) {
            return Err(denied(
                path,
                format!(
                    "{m} is a mount point inside the grant (a bind mount or another file system); grant it on its own"
                ),
            ));
        }
        if let Some(link) = self.grants.names_a_grant(path) {
            return Err(denied(
                path,
                format!("a grant was named through the symlink {link}, which cannot be changed"),
            ));
        }
        Ok(())
    }

    fn require_parent_dir(&self, path: &VPath, shown: &VPath) -> Result<(), FsError> {
        let parent = path.parent().unwrap_or_else(VPath::root);
        match self.lookup(&parent)? {
            Node::Dir { .. } => Ok(()),
            _ => Err(FsError::NotFound(format!(
                "{shown}: the parent directory does not exist"
            ))),
        }
    }

    fn not_hard_linked(path: &VPath, node: &Node) -> Result<(), FsError> {
        match node {
            Node::File { meta, .. } if meta.nlink > 1 => {
                Err(denied(path, disk::hard_links(meta.nlink)))
            }
            Node::Other { .. } => Err(denied(path, "is not a regular file, directory or symlink")),
            _ => Ok(()),
        }
    }

    fn push(&mut self, op: Op, before: State) {
        self.plan.effects.push(Effect {
            op,
            before,
            before_to: None,
            before_content: None,
            before_to_content: None,
            before_identity: None,
            link_led_out: None,
        });
    }

    /// The state of `node` at `path`, with the content when it is a file.
    fn image_of(&self, path: &VPath, node: &Node) -> Result<Image, FsError> {
        match node {
            Node::File { content, meta } => {
                let bytes = self.content(path, content)?;
                Ok((
                    State::file(&bytes, meta.mode, meta.uid, meta.gid),
                    Some(bytes),
                ))
            }
            other => Ok((self.state_of(path, other)?, None)),
        }
    }

    /// The metadata of something new at `path`. In a set-group-ID
    /// directory it gets the directory's group, and a new directory the
    /// set-group-ID bit too, as the kernel gives them.
    fn new_meta(&self, kind: Kind, mode: u32, size: u64, path: &VPath) -> Meta {
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let setgid_parent = path
            .parent()
            .and_then(|p| self.lookup(&p).ok())
            .and_then(|n| n.meta())
            .filter(|m| m.kind == Kind::Dir && m.mode & 0o2000 != 0);
        let (mode, gid) = match setgid_parent {
            Some(p) if kind == Kind::Dir => (mode | 0o2000, p.gid),
            Some(p) => (mode, p.gid),
            None => (mode, self.gid),
        };
        Meta {
            kind,
            size,
            mode,
            uid: self.uid,
            gid,
            mtime,
            nlink: 1,
        }
    }

    /// For a symlink at `path`: whether it leads outside the read-write
    /// grants now.
    fn link_led_out(&self, path: &VPath, node: &Node) -> Option<bool> {
        match node {
            Node::Symlink { target, .. } => Some(self.escape(path, target).is_some()),
            _ => None,
        }
    }

    /// Replaces (or creates) a file.
    pub fn write(&mut self, shown: &VPath, content: Vec<u8>) -> Result<(), FsError> {
        self.put_file(shown, Arc::new(content), None)
    }

    /// For rollback: puts a file back exactly as it was — content, mode,
    /// owner and modification time — as one effect. (Files put back alike
    /// share their content.)
    pub fn restore_file(
        &mut self,
        shown: &VPath,
        content: Arc<Vec<u8>>,
        exact: Exact,
    ) -> Result<(), FsError> {
        self.put_file(shown, content, Some(exact))
    }

    fn put_file(
        &mut self,
        shown: &VPath,
        content: Arc<Vec<u8>>,
        exact: Option<Exact>,
    ) -> Result<(), FsError> {
        let path = self.resolve(shown, false)?;
        self.writable(&path)?;
        self.require_parent_dir(&path, shown)?;
        let existing = self.lookup(&path)?;
        let (before, before_content, meta) = match &existing {
            Node::Absent => (
                State::Absent,
                None,
                self.new_meta(Kind::File, 0o644, 0, &path),
            ),
            Node::File { content: old, meta } => {
                Self::not_hard_linked(shown, &existing)?;
                let old = self.content(shown, old)?;
                let same_meta =
                    exact.is_none_or(|e| (e.mode, e.uid, e.gid) == (meta.mode, meta.uid, meta.gid));
                if *old == *content && same_meta {
                    self.plan.unchanged += 1;
                    return Ok(());
                }
                (
                    State::file(&old, meta.mode, meta.uid, meta.gid),
                    Some(old),
                    *meta,
                )
            }
            Node::Dir { .. } => return Err(invalid(shown, "is a directory")),
            Node::Symlink { .. } => {
                return Err(denied(
                    shown,
                    "is a symlink; write to the file it points to instead",
                ));
            }
            Node::Other { .. } => return Err(denied(shown, "is not a regular file")),
        };
        self.plan_bytes += content.len() as u64;
        if self.plan_bytes > self.limits.max_plan_bytes {
            return Err(FsError::PlanLimit(format!(
                "the planned content exceeds {} bytes",
                self.limits.max_plan_bytes
            )));
        }
        let mut meta = Meta {
            size: content.len() as u64,
            nlink: 1,
            ..meta
        };
        if let Some(e) = exact {
            (meta.mode, meta.uid, meta.gid) = (e.mode, e.uid, e.gid);
            if let Some((secs, _)) = e.mtime {
                meta.mtime = secs;
            }
        }
        let may_merge = self.plan.effects.len() > self.merge_floor;
        match self.plan.effects.last_mut() {
            // Consecutive writes to one file are one effect.
            Some(Effect {
                op:
                    Op::Write {
                        path: p,
                        content: c,
                        ..
                    },
                ..
            }) if *p == path && exact.is_none() && may_merge => *c = content.clone(),
            _ => self.plan.effects.push(Effect {
                op: Op::Write {
                    path: path.clone(),
                    content: content.clone(),
                    mode: meta.mode,
                    uid: meta.uid,
                    gid: meta.gid,
                    mtime: exact.and_then(|e| e.mtime),
                },
                before,
                before_to: None,
                before_content,
                before_to_content: None,
                before_identity: disk_identity(&existing),
                link_led_out: None,
            }),
        }
        self.nodes.insert(
            path,
            Node::File {
                content: Content::Mem(content),
                meta,
            },
        );
        Ok(())
    }

    pub fn create_dir(&mut self, shown: &VPath) -> Result<(), FsError> {
        let path = self.resolve(shown, false)?;
        self.writable(&path)?;
        self.require_parent_dir(&path, shown)?;
        if !matches!(self.lookup(&path)?, Node::Absent) {
            return Err(FsError::AlreadyExists(shown.to_string()));
        }
        let meta = self.new_meta(Kind::Dir, 0o755, 0, &path);
        self.push(
            Op::CreateDir {
                path: path.clone(),
                mode: meta.mode,
            },
            State::Absent,
        );
        self.nodes.insert(path, Node::Dir { source: None, meta });
        Ok(())
    }

    pub fn remove_file(&mut self, shown: &VPath) -> Result<(), FsError> {
        let path = self.resolve(shown, false)?;
        self.writable(&path)?;
        let node = self.lookup(&path)?;
        match node {
            Node::Absent => return Err(not_found(shown)),
            Node::Dir { .. } => return Err(invalid(shown, "is a directory; use remove-dir")),
            _ => Self::not_hard_linked(shown, &node)?,
        }
        let (before, content) = self.image_of(shown, &node)?;
        let led_out = self.link_led_out(&path, &node);
        self.push(Op::RemoveFile { path: path.clone() }, before);
        if let Some(last) = self.plan.effects.last_mut() {
            last.before_content = content;
            last.before_identity = disk_identity(&node);
            last.link_led_out = led_out;
        }
        self.nodes.insert(path, Node::Absent);
        Ok(())
    }

    pub fn remove_dir(&mut self, shown: &VPath) -> Result<(), FsError> {
        let path = self.resolve(shown, false)?;
        self.writable(&path)?;
        let node = self.lookup(&path)?;
        let Node::Dir { source, .. } = &node else {
            return Err(match node {
                Node::Absent => not_found(shown),
                _ => invalid(shown, "is not a directory"),
            });
        };
        if !self.children(&path, source.as_ref(), shown)?.is_empty() {
            return Err(invalid(shown, "the directory is not empty"));
        }
        let before = self.state_of(shown, &node)?;
        self.push(Op::RemoveDir { path: path.clone() }, before);
        let below: Vec<VPath> = self.descendants(&path).map(|(p, _)| p.clone()).collect();
        for p in below {
            self.nodes.remove(&p);
        }
        self.nodes.insert(path, Node::Absent);
        Ok(())
    }

    pub fn rename(&mut self, shown_from: &VPath, shown_to: &VPath) -> Result<(), FsError> {
        let from = self.resolve(shown_from, false)?;
        let to = self.resolve(shown_to, false)?;
        self.writable(&from)?;
        self.writable(&to)?;
        // Renaming a directory above a grant would move the grant: the
        // read-only one nested in a read-write one would then be written
        // through its new name.
        for (path, shown) in [(&from, shown_from), (&to, shown_to)] {
            if let Some(m) = self.grants.mount_at_or_below(path) {
                return Err(denied(
                    shown,
                    format!("contains the mount point {m}; it cannot be renamed"),
                ));
            }
            if let Some(g) = self.grants.is_grant_or_above(path) {
                return Err(denied(
                    shown,
                    format!(
                        "contains the granted directory {}; a directory above a grant cannot be renamed",
                        g.path
                    ),
                ));
            }
        }
        let src = self.lookup(&from)?;
        if matches!(src, Node::Absent) {
            return Err(not_found(shown_from));
        }
        Self::not_hard_linked(shown_from, &src)?;
        if from == to {
            self.plan.unchanged += 1;
            return Ok(());
        }
        if to.starts_with(&from) {
            return Err(invalid(
                shown_to,
                format!("cannot move {shown_from} into itself"),
            ));
        }
        self.require_parent_dir(&to, shown_to)?;
        let dst = self.lookup(&to)?;
        Self::not_hard_linked(shown_to, &dst)?;
        match (&src, &dst) {
            (_, Node::Absent) => {}
            (Node::Dir { .. }, Node::Dir { source, .. })
                if !self.children(&to, source.as_ref(), shown_to)?.is_empty() =>
            {
                return Err(invalid(shown_to, "the destination directory is not empty"));
            }
            (Node::Dir { .. }, Node::Dir { .. }) => {}
            (Node::Dir { .. }, _) => {
                return Err(invalid(shown_to, "the destination is not a directory"));
            }
            (_, Node::Dir { .. }) => {
                return Err(invalid(shown_to, "the destination is a directory"));
            }
            _ => {}
        }
        let before = self.state_of(shown_from, &src)?;
        let (before_to, before_to_content) = self.image_of(shown_to, &dst)?;
        self.plan.effects.push(Effect {
            op: Op::Rename {
                from: from.clone(),
                to: to.clone(),
            },
            before,
            before_to: Some(before_to),
            before_content: None,
            before_to_content,
            before_identity: disk_identity(&src),
            link_led_out: self.link_led_out(&from, &src),
        });
        let replaced: Vec<VPath> = self.descendants(&to).map(|(p, _)| p.clone()).collect();
        for p in replaced {
            self.nodes.remove(&p);
        }
        let moved: Vec<(VPath, Node)> = self
            .descendants(&from)
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        for (p, node) in moved {
            self.nodes.remove(&p);
            self.nodes.insert(p.rebase(&from, &to), node);
        }
        self.nodes.insert(to, src);
        self.nodes.insert(from, Node::Absent);
        Ok(())
    }

    pub fn set_mode(&mut self, shown: &VPath, mode: u32) -> Result<(), FsError> {
        if mode & !0o7777 != 0 {
            return Err(invalid(
                shown,
                format!("mode {mode:o} has bits beyond 0o7777"),
            ));
        }
        let path = self.resolve(shown, true)?;
        self.writable(&path)?;
        let node = self.lookup(&path)?;
        Self::not_hard_linked(shown, &node)?;
        let Some(meta) = node.meta() else {
            return Err(not_found(shown));
        };
        if meta.mode == mode {
            self.plan.unchanged += 1;
            return Ok(());
        }
        let before = self.state_of(shown, &node)?;
        self.push(
            Op::SetMode {
                path: path.clone(),
                mode,
            },
            before,
        );
        self.nodes
            .insert(path, node.with_meta(Meta { mode, ..meta }));
        Ok(())
    }

    pub fn set_owner(&mut self, shown: &VPath, uid: u32, gid: u32) -> Result<(), FsError> {
        if uid == u32::MAX || gid == u32::MAX {
            return Err(invalid(shown, "uid and gid must not be -1"));
        }
        let path = self.resolve(shown, false)?;
        self.writable(&path)?;
        let node = self.lookup(&path)?;
        Self::not_hard_linked(shown, &node)?;
        let Some(meta) = node.meta() else {
            return Err(not_found(shown));
        };
        if (meta.uid, meta.gid) == (uid, gid) {
            self.plan.unchanged += 1;
            return Ok(());
        }
        let before = self.state_of(shown, &node)?;
        self.push(
            Op::SetOwner {
                path: path.clone(),
                uid,
                gid,
            },
            before,
        );
        // The kernel drops set-user-ID (and set-group-ID of a group-
        // executable file) when a regular file changes owner.
        let mode = match meta.kind {
            Kind::File => crate::plan::mode_after_chown(meta.mode),
            _ => meta.mode,
        };
        self.nodes.insert(
            path,
            node.with_meta(Meta {
                uid,
                gid,
                mode,
                ..meta
            }),
        );
        Ok(())
    }

    /// Creates a symlink at `link`. It must lead (by the kernel's rules, in
    /// the view so far) inside the read-write grants: a fix cannot plant a
    /// pointer for someone else to follow out of the sandbox. The whole
    /// plan is checked again once `apply` returns ([`Overlay::escapes`]):
    /// a later rename can change where a link leads.
    pub fn symlink(&mut self, target: &str, shown: &VPath) -> Result<(), FsError> {
        if target.is_empty() || target.contains('\0') || target.len() > MAX_PATH {
            return Err(invalid(
                shown,
                "the symlink target is empty, too long or contains NUL",
            ));
        }
        let link = self.resolve(shown, false)?;
        self.writable(&link)?;
        self.require_parent_dir(&link, shown)?;
        if !matches!(self.lookup(&link)?, Node::Absent) {
            return Err(FsError::AlreadyExists(shown.to_string()));
        }
        if target.split('/').any(|n| n.len() > MAX_NAME) {
            return Err(invalid(shown, "the symlink target has an over-long name"));
        }
        if !self.restoring
            && let Some(why) = self.escape(&link, target)
        {
            return Err(denied(shown, why));
        }
        self.push(
            Op::Symlink {
                target: target.to_string(),
                link: link.clone(),
            },
            State::Absent,
        );
        let meta = self.new_meta(Kind::Symlink, 0o777, target.len() as u64, &link);
        self.nodes.insert(
            link,
            Node::Symlink {
                target: target.to_string(),
                meta,
            },
        );
        Ok(())
    }
}

/// Below this many paths, looking ahead on a second thread costs more than
/// it saves.
const LOOK_AHEAD_FROM: usize = 256;

/// What is on disk at the canonical `phys`, looked at through `cache`.
fn disk_node(grants: &Grants, phys: &VPath, cache: &mut disk::DirCache) -> Result<Node, FsError> {
    let grant = grants
        .find(phys)
        .ok_or_else(|| denied(phys, "outside the granted directories"))?;
    let stat = cache.locate(grant, phys).and_then(|loc| {
        let st = loc.lstat()?;
        let target = match st {
            Some(s) if s.kind == Kind::Symlink => Some(loc.read_link()?),
            _ => None,
        };
        Ok(st.map(|s| (s, target)))
    });
    let (st, target) = match stat {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(Node::Absent),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Node::Absent);
        }
        Err(e) => return Err(io_error(phys, e)),
    };
    let meta = Meta {
        kind: st.kind,
        size: st.size,
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        mtime: st.mtime,
        nlink: st.nlink,
    };
    Ok(match st.kind {
        Kind::File => Node::File {
            content: Content::Disk(phys.clone(), st.identity),
            meta,
        },
        Kind::Dir => Node::Dir {
            source: Some(phys.clone()),
            meta,
        },
        Kind::Symlink => Node::Symlink {
            target: target.unwrap_or_default(),
            meta,
        },
        Kind::Other => Node::Other { meta },
    })
}
