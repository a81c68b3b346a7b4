//! The files an operator names — the fix, its signature, the allowed
//! signers, the configuration, a manifest, a journal — are read only when
//! they are regular files. A FIFO, a device, a socket or a directory given
//! by mistake is named and refused before a single byte is read, so no
//! command can hang on a pipe nobody writes to.
//!
//! A symlink is followed (operators link their files around); what it
//! leads to is checked, first by path, then again on the open descriptor.

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

#[cfg(test)]
mod tests {
    use super::*;

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
