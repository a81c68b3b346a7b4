//! Containment of what a plan leaves behind, checked on the whole plan.
//!
//! A check made when a symlink is created is not enough: a later rename of
//! the link, or of any directory above it, changes what its relative target
//! means; a `..` after a component that is itself a symlink climbs from
//! where that symlink leads, not from where it stands. And the host's own
//! resolver refusing to follow such a link is not the bar: every other
//! process on the host will follow it.
//!
//! So once `apply` has returned, every symlink the plan created or moved
//! (itself, or with a directory above it) is followed in the final tree the
//! way the kernel would follow it: one component at a time, `..` taking the
//! parent of where the walk *is*, every symlink on the way followed (on disk
//! or planned). It must end inside a read-write grant. Outside the grants
//! the walk may only pass down to a grant or follow a symlink; there, where
//! no plan can change anything, it looks at the disk (metadata and link
//! targets only, never content), as the kernel would.
//!
//! The same pass looks at every changed path's directories by identity: a
//! read-only grant reached under another name (a bind mount inside a
//! read-write grant) is refused here, so the dry-run shows it; the commit
//! refuses it again as it walks ([`crate::disk::locate_for_change`]).

use std::collections::BTreeMap;

use super::{MAX_NAME, MAX_SYMLINKS, Node, Overlay};
use crate::disk::Kind;
use crate::grants::{Access, VPath};
use crate::plan::{Op, State};

/// Queues `target`'s components as written (an absolute one from `/`).
fn queue_literal(cur: &mut VPath, todo: &mut Vec<String>, target: &str) {
    if target.starts_with('/') {
        *cur = VPath::root();
    }
    todo.extend(target.split('/').rev().map(String::from));
}

/// What the kernel finds at `path`, outside every grant (so no plan can
/// change it): its metadata and, for a symlink, its target. `None` when it
/// cannot be looked at.
fn outside_node(path: &VPath) -> Option<Node> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(path.as_str()) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(Node::Absent),
        Err(_) => return None,
    };
    let ft = meta.file_type();
    let m = super::Meta {
        kind: if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else {
            Kind::Other
        },
        size: meta.size(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        nlink: meta.nlink(),
    };
    Some(if ft.is_symlink() {
        Node::Symlink {
            target: std::fs::read_link(path.as_str())
                .ok()?
                .to_str()?
                .to_string(),
            meta: m,
        }
    } else if ft.is_dir() {
        Node::Dir {
            source: None,
            meta: m,
        }
    } else {
        Node::Other { meta: m }
    })
}

/// Entries walked in moved directories between two looks at `stop`.
const STOP_EVERY: usize = 1024;

/// Something the whole plan would do that no single call showed: a symlink
/// leading out of the read-write grants, a read-only grant changed under
/// another name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escape {
    /// The link (where it is after the whole plan), or the changed path.
    pub path: VPath,
    /// The link's target (none for a changed path).
    pub target: Option<String>,
    /// What is wrong, said for the operator.
    pub why: String,
}

/// Where a symlink leads, by the kernel's rules.
#[derive(Debug, PartialEq, Eq)]
pub enum Leads {
    /// To this path inside a grant (which may not exist yet).
    To(VPath),
    /// Nowhere: a directory on the way does not exist or is not one.
    Dangling,
    /// Nowhere: more than the kernel's 40 symlinks on the way.
    Loop,
    /// Outside every grant, at this path.
    Outside(VPath),
}

/// Why a plan's containment could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the run was stopped while its plan was being checked")]
    Stopped,
    #[error("{0}")]
    Fs(#[from] super::FsError),
}

impl Overlay {
    /// Where a symlink at `link` with `target` leads in the current view,
    /// walked as the kernel would walk it. Inside a grant the view is the
    /// plan's; outside every grant, where no plan can change anything, it is
    /// the disk's (metadata only: what the kernel will find there). An
    /// absolute target is taken as written: an operator's spelling of a
    /// grant through a symlink is followed through that symlink, which a
    /// plan may have changed.
    pub fn leads(&self, link: &VPath, target: &str) -> Leads {
        let mut cur = link.parent().unwrap_or_else(VPath::root);
        let mut todo: Vec<String> = Vec::new();
        queue_literal(&mut cur, &mut todo, target);
        let mut links = 0;
        while let Some(name) = todo.pop() {
            match name.as_str() {
                "" | "." => continue,
                ".." => {
                    cur = cur.parent().unwrap_or_else(VPath::root);
                    continue;
                }
                n if n.len() > MAX_NAME => return Leads::Dangling,
                _ => {}
            }
            cur = cur.join(&name);
            let last = todo.iter().all(|n| n.is_empty() || n == ".");
            let node = match self.grants.find(&cur) {
                Some(_) => match self.lookup(&cur) {
                    Ok(node) => node,
                    // A path the host cannot look at counts as outside: it
                    // is not known to stay in.
                    Err(_) => return Leads::Outside(cur),
                },
                // Outside every grant the kernel's walk may only pass on
                // its way down to a grant, or follow a symlink there (the
                // plan cannot change either); anything else, there or not,
                // is outside.
                None => match outside_node(&cur) {
                    Some(node @ Node::Symlink { .. }) => node,
                    Some(node @ Node::Dir { .. }) if self.grants.is_above_a_grant(&cur) => node,
                    _ => return Leads::Outside(cur),
                },
            };
            match node {
                Node::Symlink { target, .. } => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Leads::Loop;
                    }
                    cur = cur.parent().unwrap_or_else(VPath::root);
                    queue_literal(&mut cur, &mut todo, &target);
                }
                Node::Dir { .. } => {}
                _ if last => {}
                _ => return Leads::Dangling,
            }
        }
        match self.grants.find(&cur) {
            Some(_) => Leads::To(cur),
            None => Leads::Outside(cur),
        }
    }

    /// Why a symlink at `link` to `target` may not stay in the final tree,
    /// if it may not.
    pub fn escape(&self, link: &VPath, target: &str) -> Option<String> {
        match self.leads(link, target) {
            Leads::Outside(p) => Some(format!(
                "{link} -> {target} would lead to {p}, outside the granted directories"
            )),
            Leads::To(p) => match self.grants.find(&p) {
                Some(g) if g.access == Access::ReadOnly => Some(format!(
                    "{link} -> {target} would lead to {p}, inside the read-only grant {}",
                    g.path
                )),
                _ => None,
            },
            Leads::Dangling | Leads::Loop => None,
        }
    }

    /// Every symlink the plan created or moved that would lead outside the
    /// read-write grants once the whole plan is applied. `stop` is asked
    /// now and then while moved directories are walked.
    pub fn escapes(&self, stop: &dyn Fn() -> bool) -> Result<Vec<Escape>, CheckError> {
        let mut links: BTreeMap<VPath, String> = BTreeMap::new();
        let mut walked = 0usize;
        for (path, node) in &self.nodes {
            match node {
                Node::Symlink { target, .. } if !self.is_in_place(path, target) => {
                    links.insert(path.clone(), target.clone());
                }
                // A directory that moved carries its symlinks with it.
                Node::Dir {
                    source: Some(src), ..
                } if src != path => {
                    self.symlinks_below(path, &mut links, &mut walked, stop, true)?;
                }
                _ => {}
            }
        }
        let mut found: Vec<Escape> = links
            .iter()
            .filter_map(|(path, target)| {
                // A mount inside the grant can show the link's directory
                // under a second name at another depth, where its `..`
                // means something else.
                if let Some(g) = self.grants.find(path)
                    && self.grants.has_mounts_inside(g)
                {
                    return Some(Escape {
                        path: path.clone(),
                        target: Some(target.clone()),
                        why: format!(
                            "{path} -> {target}: the grant {} holds a mount point, through which a symlink in it can lead elsewhere; grant the mounted directory on its own",
                            g.path
                        ),
                    });
                }
                let why = self.escape(path, target)?;
                Some(Escape {
                    path: path.clone(),
                    target: Some(target.clone()),
                    why,
                })
            })
            .collect();
        if self.changes_what_links_traverse() {
            found.extend(self.links_led_astray(&links, &mut walked, stop)?);
        }
        found.extend(self.read_only_by_identity(stop)?);
        Ok(found)
    }

    /// True when the plan changes what a path walk can pass through: it
    /// creates or moves a symlink or a directory. (A file cannot be walked
    /// through; a write, a chmod or a removal leaves every walk's way as it
    /// was or cut short.)
    fn changes_what_links_traverse(&self) -> bool {
        self.plan.effects.iter().any(|e| match &e.op {
            Op::Symlink { .. } | Op::CreateDir { .. } => true,
            Op::Rename { .. } => matches!(e.before, State::Dir { .. } | State::Symlink { .. }),
            _ => false,
        })
    }

    /// The symlinks already in the grants, not moved by the plan, that led
    /// inside (or nowhere) before it and would lead outside after it: a directory made where a dangling link's walk was cut, a
    /// symlink put where its walk passes. Found by walking the grants in
    /// the final view, only for plans that change what a walk
    /// can pass through.
    fn links_led_astray(
        &self,
        moved: &BTreeMap<VPath, String>,
        walked: &mut usize,
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<Escape>, CheckError> {
        let mut all = BTreeMap::new();
        // Read-only grants too: a link there is not the plan's, but the
        // plan may still build on its way.
        for g in self.grants.iter() {
            self.symlinks_below(&g.path, &mut all, walked, stop, false)?;
        }
        let before = Overlay::new(self.grants.clone(), self.limits);
        Ok(all
            .into_iter()
            .filter(|(path, _)| !moved.contains_key(path))
            .filter_map(|(path, target)| {
                let why = self.escape(&path, &target)?;
                before.escape(&path, &target).is_none().then(|| Escape {
                    why: format!("{why}, where before the plan it did not"),
                    path,
                    target: Some(target),
                })
            })
            .collect())
    }

    /// Changed paths whose directory, or a directory above it, is a
    /// read-only grant's under another name. Only looked for when there is
    /// a read-only grant.
    fn read_only_by_identity(&self, stop: &dyn Fn() -> bool) -> Result<Vec<Escape>, CheckError> {
        let ro: Vec<_> = self
            .grants
            .iter()
            .filter(|g| g.access == Access::ReadOnly)
            .collect();
        // (A bind mount carries a read-only grant onto any file system.)
        if ro.is_empty() {
            return Ok(Vec::new());
        }
        let mut seen = std::collections::HashSet::new();
        let mut found = Vec::new();
        for (n, effect) in self.plan.effects.iter().enumerate() {
            if n % STOP_EVERY == STOP_EVERY - 1 && stop() {
                return Err(CheckError::Stopped);
            }
            for path in effect.paths() {
                let Some(phys) = self.physical(path) else {
                    continue;
                };
                let Some(grant) = self.grants.find(&phys) else {
                    continue;
                };
                if !seen.insert(phys.clone()) {
                    continue;
                }
                let forbidden = |dev, ino| {
                    ro.iter()
                        .any(|r| (r.dev, r.ino) == (dev, ino) && r.path != grant.path)
                };
                if let Err(e) = crate::disk::locate_for_change(grant, &phys, &forbidden)
                    && e.kind() == std::io::ErrorKind::PermissionDenied
                {
                    found.push(Escape {
                        path: path.clone(),
                        target: None,
                        why: format!("{path}: {e}"),
                    });
                }
            }
        }
        Ok(found)
    }

    /// Where `path` of the final view is (or would be made) on the disk:
    /// its own directory's source for a directory, else its parent's, with
    /// directories the plan creates looked through.
    pub fn physical(&self, path: &VPath) -> Option<VPath> {
        if let Ok(Node::Dir {
            source: Some(s), ..
        }) = self.lookup(path)
        {
            return Some(s);
        }
        let parent = path.parent()?;
        match self.lookup(&parent).ok()? {
            Node::Dir {
                source: Some(s), ..
            } => Some(s.join(path.file_name())),
            Node::Dir { source: None, .. } => self.physical(&parent),
            _ => None,
        }
    }

    /// True when the symlink at `path` is one the disk already has there,
    /// unmoved: the plan did not change where it stands.
    fn is_in_place(&self, path: &VPath, target: &str) -> bool {
        let moved = std::iter::successors(path.parent(), VPath::parent).any(|a| {
            matches!(self.nodes.get(&a),
                Some(Node::Dir { source, .. }) if source.as_ref() != Some(&a))
                || matches!(self.nodes.get(&a), Some(Node::Absent))
        });
        !moved
            && matches!(self.disk_node(path, &mut crate::disk::DirCache::default()),
                Ok(Node::Symlink { target: t, .. }) if t == target)
    }

    /// Adds the symlinks in the final tree below `dir` to `links`. With
    /// `strict`, a directory that cannot be listed (a name that is not
    /// UTF-8) fails the check; without, it is passed over — for the links
    /// already in the tree, where one such name anywhere must not refuse
    /// every plan that makes a directory.
    fn symlinks_below(
        &self,
        dir: &VPath,
        links: &mut BTreeMap<VPath, String>,
        walked: &mut usize,
        stop: &dyn Fn() -> bool,
        strict: bool,
    ) -> Result<(), CheckError> {
        let Node::Dir { source, .. } = self.lookup(dir)? else {
            return Ok(());
        };
        let children = match self.children(dir, source.as_ref(), dir) {
            Ok(c) => c,
            Err(_) if !strict => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for (name, kind) in children {
            *walked += 1;
            if (*walked).is_multiple_of(STOP_EVERY) && stop() {
                return Err(CheckError::Stopped);
            }
            // Only links and directories are looked at again: a file can
            // neither lead anywhere nor hold a link.
            if !matches!(kind, Kind::Symlink | Kind::Dir) {
                continue;
            }
            let path = dir.join(&name);
            match self.lookup(&path)? {
                Node::Symlink { target, .. } => {
                    links.insert(path, target);
                }
                Node::Dir { .. } => self.symlinks_below(&path, links, walked, stop, strict)?,
                _ => {}
            }
        }
        Ok(())
    }
}
