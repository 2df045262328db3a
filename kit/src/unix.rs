//! Unix sockets at paths of any length.
//!
//! A `sockaddr_un` holds at most 107 bytes of path, but a run root may be long (dockerd
//! accepts any exec root, and `shims/<64-hex id>/shim.sock` alone takes 80 bytes). A path
//! too long for the address is reached as `/proc/self/fd/<n>/<name>`, `n` being a
//! descriptor on its directory held open for the bind or connect: the kernel resolves
//! the magic link, so the socket is the one at the long path.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The longest path a `sockaddr_un` holds (108 bytes with the terminating NUL).
pub const SUN_PATH_MAX: usize = 107;

/// An address usable in bind/connect for `path`, and the directory descriptor it goes
/// through (if any), which must outlive the call.
pub fn reachable(path: &Path) -> io::Result<(Option<File>, Cow<'_, Path>)> {
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return Ok((None, Cow::Borrowed(path)));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a socket path", path.display()),
        ));
    };
    let dir = File::options()
        .read(true)
        .custom_flags(libc_flags::O_PATH | libc_flags::O_DIRECTORY)
        .open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    if short.as_os_str().len() > SUN_PATH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket name {name:?} is too long"),
        ));
    }
    Ok((Some(dir), Cow::Owned(short)))
}

/// `O_PATH` and `O_DIRECTORY` from nix, so kit needs no libc of its own.
mod libc_flags {
    use nix::fcntl::OFlag;
    pub const O_PATH: i32 = OFlag::O_PATH.bits();
    pub const O_DIRECTORY: i32 = OFlag::O_DIRECTORY.bits();
}

/// Binds a listening socket at `path`, whatever its length.
pub fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let (_dir, addr) = reachable(path)?;
    std::os::unix::net::UnixListener::bind(&addr)
}

/// Connects to the socket at `path`, whatever its length.
pub async fn connect(path: &Path) -> io::Result<tokio::net::UnixStream> {
    let (_dir, addr) = reachable(path)?;
    tokio::net::UnixStream::connect(&addr).await
}

/// Connects to the socket at `path`, whatever its length, blocking.
pub fn connect_blocking(path: &Path) -> io::Result<std::os::unix::net::UnixStream> {
    let (_dir, addr) = reachable(path)?;
    std::os::unix::net::UnixStream::connect(&addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A directory whose socket path is well past what a sockaddr_un holds.
    fn deep_dir() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&dir).unwrap();
        (root, dir)
    }

    #[test]
    fn short_paths_are_used_as_they_are() {
        let (dir, addr) = reachable(Path::new("/run/berth/x.sock")).unwrap();
        assert!(dir.is_none());
        assert_eq!(addr, Path::new("/run/berth/x.sock"));
    }

    #[test]
    fn a_long_path_binds_and_connects_at_the_real_place() {
        let (_root, dir) = deep_dir();
        let sock = dir.join("shim.sock");
        assert!(sock.as_os_str().len() > SUN_PATH_MAX);
        // The plain call fails: that is what this module exists for.
        assert!(std::os::unix::net::UnixListener::bind(&sock).is_err());
        let listener = bind(&sock).unwrap();
        assert!(sock.exists(), "the socket is at the long path");
        let mut client = connect_blocking(&sock).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }

    #[tokio::test]
    async fn a_long_path_connects_async() {
        let (_root, dir) = deep_dir();
        let sock = dir.join("svc.sock");
        let listener = bind(&sock).unwrap();
        let _client = connect(&sock).await.unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let long = PathBuf::from("/nonexistent")
            .join("c".repeat(120))
            .join("s");
        assert!(bind(&long).is_err());
    }
}
