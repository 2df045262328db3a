//! Sockets at paths of any length (berth-kit's `unix` module does the same for the
//! services; the shim links no kit). A `sockaddr_un` holds 107 bytes of path, while
//! `<run-root>/shims/<64-hex id>/shim.sock` is 80 bytes past the run root: a longer path
//! is reached as `/proc/self/fd/<n>/<name>` through a descriptor on its directory.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const SUN_PATH_MAX: usize = 107;

/// Runs `f` with an address for `path` that fits a `sockaddr_un`.
fn with_address<T>(path: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)?;
    f(&PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name))
}

/// Binds a listening socket at `path`.
pub fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    with_address(path, |a| std::os::unix::net::UnixListener::bind(a))
}

/// Connects to the socket at `path` (the connect is immediate on a unix socket unless
/// its backlog is full; the stream is made non-blocking for tokio).
pub fn connect(path: &Path) -> io::Result<tokio::net::UnixStream> {
    let s = with_address(path, |a| std::os::unix::net::UnixStream::connect(a))?;
    s.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_and_connects_past_sun_len() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("d".repeat(70)).join("e".repeat(70));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("shim.sock");
        let listener = bind(&sock).unwrap();
        assert!(sock.exists());
        let _c = connect(&sock).unwrap();
        listener.accept().unwrap();
    }
}
