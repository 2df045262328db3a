//! Takes the kernel's cgroup-migration wait off the path of a container start.
//!
//! The runtime moves each container's init into its cgroups by writing to `cgroup.procs`.
//! Such a write takes the kernel's threadgroup semaphore for writing, and the first writer
//! after a quiet spell waits for an RCU grace period (about 20 ms on the 2-core test VM:
//! most of a `docker start`'s runtime work); the semaphore then stays cheap to take until
//! one grace period after the last writer. So when a start is coming (a container or an
//! exec is created, or a start begins) a throwaway thread moves this process into the
//! cgroup it is already in, a no-op that pays the wait while the start is still being
//! prepared.

use std::sync::atomic::{AtomicBool, Ordering};

static IN_FLIGHT: AtomicBool = AtomicBool::new(false);

/// Starts a warm-up unless one is already waiting.
pub fn warm_up() {
    if IN_FLIGHT.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("cgroup-warmup".into())
        .spawn(|| {
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            if let Some(procs) = own_procs_file(&own)
                && let Err(e) = std::fs::write(&procs, std::process::id().to_string())
            {
                tracing::debug!(file = %procs.display(), "cgroup warm-up: {e}");
            }
            IN_FLIGHT.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        IN_FLIGHT.store(false, Ordering::Release);
    }
}

/// The `cgroup.procs` of the cgroup this process is in, from `/proc/self/cgroup`: the
/// v1 `pids` hierarchy's when there is one, else the unified hierarchy's.
fn own_procs_file(self_cgroup: &str) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let mut unified = None;
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "pids") {
            return Some(root.join("pids").join(rel).join("cgroup.procs"));
        }
        if controllers.is_empty() {
            unified = Some(rel.to_string());
        }
    }
    let rel = unified?;
    [root.join("unified"), root.to_path_buf()]
        .into_iter()
        .map(|base| base.join(&rel).join("cgroup.procs"))
        .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_uses_the_pids_hierarchy() {
        let text = "12:pids:/system.slice/berth.service\n0::/system.slice/berth.service\n";
        assert_eq!(
            own_procs_file(text).unwrap(),
            std::path::Path::new("/sys/fs/cgroup/pids/system.slice/berth.service/cgroup.procs")
        );
    }

    #[test]
    fn nothing_usable_gives_none() {
        assert_eq!(own_procs_file("garbage"), None);
        assert_eq!(own_procs_file("0::/surely/not/a/cgroup/here"), None);
    }
}
