//! `docker pause`: the cgroup freezer (v1 `freezer.state`, v2 `cgroup.freeze`), written
//! and then read back until the kernel reports every task frozen (or thawed).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the kernel gets to freeze or thaw every task.
const SETTLE: Duration = Duration::from_secs(5);

fn files(cgroup_root: &Path, rel: &str) -> (PathBuf, bool) {
    let rel = rel.trim_start_matches('/');
    if cgroup_root.join("cgroup.controllers").exists() {
        (cgroup_root.join(rel), true)
    } else {
        (cgroup_root.join("freezer").join(rel), false)
    }
}

/// Freezes (or thaws) the cgroup `rel` under `cgroup_root` and waits until it is.
pub fn set_frozen(cgroup_root: &Path, rel: &str, frozen: bool) -> std::io::Result<()> {
    let (dir, v2) = files(cgroup_root, rel);
    // (file to write, value, file that reports the state, the line it reports when done)
    let (file, value, report, done) = match (v2, frozen) {
        (true, true) => ("cgroup.freeze", "1", "cgroup.events", "frozen 1"),
        (true, false) => ("cgroup.freeze", "0", "cgroup.events", "frozen 0"),
        (false, true) => ("freezer.state", "FROZEN", "freezer.state", "FROZEN"),
        (false, false) => ("freezer.state", "THAWED", "freezer.state", "THAWED"),
    };
    std::fs::write(dir.join(file), value)?;
    let start = Instant::now();
    let settled = || {
        std::fs::read_to_string(dir.join(report))
            .is_ok_and(|text| text.lines().any(|l| l.trim() == done))
    };
    while !settled() {
        if start.elapsed() > SETTLE {
            return Err(std::io::Error::other(format!(
                "the cgroup did not reach {value} in {}s",
                SETTLE.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_writes_and_reads_back_the_state() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("freezer/berth-x/c1");
        std::fs::create_dir_all(&dir).unwrap();
        // A fake freezer settles at once: the file reads what was written.
        set_frozen(t.path(), "/berth-x/c1", true).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("freezer.state")).unwrap(),
            "FROZEN"
        );
        set_frozen(t.path(), "/berth-x/c1", false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("freezer.state")).unwrap(),
            "THAWED"
        );
    }

    #[test]
    fn v2_waits_for_cgroup_events() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cgroup.controllers"), "").unwrap();
        let dir = t.path().join("berth-x/c1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        set_frozen(t.path(), "berth-x/c1", true).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("cgroup.freeze")).unwrap(),
            "1"
        );
    }
}
