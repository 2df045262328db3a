//! `<exec-root>/berthd.pid`: one berthd per exec root.
//!
//! Ownership is an exclusive `flock` on the file, held for berthd's lifetime, so a
//! berthd that died (even by SIGKILL) never blocks the next one, and a pid that the
//! kernel reused can never be mistaken for a live berthd.

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Taking the pid file failed.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Another berthd holds the lock.
    #[error("another berthd (pid {pid}) is already running with exec root {exec_root}")]
    Busy {
        /// Its pid as written in the file ("unknown" if unreadable).
        pid: String,
        /// The contested exec root.
        exec_root: PathBuf,
    },
    /// The file could not be opened, locked or written.
    #[error("pid file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The held pid file; dropping it removes the file and releases the lock.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    _lock: Flock<File>,
}

impl PidFile {
    /// Locks `<exec_root>/berthd.pid` and writes our pid into it.
    pub fn acquire(exec_root: &Path) -> Result<Self, PidFileError> {
        let path = exec_root.join("berthd.pid");
        let io = |source| PidFileError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(PidFileError::Busy {
                    pid: if pid.is_empty() { "unknown" } else { pid }.to_string(),
                    exec_root: exec_root.to_path_buf(),
                });
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        lock.set_len(0).map_err(io)?;
        lock.rewind().map_err(io)?;
        writeln!(lock, "{}", std::process::id()).map_err(io)?;
        Ok(Self { path, _lock: lock })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Unlinked while still locked: a berthd starting now either saw our lock or
        // creates a fresh file.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_per_exec_root() {
        let dir = tempfile::tempdir().unwrap();
        let first = PidFile::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("berthd.pid")).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        let err = PidFile::acquire(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("another berthd (pid {})", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(!dir.path().join("berthd.pid").exists());
        let _again = PidFile::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_stale_file_without_a_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("berthd.pid"), "999999999\n").unwrap();
        let _p = PidFile::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("berthd.pid")).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
    }
}
