//! `<shim-dir>/exit`: the init's exit status, written whole before anyone is told.
//! berth-containerd reads the same JSON when the shim is gone.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// File name inside the shim dir.
pub const EXIT_FILE: &str = "exit";

/// What the exit file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code, or 128+signal (Docker's convention) when killed by a signal.
    pub exit_code: i32,
    /// When the init was reaped.
    pub exited_at_unix_nano: i64,
    /// The init's pid.
    pub pid: i32,
}

/// Writes `rec` to `<dir>/exit` via tmp + rename.
pub fn write(dir: &Path, rec: &ExitRecord) -> std::io::Result<()> {
    write_json(dir, EXIT_FILE, rec)
}

/// Writes `value` as JSON to `<dir>/<name>` via tmp + rename: a reader (or a process
/// that crashed half-way) sees the whole record or none. No fsync: these records only
/// matter while their container's processes could still be running, which a machine
/// crash ends (the run root is tmpfs by default; elsewhere a record a crash leaves empty
/// reads as no record, as for a shim that died), so syncing would buy nothing and cost
/// milliseconds on every exit and exec.
pub fn write_json(dir: &Path, name: &str, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let data = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
    }
    std::fs::rename(&tmp, dir.join(name))
}

/// Reads `<dir>/exit`; `None` when absent or unreadable.
pub fn read(dir: &Path) -> Option<ExitRecord> {
    let data = std::fs::read(dir.join(EXIT_FILE)).ok()?;
    serde_json::from_slice(&data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert!(read(d.path()).is_none());
        let rec = ExitRecord {
            exit_code: 137,
            exited_at_unix_nano: 42,
            pid: 7,
        };
        write(d.path(), &rec).unwrap();
        assert_eq!(read(d.path()), Some(rec));
        assert!(!d.path().join("exit.tmp").exists());
    }
}
