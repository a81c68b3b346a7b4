//! The files an operator names — the fix, its signature, the allowed
//! signers, the configuration, a manifest, a journal — are read only when
//! they are regular files. A FIFO, a device, a socket or a directory given
//! by mistake is named and refused before a single byte is read, so no
//! command can hang on a pipe nobody writes to.
//!
//! A symlink is followed (operators link their files around); what it
//! leads to is checked, first by path, then again on the open descriptor.
//!
//! The files this program keeps in its state directory are another matter
//! (`create_fresh`, `read_in_state`, `read_own_record`): never through a
//! link, made afresh, and believed only when this user's alone.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a non-regular file is, in words.
fn what(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    Some(match () {
        _ if t.is_file() => return None,
        _ if t.is_dir() => "a directory",
        _ if t.is_fifo() => "a FIFO (named pipe)",
        _ if t.is_socket() => "a socket",
        _ if t.is_char_device() => "a character device",
        _ if t.is_block_device() => "a block device",
        _ => "not a regular file",
    })
}

fn refuse(meta: &Metadata) -> io::Result<()> {
    match what(meta) {
        None => Ok(()),
        Some(w) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {w}, not a regular file; give the path of a file"),
        )),
    }
}

/// Opens `path` for reading if it is a regular file: checked before the
/// open (which never blocks: `O_NONBLOCK`) and again on the descriptor.
pub fn open(path: &Path) -> io::Result<File> {
    refuse(&std::fs::metadata(path)?)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)?;
    refuse(&file.metadata()?)?;
    Ok(file)
}

fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC).bits() as i32
}

/// The whole content of the regular file at `path`.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The whole content of the regular file at `path`, as UTF-8.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// Creates a file of its own at `path` (a temp file in the state
/// directory, then renamed): whatever has that name already (one a dead
/// process left, or a link or a hard link planted while the directory was
/// writable by others) is removed first, and the file is made with
/// `O_EXCL | O_NOFOLLOW`, so nothing written to it lands anywhere else.
pub fn create_fresh(path: &Path, mode: u32) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// The content of a file this program wrote into the state directory and
/// checks by its content (a before-image, by its hash): read only if it is
/// a regular file there, not through a link (a link to `/dev/zero` planted
/// while the directory was shared would never end).
pub fn read_in_state(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)?;
    refuse(&file.metadata()?)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The content of a record this program wrote into the state directory
/// (a dry-run's): read only if it is a regular file with one name, owned by
/// this user or root and writable by no one else, so that no one else can
/// have written it or can write it still.
pub fn read_own_record(path: &Path) -> io::Result<String> {
    String::from_utf8(read_own(path, u64::MAX)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// The content of a file this program wrote into the state directory, by
/// the rule of [`read_own_record`], when it is at most `max` bytes (its
/// size is checked before anything is read).
pub fn read_own(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    refuse(&meta)?;
    let me = rustix::process::geteuid().as_raw();
    if (meta.uid() != me && meta.uid() != 0) || meta.nlink() != 1 || meta.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "it is not this user's alone (owner, links or mode)",
        ));
    }
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is {} bytes, over {max}", meta.len()),
        ));
    }
    let mut bytes = Vec::new();
    (&file)
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it grew over {max} bytes while read"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp name planted as a hard link or a symlink to a file of
    /// someone else's: a fresh file is made in its place, the other file
    /// untouched.
    #[test]
    fn a_fresh_file_never_writes_through_what_had_its_name() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let precious = dir.path().join("precious");
        std::fs::write(&precious, "keep\n").unwrap();
        let tmp = dir.path().join(".tmp-1");
        for plant in [std::fs::hard_link, std::os::unix::fs::symlink] {
            plant(&precious, &tmp).unwrap();
            let mut f = create_fresh(&tmp, 0o600).unwrap();
            f.write_all(b"new\n").unwrap();
            drop(f);
            assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep\n");
            assert_eq!(std::fs::read_to_string(&tmp).unwrap(), "new\n");
            std::fs::remove_file(&tmp).unwrap();
        }
    }

    /// A record with a second name, or one others may write, is not read:
    /// someone else could have written it.
    #[test]
    fn a_record_not_this_users_alone_is_not_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("r.json");
        std::fs::write(&record, "{}").unwrap();
        std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_own_record(&record).unwrap(), "{}");
        let other = dir.path().join("other");
        std::fs::hard_link(&record, &other).unwrap();
        assert!(read_own_record(&record).is_err());
        std::fs::remove_file(&other).unwrap();
        std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o622)).unwrap();
        assert!(read_own_record(&record).is_err());
        std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&record, &other).unwrap();
        assert!(read_own_record(&other).is_err());
        assert!(read_in_state(&other).is_err());
        assert_eq!(read_in_state(&record).unwrap(), b"{}");
        std::fs::remove_file(&other).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &other).unwrap();
        assert!(read_in_state(&other).is_err());
    }

    #[test]
    fn a_fifo_a_directory_and_a_device_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        for (path, says) in [
            (fifo.as_path(), "FIFO"),
            (dir.path(), "directory"),
            (Path::new("/dev/null"), "character device"),
        ] {
            let e = read(path).unwrap_err();
            assert!(e.to_string().contains(says), "{}: {e}", path.display());
        }
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read(&link).unwrap(), b"x");
    }
}
