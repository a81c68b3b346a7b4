//! The file system, shaped like `std::fs`: the directories the operator
//! granted, with this fix's own planned changes laid over them.
//!
//! Paths are absolute (`/var/lib/app/app.conf`), without `..`, `.`, `//` or a
//! trailing slash; anything outside the grants fails with
//! [`ErrorKind::Denied`]. Writes are planned, not performed: the host shows
//! them on a dry-run and commits them, atomically, on a real run.

use std::fmt;

use crate::bindings::defops::fix::fs as wit;
use crate::bindings::defops::fix::types::{self, FileKind};

/// What went wrong, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Outside the grants, read-only, during `check`, or a file the host
    /// will not touch (more than one hard link).
    Denied,
    /// No such file or directory.
    NotFound,
    /// The path already exists.
    AlreadyExists,
    /// The call does not fit what is there (a directory, not empty, ...).
    InvalidInput,
    /// The run is being stopped; return promptly.
    Aborted,
    /// The host's file system failed.
    Io,
}

/// A failed file-system call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The host's message (it names the path).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::Denied => "denied",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Aborted => "aborted",
            ErrorKind::Io => "i/o error",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for Error {}

impl From<types::Error> for Error {
    fn from(e: types::Error) -> Error {
        let (kind, message) = match e {
            types::Error::Denied(m) => (ErrorKind::Denied, m),
            types::Error::NotFound(m) => (ErrorKind::NotFound, m),
            types::Error::AlreadyExists(m) => (ErrorKind::AlreadyExists, m),
            types::Error::InvalidInput(m) => (ErrorKind::InvalidInput, m),
            types::Error::Aborted(m) => (ErrorKind::Aborted, m),
            types::Error::Io(m) => (ErrorKind::Io, m),
        };
        Error { kind, message }
    }
}

/// `Result` of a file-system call.
pub type Result<T> = std::result::Result<T, Error>;

/// The type of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A socket, FIFO or device.
    Other,
}

impl From<FileKind> for FileType {
    fn from(k: FileKind) -> FileType {
        match k {
            FileKind::File => FileType::File,
            FileKind::Directory => FileType::Dir,
            FileKind::Symlink => FileType::Symlink,
            FileKind::Other => FileType::Other,
        }
    }
}

/// Metadata of a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// The type.
    pub file_type: FileType,
    /// Size in bytes.
    pub len: u64,
    /// Permission bits, e.g. `0o644`.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Last modification, seconds since the Unix epoch.
    pub mtime: i64,
}

impl Metadata {
    /// A regular file?
    pub fn is_file(&self) -> bool {
        self.file_type == FileType::File
    }

    /// A directory?
    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Dir
    }

    /// A symlink (only from [`symlink_metadata`])?
    pub fn is_symlink(&self) -> bool {
        self.file_type == FileType::Symlink
    }
}

impl From<types::Stat> for Metadata {
    fn from(s: types::Stat) -> Metadata {
        Metadata {
            file_type: s.kind.into(),
            len: s.size,
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            mtime: s.mtime,
        }
    }
}

/// An entry of [`read_dir`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The file name.
    pub name: String,
    /// The full path (directory + name).
    pub path: String,
    /// The type (a symlink is reported as a symlink).
    pub file_type: FileType,
}

/// The whole content of a file.
pub fn read(path: impl AsRef<str>) -> Result<Vec<u8>> {
    Ok(wit::read(path.as_ref())?)
}

/// The whole content of a text file.
pub fn read_to_string(path: impl AsRef<str>) -> Result<String> {
    let path = path.as_ref();
    String::from_utf8(read(path)?).map_err(|_| Error {
        kind: ErrorKind::InvalidInput,
        message: format!("{path}: not UTF-8 text"),
    })
}

/// Replaces the content of a file (atomically, on commit), creating it with
/// mode 0644 when absent; an existing file keeps its mode and owner.
/// Writing the content a file already has is not a change.
pub fn write(path: impl AsRef<str>, contents: impl AsRef<[u8]>) -> Result<()> {
    Ok(wit::write(path.as_ref(), contents.as_ref())?)
}

/// Metadata, following symlinks.
pub fn metadata(path: impl AsRef<str>) -> Result<Metadata> {
    Ok(wit::metadata(path.as_ref())?.into())
}

/// Metadata of the path itself, not following a final symlink.
pub fn symlink_metadata(path: impl AsRef<str>) -> Result<Metadata> {
    Ok(wit::symlink_metadata(path.as_ref())?.into())
}

/// Whether the path exists (following symlinks). Errors other than
/// "not found" (e.g. denied) are returned, never taken for "no".
pub fn exists(path: impl AsRef<str>) -> Result<bool> {
    match metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The entries of a directory, sorted by name.
pub fn read_dir(path: impl AsRef<str>) -> Result<Vec<DirEntry>> {
    let dir = path.as_ref();
    let base = dir.trim_end_matches('/');
    Ok(wit::list_dir(dir)?
        .into_iter()
        .map(|e| DirEntry {
            path: format!("{base}/{}", e.name),
            name: e.name,
            file_type: e.kind.into(),
        })
        .collect())
}

/// The target of a symlink.
pub fn read_link(path: impl AsRef<str>) -> Result<String> {
    Ok(wit::read_link(path.as_ref())?)
}

/// Creates a directory (mode 0755); its parent must exist.
pub fn create_dir(path: impl AsRef<str>) -> Result<()> {
    Ok(wit::create_dir(path.as_ref())?)
}

/// Creates a directory and any missing parents.
pub fn create_dir_all(path: impl AsRef<str>) -> Result<()> {
    let path = path.as_ref();
    match metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(Error {
                kind: ErrorKind::AlreadyExists,
                message: format!("{path}: exists and is not a directory"),
            });
        }
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if let Some((parent, _)) = path.rsplit_once('/')
        && !parent.is_empty()
    {
        create_dir_all(parent)?;
    }
    create_dir(path)
}

/// Removes a file or a symlink.
pub fn remove_file(path: impl AsRef<str>) -> Result<()> {
    Ok(wit::remove_file(path.as_ref())?)
}

/// Removes an empty directory.
pub fn remove_dir(path: impl AsRef<str>) -> Result<()> {
    Ok(wit::remove_dir(path.as_ref())?)
}

/// Renames a file or directory; replaces a file at `to`.
pub fn rename(from: impl AsRef<str>, to: impl AsRef<str>) -> Result<()> {
    Ok(wit::rename(from.as_ref(), to.as_ref())?)
}

/// Sets the permission bits (e.g. `0o640`).
pub fn set_mode(path: impl AsRef<str>, mode: u32) -> Result<()> {
    Ok(wit::set_mode(path.as_ref(), mode)?)
}

/// Sets the owner (of a symlink itself, not its target).
pub fn set_owner(path: impl AsRef<str>, uid: u32, gid: u32) -> Result<()> {
    Ok(wit::set_owner(path.as_ref(), uid, gid)?)
}

/// Creates a symlink at `link` pointing to `target`, which must lie inside
/// the grants.
pub fn symlink(target: impl AsRef<str>, link: impl AsRef<str>) -> Result<()> {
    Ok(wit::symlink(target.as_ref(), link.as_ref())?)
}
