//! Takes the kernel's cgroup-migration wait off the path of container starts and execs.
//!
//! The runtime moves each container's init, and each exec's process, into the
//! container's cgroups by writing to `cgroup.procs`. Such a write takes the kernel's
//! threadgroup semaphore for writing, and the first writer after a quiet spell waits for
//! an RCU grace period (6 to 16 ms on the 2-core test VM, median 8: most of an exec's
//! runtime work); the semaphore then stays cheap to take until one grace period after
//! the last writer. So when a start or an exec is coming (a container or an exec is
//! created, or a start begins) a thread moves this process into the cgroup it is already
//! in, a no-op that pays the wait while the start is still being prepared, and repeats
//! the move every few milliseconds for a second after the last such event, so that the
//! starts and execs that follow (a script, a compose project, a healthcheck) find the
//! semaphore cheap. The cost falls on fork, exec and exit elsewhere on the machine:
//! while it is kept warm they take the semaphore's slower path (a memory barrier), and
//! each no-op move holds it for writing for some microseconds, which they wait out. The
//! kernel's `favordynmods` cgroup option makes the first trade for good.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the semaphore is kept cheap after the last start or exec.
const KEEP_WARM: Duration = Duration::from_secs(1);
/// Between two no-op moves: under the shortest grace period seen (about 6 ms).
const EVERY: Duration = Duration::from_millis(3);

/// Until when the warm-up thread runs (`None`: no thread runs).
static WARM_UNTIL: Mutex<Option<Instant>> = Mutex::new(None);

/// Keeps the semaphore warm for [`KEEP_WARM`] from now, starting the thread if needed.
pub fn warm_up() {
    let until = Instant::now() + KEEP_WARM;
    let mut g = WARM_UNTIL.lock().unwrap_or_else(|p| p.into_inner());
    let running = g.is_some();
    *g = Some(until);
    if running {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("cgroup-warmup".into())
        .spawn(keep_warm);
    if spawned.is_err() {
        *g = None;
    }
}

fn keep_warm() {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let procs = own_procs_file(&own);
    let pid = std::process::id().to_string();
    loop {
        if let Some(procs) = &procs
            && let Err(e) = std::fs::write(procs, &pid)
        {
            tracing::debug!(file = %procs.display(), "cgroup warm-up: {e}");
        }
        {
            let mut g = WARM_UNTIL.lock().unwrap_or_else(|p| p.into_inner());
            if procs.is_none() || g.is_none_or(|until| Instant::now() >= until) {
                *g = None;
                return;
            }
        }
        std::thread::sleep(EVERY);
    }
}

/// Whether the warm-up thread is running.
#[cfg(test)]
fn is_warm() -> bool {
    WARM_UNTIL
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some()
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
    fn the_thread_stops_after_the_last_request() {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let usable = own_procs_file(&own).is_some();
        warm_up();
        // Without a cgroup to move into, the thread stops at once.
        assert!(is_warm() || !usable);
        let started = Instant::now();
        while is_warm() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
            // Renewed for the first half second: the deadline moves with each request.
            if started.elapsed() < Duration::from_millis(500) {
                warm_up();
            }
        }
        assert!(!is_warm(), "the warm-up thread never stopped");
        if usable {
            // It ran a second past the last request, not less.
            let ran = started.elapsed();
            assert!(ran >= Duration::from_millis(1400), "stopped after {ran:?}");
        }
    }

    #[test]
    fn nothing_usable_gives_none() {
        assert_eq!(own_procs_file("garbage"), None);
        assert_eq!(own_procs_file("0::/surely/not/a/cgroup/here"), None);
    }
}
