//! The only code that touches the real file system under a grant.
//!
//! Every access starts at a grant's directory handle and walks down one
//! component at a time with `O_NOFOLLOW | O_DIRECTORY`, so the kernel never
//! follows a symlink for us: a directory swapped for a symlink mid-way makes
//! the walk fail instead of leading it elsewhere. The last component is then
//! used with a `*at` call relative to its parent's descriptor. Names are
//! validated [`VPath`] components, never `..`.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::grants::{Grant, VPath};
use crate::plan::State;

/// A name in a directory: UTF-8, or the bytes of one that is not.
pub type Name = Result<String, Vec<u8>>;

/// A name that is not UTF-8, shown with its other bytes as `\xNN`.
pub fn escaped(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.extend(chunk.valid().chars().flat_map(char::escape_default));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// What kind of thing a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// The metadata of one path, not following a final symlink.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub kind: Kind,
    pub size: u64,
    /// Permission bits only (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub nlink: u64,
    /// What changes whenever the file does (used to skip re-reading it).
    pub identity: Identity,
}

/// Device, inode, size, mtime and ctime: if none changed, the content did
/// not either (ctime cannot be set from user space).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, u64),
    ctime: (i64, u64),
}

impl Identity {
    /// The same file (device and inode), whatever changed in it.
    fn same_file(self, other: Identity) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

impl Stat {
    // The stat field types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    fn from_rustix(st: &rustix::fs::Stat) -> Stat {
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        };
        Stat {
            kind,
            size: st.st_size as u64,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
            nlink: st.st_nlink,
            identity: Identity {
                dev: st.st_dev,
                ino: st.st_ino,
                size: st.st_size as u64,
                mtime: (st.st_mtime, st.st_mtime_nsec as u64),
                ctime: (st.st_ctime, st.st_ctime_nsec as u64),
            },
        }
    }
}

/// A directory descriptor: the grant's own handle (or one a [`DirCache`]
/// holds), or one opened on the way down from it.
pub enum DirFd<'g> {
    Grant(BorrowedFd<'g>),
    Opened(OwnedFd),
}

impl AsFd for DirFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DirFd::Grant(fd) => fd.as_fd(),
            DirFd::Opened(fd) => fd.as_fd(),
        }
    }
}

/// A location under a grant: the grant's root itself, or a name in a
/// directory reached by a no-follow walk.
pub enum Loc<'g> {
    Root(BorrowedFd<'g>),
    At(DirFd<'g>, String),
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Walks from `grant` to `path` (which the grant must cover).
pub fn locate<'g>(grant: &'g Grant, path: &VPath) -> io::Result<Loc<'g>> {
    let root = grant.dir.as_fd();
    let rel = path.relative_to(&grant.path);
    if rel == "." {
        return Ok(Loc::Root(root));
    }
    let mut names: Vec<&str> = rel.split('/').collect();
    let last = names.pop().expect("a relative path has a component");
    let mut dir = DirFd::Grant(root);
    for name in names {
        dir = DirFd::Opened(rustix::fs::openat(&dir, name, DIR_FLAGS, Mode::empty())?);
    }
    Ok(Loc::At(dir, last.to_string()))
}

/// Like [`locate`], for a change: refuses when a directory on the way
/// (the grant's own excepted) is `forbidden` by device and inode — a
/// read-only grant reached under another name, as through a bind mount.
pub fn locate_for_change<'g>(
    grant: &'g Grant,
    path: &VPath,
    forbidden: &dyn Fn(u64, u64) -> bool,
) -> io::Result<Loc<'g>> {
    let rel = path.relative_to(&grant.path);
    if rel == "." {
        return Ok(Loc::Root(grant.dir.as_fd()));
    }
    let mut names: Vec<&str> = rel.split('/').collect();
    let last = names.pop().expect("a relative path has a component");
    let mut dir = DirFd::Grant(grant.dir.as_fd());
    for name in names {
        dir = DirFd::Opened(rustix::fs::openat(&dir, name, DIR_FLAGS, Mode::empty())?);
        let st = rustix::fs::fstat(&dir)?;
        #[allow(clippy::unnecessary_cast)]
        if forbidden(st.st_dev as u64, st.st_ino as u64) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a directory on the way is a read-only grant under another name",
            ));
        }
    }
    let loc = Loc::At(dir, last.to_string());
    if let Some(st) = loc.lstat()?
        && st.kind == Kind::Dir
        && forbidden(st.identity.dev, st.identity.ino)
    {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "it is a read-only grant under another name",
        ));
    }
    Ok(loc)
}

/// Every this many levels, a [`DirCache`] keeps a directory's descriptor.
const KEEP_EVERY: usize = 32;

/// The directories of one walk, kept open so that resolving a path one
/// component at a time opens each directory once, not once for every
/// component below it: the cost of a resolution grows with the path's
/// length, not with its square. Going back up (`..`, a symlink's target)
/// restarts from the nearest kept descriptor, at most [`KEEP_EVERY`] levels
/// up. Every descriptor was opened by the same no-follow walk from the
/// grant's handle as [`locate`]'s; a cache lives for one resolution.
#[derive(Default)]
pub struct DirCache {
    grant: Option<VPath>,
    /// The path below the grant (`""` for the grant itself) of the deepest
    /// kept directory.
    path: String,
    /// (depth below the grant, length of its path in `path`, descriptor):
    /// every `KEEP_EVERY`th level and the deepest.
    fds: Vec<(usize, usize, OwnedFd)>,
}

impl DirCache {
    /// Like [`locate`], reusing the directories this cache holds. Going
    /// down from the last directory costs one `openat`, whatever the depth.
    pub fn locate<'c>(&'c mut self, grant: &'c Grant, path: &VPath) -> io::Result<Loc<'c>> {
        let root = grant.dir.as_fd();
        let rel = path.relative_to(&grant.path);
        if rel == "." {
            return Ok(Loc::Root(root));
        }
        let (parent, last) = match rel.rfind('/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => ("", rel),
        };
        if self.grant.as_ref() != Some(&grant.path) {
            *self = DirCache {
                grant: Some(grant.path.clone()),
                ..DirCache::default()
            };
        }
        // Keep the directories on the way to `parent`.
        let leads_to_parent = |len: usize| {
            parent.len() >= len
                && parent.as_bytes()[..len] == self.path.as_bytes()[..len]
                && (parent.len() == len || parent.as_bytes()[len] == b'/')
        };
        let mut keep = self.fds.len();
        while keep > 0 && !leads_to_parent(self.fds[keep - 1].1) {
            keep -= 1;
        }
        self.fds.truncate(keep);
        let (mut depth, len) = self.fds.last().map_or((0, 0), |(d, l, _)| (*d, *l));
        self.path.truncate(len);
        let rest = parent[len..].trim_start_matches('/');
        for name in rest.split('/').filter(|n| !n.is_empty()) {
            let from = self.fds.last().map_or(root, |(_, _, fd)| fd.as_fd());
            let next = rustix::fs::openat(from, name, DIR_FLAGS, Mode::empty())?;
            if self.fds.last().is_some_and(|(d, _, _)| d % KEEP_EVERY != 0) {
                self.fds.pop();
            }
            if !self.path.is_empty() {
                self.path.push('/');
            }
            self.path.push_str(name);
            depth += 1;
            self.fds.push((depth, self.path.len(), next));
        }
        let dir = match self.fds.last() {
            Some((_, _, fd)) if !parent.is_empty() => fd.as_fd(),
            _ => root,
        };
        Ok(Loc::At(DirFd::Grant(dir), last.to_string()))
    }
}

impl Loc<'_> {
    /// The metadata, or `None` when absent.
    pub fn lstat(&self) -> io::Result<Option<Stat>> {
        let st = match self {
            Loc::Root(fd) => rustix::fs::fstat(fd),
            Loc::At(dir, name) => rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW),
        };
        match st {
            Ok(st) => Ok(Some(Stat::from_rustix(&st))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn parent_fd(&self) -> BorrowedFd<'_> {
        match self {
            Loc::Root(fd) => fd.as_fd(),
            Loc::At(fd, _) => fd.as_fd(),
        }
    }

    fn name(&self) -> io::Result<&str> {
        match self {
            Loc::Root(_) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the granted directory itself cannot be changed",
            )),
            Loc::At(_, name) => Ok(name),
        }
    }

    /// Opens the regular file here without following a symlink, refusing a
    /// file with more than one hard link (its other name may lie outside
    /// every grant).
    pub fn open_file(&self) -> io::Result<(std::fs::File, Stat)> {
        let fd = self.open_nofollow()?;
        let st = Stat::from_rustix(&rustix::fs::fstat(&fd)?);
        if st.kind != Kind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        if st.nlink > 1 {
            return Err(hard_links(st.nlink));
        }
        Ok((std::fs::File::from(fd), st))
    }

    /// The whole content of the regular file here, at most `max` bytes,
    /// read in pieces of 4 MiB with `check` called between them (its error
    /// stops the read).
    pub fn read_file(
        &self,
        max: u64,
        check: &mut dyn FnMut() -> io::Result<()>,
    ) -> io::Result<Vec<u8>> {
        self.read_file_stat(max, check).map(|(bytes, _)| bytes)
    }

    /// [`Loc::read_file`], with what `fstat` said of the file opened.
    pub fn read_file_stat(
        &self,
        max: u64,
        check: &mut dyn FnMut() -> io::Result<()>,
    ) -> io::Result<(Vec<u8>, Stat)> {
        let (file, st) = self.open_file()?;
        if st.size > max {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "the file is {} bytes, more than the {max} a fix may read",
                    st.size
                ),
            ));
        }
        // One byte more than the size: the read that finds the end is the
        // one after the content, not a probe of its own.
        let mut buf = Vec::with_capacity(st.size as usize + 1);
        let mut file = file.take(max.saturating_add(1));
        loop {
            check()?;
            const PIECE: usize = 4 << 20;
            // Short of a whole piece: the end of the file (or of the limit).
            if (&mut file).take(PIECE as u64).read_to_end(&mut buf)? < PIECE {
                break;
            }
        }
        if buf.len() as u64 > max {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "the file grew past the read limit",
            ));
        }
        Ok((buf, st))
    }

    pub fn read_link(&self) -> io::Result<String> {
        let target = rustix::fs::readlinkat(self.parent_fd(), self.name()?, Vec::new())?;
        target.into_string().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "the symlink target is not UTF-8",
            )
        })
    }

    /// Opens the directory here, without following a symlink.
    pub fn open_dir(&self) -> io::Result<OwnedFd> {
        match self {
            Loc::Root(fd) => {
                rustix::fs::openat(fd, ".", DIR_FLAGS, Mode::empty()).map_err(Into::into)
            }
            Loc::At(dir, name) => {
                rustix::fs::openat(dir, name.as_str(), DIR_FLAGS, Mode::empty()).map_err(Into::into)
            }
        }
    }

    /// The names in the directory here, with their kinds. A name that is
    /// not UTF-8 (which no WIT path can address) comes back as its bytes.
    /// `check` is called every few thousand entries and stops the listing
    /// with its error.
    pub fn read_dir(
        &self,
        check: &mut dyn FnMut() -> io::Result<()>,
    ) -> io::Result<Vec<(Name, Kind)>> {
        let fd = self.open_dir()?;
        let mut out = Vec::new();
        for (n, entry) in rustix::fs::Dir::read_from(&fd)?.enumerate() {
            if n % 4096 == 4095 {
                check()?;
            }
            let entry = entry?;
            let raw = entry.file_name();
            let bytes = raw.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let kind = match entry.file_type() {
                FileType::RegularFile => Kind::File,
                FileType::Directory => Kind::Dir,
                FileType::Symlink => Kind::Symlink,
                FileType::Unknown => {
                    match rustix::fs::statat(&fd, raw, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => Stat::from_rustix(&st).kind,
                        Err(_) => continue,
                    }
                }
                _ => Kind::Other,
            };
            let name = String::from_utf8(bytes.to_vec()).map_err(|e| e.into_bytes());
            out.push((name, kind));
        }
        Ok(out)
    }

    /// The state here, read from descriptors (content hashed from the open
    /// file, not by re-resolving the path).
    pub fn state(&self) -> io::Result<State> {
        match self.lstat()? {
            Some(st) => self.state_with(&st),
            None => Ok(State::Absent),
        }
    }

    /// [`Loc::state`] given what `lstat` just said of it (a file's content
    /// streamed through a buffer and hashed, never held whole).
    pub fn state_with(&self, st: &Stat) -> io::Result<State> {
        Ok(match st.kind {
            Kind::File => {
                let (mut file, st) = self.open_file()?;
                let mut hasher = crate::digest::current().hasher();
                // No bigger than the file (a config file is small): a
                // buffer is zeroed before every use.
                let mut buf = vec![0u8; (st.size as usize).saturating_add(1).min(256 << 10)];
                let mut size = 0u64;
                loop {
                    match io::Read::read(&mut file, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            hasher.update(&buf[..n]);
                            size += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                State::File {
                    size,
                    digest: hasher.hex(),
                    mode: st.mode,
                    uid: st.uid,
                    gid: st.gid,
                }
            }
            Kind::Dir => State::Dir {
                mode: st.mode,
                uid: st.uid,
                gid: st.gid,
            },
            Kind::Symlink => State::Symlink {
                target: self.read_link()?,
                uid: st.uid,
                gid: st.gid,
            },
            Kind::Other => State::Other,
        })
    }

    /// Replaces the file here atomically: a temporary file in the same
    /// directory, written, given its mode and owner, renamed over the name.
    /// The caller syncs the file system afterwards.
    ///
    /// With `keep`, the file it replaces (a regular file of one name, at
    /// most [`KEEP_MAX`] bytes) is kept there instead of being freed: the
    /// new file is made in `keep`, where no one else can reach it, and the
    /// two are exchanged; what the exchange brought into `keep` must be the
    /// file replaced, or it is exchanged back and the replace fails. A
    /// crash leaves either the new file in `keep` and nothing changed, or
    /// the replaced file there and the new one in place.
    pub fn replace_file(
        &self,
        file: &FileSpec<'_>,
        tmp: &str,
        keep: Option<Slot<'_>>,
    ) -> io::Result<Stat> {
        let name = self.name()?;
        let dir = self.parent_fd();
        let original = open_nofollow_at(dir, name)?;
        match keep.filter(|_| original.as_ref().is_some_and(keepable)) {
            Some(slot) => match self.replace_at(file, slot.dir, slot.name, original, Some(slot)) {
                Err(e) if is_cannot_keep(&e) => {
                    self.replace_at(file, dir, tmp, open_nofollow_at(dir, name)?, None)
                }
                other => other,
            },
            None => self.replace_at(file, dir, tmp, original, None),
        }
    }

    /// [`Loc::replace_file`], the new file made at `at`/`at_name`.
    fn replace_at(
        &self,
        file: &FileSpec<'_>,
        at: BorrowedFd<'_>,
        at_name: &str,
        replaced: Option<OwnedFd>,
        keep: Option<Slot<'_>>,
    ) -> io::Result<Stat> {
        let &FileSpec {
            content,
            mode,
            uid,
            gid,
            mtime,
        } = file;
        let name = self.name()?;
        let dir = self.parent_fd();
        let fd = rustix::fs::openat(
            at,
            at_name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| match keep {
            Some(_) => cannot_keep(),
            None => e.into(),
        })?;
        // What this made: on failure, only that is removed from where it
        // was made (a name in the grant can be swapped meanwhile).
        let made = Stat::from_rustix(&rustix::fs::fstat(&fd)?).identity;
        let result = (|| {
            let mut file = std::fs::File::from(fd);
            file.write_all(content)?;
            let (before, chowned) = set_owner_fd(&file, uid, gid)?;
            #[allow(clippy::unnecessary_cast)]
            let dev = before.st_dev as u64;
            let owned = (!chowned).then(|| Stat::from_rustix(&before));
            if let Some(from) = &replaced {
                copy_xattrs(from, &file)?;
            }
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))?;
            if let Some((secs, nsec)) = mtime {
                rustix::fs::futimens(&file, &times(secs, nsec))?;
            }
            // Permission bits alone are set exactly as asked; set-user-ID,
            // set-group-ID and sticky bits may be dropped by the kernel, so
            // then the file is asked what it got.
            let st = match (owned, mode & 0o7000) {
                (Some(mut st), 0) => {
                    st.mode = mode & 0o7777;
                    st.uid = uid;
                    st.gid = gid;
                    st
                }
                _ => Stat::from_rustix(&rustix::fs::fstat(&file)?),
            };
            crate::commit::failpoint_before_rename(at_name);
            // Not synced here: the commit flushes the file system once.
            match (keep, &replaced) {
                (Some(slot), Some(original)) => exchange_in(slot, dir, name, original, made)?,
                _ => rustix::fs::renameat(at, at_name, dir, name)?,
            }
            // The replaced file is freed when its last descriptor closes:
            // on another thread (see `release_later`), on a local file
            // system (a network one would keep a `.nfs` file for it).
            if let Some(fd) = replaced
                && is_local(dev, &fd)
            {
                release_later(fd);
            }
            Ok(st)
        })();
        if result.is_err()
            && slot_holds(
                Slot {
                    dir: at,
                    name: at_name,
                },
                made,
            )
        {
            let _ = rustix::fs::unlinkat(at, at_name, AtFlags::empty());
        }
        result
    }

    /// Puts the file kept in `kept` (by [`Loc::replace_file`]) back here,
    /// by exchanging the two names, when it is exactly the file asked for:
    /// a regular file of one name, with this content, mode, owner and (when
    /// given) modification time, and the extended attributes of the regular
    /// file here (those a written file would get). What it replaces goes to
    /// `kept` in its place. `None` when it is not that file, or the two
    /// names cannot be exchanged: then nothing changed, and the caller
    /// writes the file.
    pub fn put_back(&self, kept: Slot<'_>, file: &FileSpec<'_>) -> io::Result<Option<Stat>> {
        let &FileSpec {
            content,
            mode,
            uid,
            gid,
            mtime,
        } = file;
        let name = self.name()?;
        let dir = self.parent_fd();
        let Ok(fd) = rustix::fs::openat(
            kept.dir,
            kept.name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return Ok(None);
        };
        let st = Stat::from_rustix(&rustix::fs::fstat(&fd)?);
        let same = st.kind == Kind::File
            && st.nlink == 1
            && st.size == content.len() as u64
            && st.mode == mode & 0o7777
            && (st.uid, st.gid) == (uid, gid)
            && mtime.is_none_or(|t| t == (st.mtime, st.mtime_nsec));
        if !same {
            return Ok(None);
        }
        let mut read = Vec::with_capacity(content.len() + 1);
        std::fs::File::from(fd)
            .take(content.len() as u64 + 1)
            .read_to_end(&mut read)?;
        if read != content {
            return Ok(None);
        }
        // What is here now (the commit has just checked it): a rollback
        // that writes the file gives it this one's extended attributes, so
        // the kept one must have the same.
        let Some(here) = open_nofollow_at(dir, name)? else {
            return Ok(None);
        };
        if Stat::from_rustix(&rustix::fs::fstat(&here)?).kind != Kind::File {
            return Ok(None);
        }
        let kept_fd = rustix::fs::openat(
            kept.dir,
            kept.name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if !same_inode(&kept_fd, st.identity) || xattrs(&kept_fd)? != xattrs(&here)? {
            return Ok(None);
        }
        match exchange_in(kept, dir, name, &here, st.identity) {
            Ok(()) => Ok(Some(st)),
            Err(e) if is_cannot_keep(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes this directory with exactly `mode`: made as `tmp` beside it
    /// (mkdir applies the umask, so its bits are set after), then renamed
    /// into place, never over anything. A crash leaves either nothing here
    /// or the directory as asked, and at worst `tmp` (a rollback removes
    /// it); not so on a file system without `RENAME_NOREPLACE` (below).
    pub fn create_dir(&self, mode: u32, tmp: &str) -> io::Result<()> {
        let name = self.name()?;
        let dir = self.parent_fd();
        rustix::fs::mkdirat(dir, tmp, Mode::from_raw_mode(mode))?;
        let made = rustix::fs::openat(dir, tmp, DIR_FLAGS, Mode::empty()).and_then(|fd| {
            let id = Stat::from_rustix(&rustix::fs::fstat(&fd)?).identity;
            Ok((fd, id))
        });
        let result = match &made {
            Ok((fd, _)) => (|| {
                rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
                crate::commit::failpoint_before_rename(tmp);
                match rustix::fs::renameat_with(
                    dir,
                    tmp,
                    dir,
                    name,
                    rustix::fs::RenameFlags::NOREPLACE,
                ) {
                    // A file system that cannot be asked not to replace: a
                    // rename could replace an empty directory made there
                    // meanwhile, so the directory is made in place (mkdir
                    // replaces nothing) and its bits set after (a crash in
                    // between leaves it with the umask's bits: drift).
                    Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                        rustix::fs::unlinkat(dir, tmp, AtFlags::REMOVEDIR)?;
                        rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?;
                        let fd = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
                        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
                    }
                    other => other,
                }
                .map_err(io::Error::from)
            })(),
            Err(e) => Err(io::Error::from(*e)),
        };
        if result.is_err()
            && let Ok((_, id)) = made
            && slot_holds(Slot { dir, name: tmp }, id)
        {
            let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::REMOVEDIR);
        }
        result
    }

    pub fn remove_file(&self) -> io::Result<()> {
        rustix::fs::unlinkat(self.parent_fd(), self.name()?, AtFlags::empty()).map_err(Into::into)
    }

    pub fn remove_dir(&self) -> io::Result<()> {
        rustix::fs::unlinkat(self.parent_fd(), self.name()?, AtFlags::REMOVEDIR).map_err(Into::into)
    }

    /// Renames this to `to`. With `no_replace`, fails if `to` appeared.
    pub fn rename_to(&self, to: &Loc, no_replace: bool) -> io::Result<()> {
        let (from_name, to_name) = (self.name()?, to.name()?);
        if no_replace {
            match rustix::fs::renameat_with(
                self.parent_fd(),
                from_name,
                to.parent_fd(),
                to_name,
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
                other => return other.map_err(Into::into),
            }
        }
        rustix::fs::renameat(self.parent_fd(), from_name, to.parent_fd(), to_name)
            .map_err(Into::into)
    }

    /// Sets the permission bits of the file or directory here.
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        let fd = self.open_nofollow()?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(Into::into)
    }

    /// Opens what is here for reading, refusing a symlink, never blocking
    /// on a FIFO.
    fn open_nofollow(&self) -> io::Result<OwnedFd> {
        rustix::fs::openat(
            self.parent_fd(),
            self.name()?,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(Into::into)
    }

    /// Sets the owner of the path itself (a symlink's own owner).
    pub fn set_owner(&self, uid: u32, gid: u32) -> io::Result<()> {
        rustix::fs::chownat(
            self.parent_fd(),
            self.name()?,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(Into::into)
    }

    /// Sets the modification time of the path itself (not following a
    /// symlink); the access time is left alone. Through a handle on what is
    /// there, never by name after a look: a name swapped for a hard link to
    /// a file outside the grants must not get that file's time changed (a
    /// file with more than one link is refused, as for every change).
    pub fn set_mtime(&self, secs: i64, nsec: u32) -> io::Result<()> {
        let times = times(secs, nsec);
        match self {
            Loc::Root(fd) => {
                // The grant's handle may be O_PATH, which futimens refuses.
                let dir = rustix::fs::openat(fd, ".", DIR_FLAGS, Mode::empty())?;
                rustix::fs::futimens(&dir, &times)
            }
            Loc::At(dir, name) => {
                let here = rustix::fs::openat(
                    dir,
                    name.as_str(),
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let st = Stat::from_rustix(&rustix::fs::fstat(&here)?);
                if st.kind == Kind::File && st.nlink > 1 {
                    return Err(hard_links(st.nlink));
                }
                rustix::fs::utimensat(&here, "", &times, AtFlags::EMPTY_PATH)
            }
        }
        .map_err(Into::into)
    }

    pub fn symlink(&self, target: &str) -> io::Result<()> {
        rustix::fs::symlinkat(target, self.parent_fd(), self.name()?).map_err(Into::into)
    }
}

/// The largest file [`Loc::replace_file`] keeps: the disk it takes is
/// the price of a rollback that renames rather than writes.
pub const KEEP_MAX: u64 = 1 << 20;

/// A regular file as it is to be: content, permission bits, owner and,
/// when given, modification time.
pub struct FileSpec<'a> {
    pub content: &'a [u8],
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Option<(i64, u32)>,
}

/// A name in a directory where a replaced file is kept.
#[derive(Clone, Copy)]
pub struct Slot<'a> {
    pub dir: BorrowedFd<'a>,
    pub name: &'a str,
}

/// Whether the file open on `fd` can be kept: a regular file of one name
/// (another name would still see what is written to it) and not large.
fn keepable(fd: &OwnedFd) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| {
        let st = Stat::from_rustix(&st);
        st.kind == Kind::File && st.nlink == 1 && st.size <= KEEP_MAX
    })
}

/// Why a file could not be kept: the two names cannot be exchanged
/// (another file system, no `RENAME_EXCHANGE`, the name gone) or the new
/// file cannot be made in the slot. Nothing changed; the file is written
/// the usual way.
#[derive(Debug, thiserror::Error)]
#[error("the replaced file cannot be kept")]
struct CannotKeep;

fn cannot_keep() -> io::Error {
    io::Error::other(CannotKeep)
}

fn is_cannot_keep(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|e| e.is::<CannotKeep>())
}

/// What is at `name` in `dir`, opened without following a link or
/// blocking on a FIFO; `None` when nothing is.
fn open_nofollow_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Option<OwnedFd>> {
    match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn same_inode(fd: &OwnedFd, id: Identity) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| Stat::from_rustix(&st).identity.same_file(id))
}

/// Exchanges the file in `slot` (`ours`) with what is at `name` in `dir`,
/// which must be the file open on `expected`: what the exchange brought
/// into the slot (which no one else can reach) is looked at, and anything
/// else (a directory swapped in meanwhile) is exchanged back and refused.
/// If the slot then holds something that is not `ours` (the name was
/// swapped again), that goes back into the grant under a new name beside
/// `name`, never over anything: nothing of the grant stays in the state
/// directory. [`CannotKeep`] when the names cannot be exchanged: nothing
/// changed.
fn exchange_in(
    slot: Slot<'_>,
    dir: BorrowedFd<'_>,
    name: &str,
    expected: &OwnedFd,
    ours: Identity,
) -> io::Result<()> {
    use rustix::fs::RenameFlags;
    use rustix::io::Errno;
    #[cfg(test)]
    tests::race("before-exchange");
    match rustix::fs::renameat_with(slot.dir, slot.name, dir, name, RenameFlags::EXCHANGE) {
        Ok(()) => {}
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::XDEV | Errno::NOENT) => {
            return Err(cannot_keep());
        }
        Err(e) => return Err(e.into()),
    }
    crate::commit::failpoint("after-exchange");
    #[cfg(test)]
    tests::race("after-exchange");
    let expected = Stat::from_rustix(&rustix::fs::fstat(expected)?).identity;
    if slot_holds(slot, expected) {
        return Ok(());
    }
    // Not the file looked at: back where it was.
    let _ = rustix::fs::renameat_with(slot.dir, slot.name, dir, name, RenameFlags::EXCHANGE);
    #[cfg(test)]
    tests::race("after-exchange-back");
    let stranded = rustix::fs::statat(slot.dir, slot.name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
        && !slot_holds(slot, ours)
        && !return_to_grant(slot, dir);
    Err(io::Error::other(match stranded {
        false => format!("{name} changed while it was replaced"),
        true => format!(
            "{name} changed while it was replaced, and what took its place could not be put back: it is in the run's kept/ directory"
        ),
    }))
}

/// Whether the slot holds the file of identity `id` (device and inode).
fn slot_holds(slot: Slot<'_>, id: Identity) -> bool {
    rustix::fs::statat(slot.dir, slot.name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| Stat::from_rustix(&st).identity.same_file(id))
}

/// Moves what is in the slot into `dir` under a new name no one can guess
/// (never over anything); whether it went.
fn return_to_grant(slot: Slot<'_>, dir: BorrowedFd<'_>) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    (0..8).any(|k| {
        let back = format!(".defops-returned-{}-{now}-{k}", std::process::id());
        rustix::fs::renameat_with(
            slot.dir,
            slot.name,
            dir,
            back.as_str(),
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .is_ok()
    })
}

/// The extended attributes of the file open on `fd`, by name.
fn xattrs(fd: &OwnedFd) -> io::Result<std::collections::BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    let size = match rustix::fs::flistxattr_query(fd) {
        Ok(0) | Err(rustix::io::Errno::NOTSUP) => return Ok(out),
        Ok(n) => n,
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::flistxattr(fd, &mut names[..])?;
    let mut value = vec![0u8; 64 << 10];
    for attr in names[..n].split(|b| *b == 0).filter(|a| !a.is_empty()) {
        let len = rustix::fs::fgetxattr(fd, std::ffi::OsStr::from_bytes(attr), &mut value[..])?;
        out.insert(attr.to_vec(), value[..len].to_vec());
    }
    Ok(out)
}

/// A modification time, leaving the access time alone.
fn times(secs: i64, nsec: u32) -> rustix::fs::Timestamps {
    rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: nsec.into(),
        },
    }
}

/// Gives `to` the extended attributes of the file open on `from` (the one
/// replaced): its POSIX ACL above all, so an atomic replace never widens
/// who may read the file, and its labels. Not file capabilities: the
/// kernel drops those when a file's content changes, and so does this. A
/// file whose attributes cannot be copied is not replaced.
fn copy_xattrs(from: &OwnedFd, to: &std::fs::File) -> io::Result<()> {
    // Most files have none: ask for the size of the list first.
    let size = match rustix::fs::flistxattr_query(from) {
        Ok(0) | Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Ok(n) => n,
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::flistxattr(from, &mut names[..])?;
    let mut value = vec![0u8; 64 << 10];
    for attr in names[..n].split(|b| *b == 0).filter(|a| !a.is_empty()) {
        if attr == b"security.capability" {
            continue;
        }
        let attr = std::ffi::OsStr::from_bytes(attr);
        let len = rustix::fs::fgetxattr(from, attr, &mut value[..])?;
        rustix::fs::fsetxattr(to, attr, &value[..len], rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

/// Gives `fd` the owner `uid`:`gid`. Returns its metadata from before, and
/// whether the owner changed.
fn set_owner_fd(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<(rustix::fs::Stat, bool)> {
    let st = rustix::fs::fstat(&fd)?;
    if st.st_uid == uid && st.st_gid == gid {
        return Ok((st, false));
    }
    rustix::fs::fchown(
        &fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?;
    Ok((st, true))
}

/// Whether the file system of device `dev` (that `fd` is on) is a local
/// one, asked once per device.
fn is_local(dev: u64, fd: &OwnedFd) -> bool {
    static SEEN: std::sync::Mutex<Vec<(u64, bool)>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, local)) = seen.iter().find(|(d, _)| *d == dev) {
        return *local;
    }
    // NFS, SMB/CIFS (both magics), FUSE, 9p, AFS, Ceph, Lustre.
    const REMOTE: [i64; 9] = [
        0x6969,
        0x517b,
        0xff53_4d42,
        0xfe53_4d42,
        0x6573_5546,
        0x0102_1997,
        0x5346_414f,
        0x00c3_6400,
        0x0bd0_0bd0,
    ];
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let local = rustix::fs::fstatfs(fd).is_ok_and(|s| !REMOTE.contains(&(s.f_type as i64)));
    seen.push((dev, local));
    local
}

/// The threads that close replaced files (see [`release_later`]).
struct Releaser {
    tx: std::sync::mpsc::SyncSender<OwnedFd>,
    /// Descriptors sent and not yet closed.
    pending: std::sync::Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
}

static RELEASER: std::sync::OnceLock<Option<Releaser>> = std::sync::OnceLock::new();

/// How many threads close replaced files, and at most how many descriptors
/// may wait for them (then the caller waits): fewer under a low limit of
/// open files, none under a very low one.
const RELEASE_THREADS: usize = 4;
const RELEASE_QUEUE: usize = 256;

/// The queue's length for this process: a sixteenth of its limit of open
/// files, at most [`RELEASE_QUEUE`]; 0 (close at once) under 128.
fn release_queue() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    match limit < 128 {
        true => 0,
        false => (limit / 16).min(RELEASE_QUEUE as u64) as usize,
    }
}

/// Closes `fd` on another thread. Closing the last descriptor of a file a
/// rename replaced frees its blocks, and on a file system mounted with
/// `discard` that waits for the device (up to milliseconds, for every
/// replaced file): on other threads those waits overlap each other and the
/// next change instead of adding up. [`drain_released`] waits for them.
pub fn release_later(fd: OwnedFd) {
    let releaser = RELEASER.get_or_init(|| {
        let queue = release_queue();
        if queue == 0 {
            return None;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<OwnedFd>(queue);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let pending =
            std::sync::Arc::new((std::sync::Mutex::new(0usize), std::sync::Condvar::new()));
        for n in 0..RELEASE_THREADS {
            let (rx, pending) = (rx.clone(), pending.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("release-{n}"))
                .spawn(move || {
                    loop {
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(fd) = next else { break };
                        drop(fd);
                        let (count, changed) = &*pending;
                        *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                        changed.notify_all();
                    }
                });
            if spawned.is_err() && n == 0 {
                return None;
            }
        }
        Some(Releaser { tx, pending })
    });
    // No thread could be started: closed here.
    let Some(r) = releaser else { return };
    *r.pending.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    if let Err(std::sync::mpsc::SendError(fd)) = r.tx.send(fd) {
        drop(fd);
        *r.pending.0.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
    }
}

/// Waits until every descriptor given to [`release_later`] is closed.
pub fn drain_released() {
    if let Some(Some(r)) = RELEASER.get() {
        let (count, changed) = &*r.pending;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = changed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Flushes the whole file system that holds `fd`: one call however many
/// files changed on it.
pub fn sync_fs(fd: impl AsFd) -> io::Result<()> {
    // The handle may be an O_PATH descriptor, which syncfs refuses.
    let dir = rustix::fs::openat(fd, ".", DIR_FLAGS, Mode::empty())?;
    rustix::fs::syncfs(&dir).map_err(Into::into)
}

pub fn hard_links(n: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("the file has {n} hard links; its other names may lie outside the grants"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::{Access, Grants};

    type Race = Box<dyn FnOnce()>;
    thread_local! {
        /// What "someone else" does to the tree at a named moment.
        static RACE: std::cell::RefCell<Vec<(&'static str, Race)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    pub(super) fn race(at: &str) {
        let due: Vec<Race> = RACE.with(|r| {
            let mut r = r.borrow_mut();
            let (now, later): (Vec<_>, Vec<_>) = r.drain(..).partition(|(a, _)| *a == at);
            *r = later;
            now.into_iter().map(|(_, f)| f).collect()
        });
        for f in due {
            f();
        }
    }

    fn at(moment: &'static str, f: impl FnOnce() + 'static) {
        RACE.with(|r| r.borrow_mut().push((moment, Box::new(f))));
    }

    /// A grant `g` with `f` (a file) and an attacker's directory `evil`
    /// with a file in it, and a slot directory `k` beside it: `test` gets
    /// both, `f` located and slot `k/0`.
    fn raced(test: impl FnOnce(&std::path::Path, &std::path::Path, &Loc<'_>, Slot<'_>)) {
        let dir = tempfile::tempdir().unwrap();
        let (g, k) = (dir.path().join("g"), dir.path().join("k"));
        std::fs::create_dir_all(g.join("evil")).unwrap();
        std::fs::write(g.join("evil/inside"), "theirs").unwrap();
        std::fs::write(g.join("f"), "before").unwrap();
        std::fs::create_dir(&k).unwrap();
        let grants = Grants::open(&[(g.clone(), Access::ReadWrite)]).unwrap();
        let grant = grants.iter().next().unwrap();
        let kept = std::fs::File::open(&k).unwrap();
        let slot = Slot {
            dir: kept.as_fd(),
            name: "0",
        };
        test(&g, &k, &locate(grant, &grant.path.join("f")).unwrap(), slot);
    }

    /// Just before the exchange, `f` is moved away and `evil` put there.
    fn directory_swapped_in(g: &std::path::Path) {
        let g = g.to_path_buf();
        at("before-exchange", move || {
            std::fs::rename(g.join("f"), g.join("f.moved")).unwrap();
            std::fs::rename(g.join("evil"), g.join("f")).unwrap();
        });
    }

    fn theirs_is_back(g: &std::path::Path) {
        assert_eq!(
            std::fs::read_to_string(g.join("f/inside")).unwrap(),
            "theirs"
        );
    }

    /// A kept file, as a run leaves it.
    fn kept_file(k: &std::path::Path, content: &str) {
        std::fs::write(k.join("0"), content).unwrap();
        std::fs::set_permissions(
            k.join("0"),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
    }

    fn spec(content: &[u8]) -> FileSpec<'_> {
        FileSpec {
            content,
            mode: 0o644,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            mtime: None,
        }
    }

    /// A directory swapped in at the name just before the exchange is
    /// exchanged back out of the slot and the replace fails: nothing of
    /// the grant's stays in the state directory.
    #[test]
    fn a_directory_swapped_in_before_the_keep_is_sent_back() {
        raced(|g, k, here, slot| {
            directory_swapped_in(g);
            let e = here
                .replace_file(&spec(b"new"), ".tmp", Some(slot))
                .unwrap_err();
            assert!(
                e.to_string().contains("changed while it was replaced"),
                "{e}"
            );
            theirs_is_back(g);
            assert_eq!(std::fs::read_dir(k).unwrap().count(), 0);
            assert!(!g.join(".tmp").exists());
        });
    }

    /// The same, and the name taken away after the exchange too: what was
    /// brought into the slot goes back into the grant, under a new name.
    #[test]
    fn a_directory_brought_into_the_slot_goes_back_even_if_the_name_is_gone() {
        raced(|g, k, here, slot| {
            directory_swapped_in(g);
            let gg = g.to_path_buf();
            at("after-exchange", move || {
                std::fs::rename(gg.join("f"), gg.join("ours")).unwrap();
            });
            let e = here
                .replace_file(&spec(b"new"), ".tmp", Some(slot))
                .unwrap_err();
            assert!(e.to_string().contains("changed while"), "{e}");
            assert_eq!(std::fs::read_dir(k).unwrap().count(), 0);
            let returned: Vec<_> = std::fs::read_dir(g)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".defops-returned-")
                })
                .collect();
            assert_eq!(returned.len(), 1, "{returned:?}");
            assert_eq!(
                std::fs::read_to_string(returned[0].join("inside")).unwrap(),
                "theirs"
            );
            assert_eq!(std::fs::read_to_string(g.join("ours")).unwrap(), "new");
        });
    }

    /// The name swapped once more between the exchange and the exchange
    /// back: what that brings into the slot goes back into the grant under
    /// a new name, and nothing there is removed.
    #[test]
    fn what_a_second_swap_brings_into_the_slot_goes_back_to_the_grant() {
        raced(|g, k, here, slot| {
            std::fs::create_dir_all(g.join("evil2")).unwrap();
            std::fs::write(g.join("evil2/inside"), "theirs too").unwrap();
            directory_swapped_in(g);
            let gg = g.to_path_buf();
            at("after-exchange", move || {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    gg.join("f"),
                    rustix::fs::CWD,
                    gg.join("evil2"),
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
            });
            assert!(
                here.replace_file(&spec(b"new"), ".tmp", Some(slot))
                    .is_err()
            );
            assert_eq!(std::fs::read_dir(k).unwrap().count(), 0);
            // Every file and directory of the grant is still in it.
            let mut found = Vec::new();
            for e in std::fs::read_dir(g).unwrap() {
                let p = e.unwrap().path();
                found.push(match p.is_dir() {
                    true => std::fs::read_to_string(p.join("inside")).unwrap(),
                    false => std::fs::read_to_string(p).unwrap(),
                });
            }
            found.sort();
            assert_eq!(
                found,
                ["before", "new", "theirs", "theirs too"],
                "{found:?}"
            );
        });
    }

    /// A rollback's exchange meets a directory swapped in just before it:
    /// the kept file stays kept, the directory where it was, and it fails.
    #[test]
    fn a_put_back_that_meets_a_directory_sends_it_back() {
        raced(|g, k, here, slot| {
            kept_file(k, "old");
            directory_swapped_in(g);
            assert!(here.put_back(slot, &spec(b"old")).is_err());
            theirs_is_back(g);
            assert_eq!(std::fs::read_to_string(k.join("0")).unwrap(), "old");
        });
    }

    /// Attributes added to a kept file after the run (an ACL entry, a user
    /// attribute) keep it from being put back.
    #[test]
    fn a_kept_file_with_other_attributes_is_not_put_back() {
        raced(|g, k, here, slot| {
            kept_file(k, "old");
            let tag = |p: std::path::PathBuf| {
                rustix::fs::setxattr(p, "user.added", b"1", rustix::fs::XattrFlags::empty())
            };
            if tag(k.join("0")).is_err() {
                eprintln!("skipped: no user attributes on this file system");
                return;
            }
            assert!(here.put_back(slot, &spec(b"old")).unwrap().is_none());
            assert_eq!(std::fs::read_to_string(g.join("f")).unwrap(), "before");
            // The same attribute on both: put back.
            tag(g.join("f")).unwrap();
            assert!(here.put_back(slot, &spec(b"old")).unwrap().is_some());
            assert_eq!(std::fs::read_to_string(g.join("f")).unwrap(), "old");
        });
    }

    /// A kept file is put back over a file, never over a directory that
    /// took the file's place after the commit looked: that one would be
    /// moved out of the grants. And over a file, the two swap places.
    #[test]
    fn a_kept_file_is_put_back_over_a_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let (g, k) = (dir.path().join("g"), dir.path().join("k"));
        std::fs::create_dir_all(g.join("x")).unwrap();
        std::fs::write(g.join("x/inside"), "in").unwrap();
        std::fs::create_dir(&k).unwrap();
        std::fs::write(k.join("0"), "hello").unwrap();
        let st = std::fs::metadata(k.join("0")).unwrap();
        use std::os::unix::fs::MetadataExt;
        let (mode, uid, gid) = (st.mode() & 0o7777, st.uid(), st.gid());
        let kept = std::fs::File::open(&k).unwrap();
        let slot = Slot {
            dir: kept.as_fd(),
            name: "0",
        };
        let grants = Grants::open(&[(g.clone(), Access::ReadWrite)]).unwrap();
        let grant = grants.iter().next().unwrap();

        let here = locate(grant, &grant.path.join("x")).unwrap();
        let spec = |content, mode| FileSpec {
            content,
            mode,
            uid,
            gid,
            mtime: None,
        };
        let put = here.put_back(slot, &spec(b"hello", mode)).unwrap();
        assert!(put.is_none());
        assert_eq!(std::fs::read_to_string(g.join("x/inside")).unwrap(), "in");
        assert_eq!(std::fs::read_to_string(k.join("0")).unwrap(), "hello");

        // Not the file asked for: nothing moves.
        std::fs::write(g.join("y"), "new").unwrap();
        let here = locate(grant, &grant.path.join("y")).unwrap();
        for (content, mode) in [(&b"hellO"[..], mode), (b"hello", mode ^ 0o100)] {
            let put = here.put_back(slot, &spec(content, mode)).unwrap();
            assert!(put.is_none());
            assert_eq!(std::fs::read_to_string(g.join("y")).unwrap(), "new");
        }
        let put = here.put_back(slot, &spec(b"hello", mode)).unwrap();
        assert_eq!(put.map(|s| s.kind), Some(Kind::File));
        assert_eq!(std::fs::read_to_string(g.join("y")).unwrap(), "hello");
        assert_eq!(std::fs::read_to_string(k.join("0")).unwrap(), "new");
    }

    /// A cache finds what a fresh walk finds, whatever order paths come in
    /// (down, up, sideways, absent, through files), and keeps few
    /// descriptors however deep the walk.
    #[test]
    fn a_cached_walk_finds_what_a_fresh_walk_finds() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("g");
        let mut deep = g.clone();
        for i in 0..100 {
            deep = deep.join(if i % 7 == 3 { "x" } else { "d" });
            std::fs::create_dir_all(&deep).unwrap();
            std::fs::write(deep.join("f"), i.to_string()).unwrap();
            std::fs::create_dir_all(deep.join("side")).unwrap();
        }
        let grants = Grants::open(&[(g.clone(), Access::ReadOnly)]).unwrap();
        let grant = grants.iter().next().unwrap();
        let mut seed = 7u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut cache = DirCache::default();
        for _ in 0..5_000 {
            let depth = next(102);
            let mut p = grant.path.clone();
            for i in 0..depth {
                p = p.join(if i % 7 == 3 { "x" } else { "d" });
            }
            let p = match next(5) {
                0 => p.join("f"),
                1 => p.join("side"),
                2 => p.join("absent"),
                3 => p.join("f").join("d"),
                _ => p,
            };
            let fresh = locate(grant, &p).and_then(|l| l.lstat());
            let cached = cache.locate(grant, &p).and_then(|l| l.lstat());
            match (fresh, cached) {
                (Ok(a), Ok(b)) => assert_eq!(a.map(|s| s.identity), b.map(|s| s.identity), "{p}"),
                (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind(), "{p}"),
                (a, b) => panic!("{p}: {a:?} vs {b:?}"),
            }
            assert!(
                cache.fds.len() <= 100 / KEEP_EVERY + 1,
                "{}",
                cache.fds.len()
            );
        }
    }
}
