//! `docker stats` samples: a container's CPU, memory, pids and block I/O from its cgroup
//! (v1 controllers or the v2 unified tree), its network counters from the namespace of
//! its init, and the host's CPU time. Readers take a root directory so tests can feed
//! them fixture trees.

use berth_proto::containers::{BlkioEntry, ContainerStats, NetworkStats};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The kernel's USER_HZ: `cpuacct.stat` and `/proc/stat` count in its ticks.
const TICKS_PER_SECOND: u64 = 100;
const NANOS_PER_TICK: u64 = 1_000_000_000 / TICKS_PER_SECOND;

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn read_u64(p: &Path) -> Option<u64> {
    read(p)?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat, cpuacct.stat).
fn key_values(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// Where a container's cgroup lives: v2 (one dir) or v1 (one dir per controller).
pub enum CgroupDirs {
    V2(PathBuf),
    V1 { root: PathBuf, rel: PathBuf },
}

impl CgroupDirs {
    /// `cgroup_root` is normally /sys/fs/cgroup; `rel` the container's cgroupsPath.
    pub fn detect(cgroup_root: &Path, rel: &str) -> Self {
        let rel = PathBuf::from(rel.trim_start_matches('/'));
        if cgroup_root.join("cgroup.controllers").exists() {
            Self::V2(cgroup_root.join(rel))
        } else {
            Self::V1 {
                root: cgroup_root.to_path_buf(),
                rel,
            }
        }
    }

    fn v1(&self, controller: &str, file: &str) -> Option<PathBuf> {
        match self {
            Self::V1 { root, rel } => Some(root.join(controller).join(rel).join(file)),
            Self::V2(_) => None,
        }
    }
}

/// Fills the cgroup figures of `out`; `host_memory` caps an unlimited memory limit.
pub fn read_cgroup(dirs: &CgroupDirs, host_memory: u64, out: &mut ContainerStats) {
    match dirs {
        CgroupDirs::V2(dir) => read_v2(dir, host_memory, out),
        CgroupDirs::V1 { .. } => read_v1(dirs, host_memory, out),
    }
}

fn read_v1(d: &CgroupDirs, host_memory: u64, out: &mut ContainerStats) {
    let f = |c: &str, n: &str| d.v1(c, n).unwrap_or_default();
    out.cgroup_version = 1;
    out.cpu_total_ns = read_u64(&f("cpuacct", "cpuacct.usage")).unwrap_or(0);
    out.percpu_ns = read(&f("cpuacct", "cpuacct.usage_percpu"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let ticks = read(&f("cpuacct", "cpuacct.stat"))
        .map(|s| key_values(&s))
        .unwrap_or_default();
    out.cpu_user_ns = ticks.get("user").copied().unwrap_or(0) * NANOS_PER_TICK;
    out.cpu_kernel_ns = ticks.get("system").copied().unwrap_or(0) * NANOS_PER_TICK;
    let cpu = read(&f("cpu", "cpu.stat"))
        .map(|s| key_values(&s))
        .unwrap_or_default();
    out.throttling_periods = cpu.get("nr_periods").copied().unwrap_or(0);
    out.throttled_periods = cpu.get("nr_throttled").copied().unwrap_or(0);
    out.throttled_ns = cpu.get("throttled_time").copied().unwrap_or(0);
    out.memory_usage = read_u64(&f("memory", "memory.usage_in_bytes")).unwrap_or(0);
    out.memory_max_usage = read_u64(&f("memory", "memory.max_usage_in_bytes")).unwrap_or(0);
    let limit = read_u64(&f("memory", "memory.limit_in_bytes")).unwrap_or(u64::MAX);
    out.memory_limit = limit.min(host_memory);
    out.memory_stat = read(&f("memory", "memory.stat"))
        .map(|s| key_values(&s))
        .unwrap_or_default();
    out.pids_current = read_u64(&f("pids", "pids.current")).unwrap_or(0);
    out.pids_limit = read_u64(&f("pids", "pids.max")).unwrap_or(0);
    out.blkio = read(&f("blkio", "blkio.throttle.io_service_bytes_recursive"))
        .map(|s| blkio_v1(&s))
        .unwrap_or_default();
}

/// `8:0 Read 4096` lines; the `Total` line of the file is left out, as Docker does.
fn blkio_v1(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (major, minor) = it.next()?.split_once(':')?;
            let op = it.next()?;
            let value = it.next()?.parse().ok()?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_ascii_lowercase(),
                value,
            })
        })
        .collect()
}

fn read_v2(dir: &Path, host_memory: u64, out: &mut ContainerStats) {
    out.cgroup_version = 2;
    let cpu = read(&dir.join("cpu.stat"))
        .map(|s| key_values(&s))
        .unwrap_or_default();
    let usec = |k: &str| cpu.get(k).copied().unwrap_or(0) * 1000;
    out.cpu_total_ns = usec("usage_usec");
    out.cpu_user_ns = usec("user_usec");
    out.cpu_kernel_ns = usec("system_usec");
    out.throttling_periods = cpu.get("nr_periods").copied().unwrap_or(0);
    out.throttled_periods = cpu.get("nr_throttled").copied().unwrap_or(0);
    out.throttled_ns = usec("throttled_usec");
    out.memory_usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
    // "max" does not parse: unlimited.
    out.memory_limit = read_u64(&dir.join("memory.max"))
        .unwrap_or(u64::MAX)
        .min(host_memory);
    out.memory_stat = read(&dir.join("memory.stat"))
        .map(|s| key_values(&s))
        .unwrap_or_default();
    out.pids_current = read_u64(&dir.join("pids.current")).unwrap_or(0);
    out.pids_limit = read_u64(&dir.join("pids.max")).unwrap_or(0);
    out.blkio = read(&dir.join("io.stat"))
        .map(|s| io_v2(&s))
        .unwrap_or_default();
}

/// `8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...`: bytes as Docker's read/write entries.
fn io_v2(text: &str) -> Vec<BlkioEntry> {
    let mut out = Vec::new();
    for l in text.lines() {
        let mut it = l.split_whitespace();
        let Some((major, minor)) = it.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let op = match k {
                "rbytes" => "read",
                "wbytes" => "write",
                _ => continue,
            };
            if let Ok(value) = v.parse() {
                out.push(BlkioEntry {
                    major,
                    minor,
                    op: op.into(),
                    value,
                });
            }
        }
    }
    out
}

/// The host's CPU time in nanoseconds and its CPU count, from /proc/stat's text.
pub fn system_cpu(proc_stat: &str) -> (u64, u32) {
    let mut total = 0;
    let mut cpus = 0;
    for l in proc_stat.lines() {
        let mut it = l.split_whitespace();
        match it.next() {
            // user nice system idle iowait irq softirq steal (guest time is in user).
            Some("cpu") => {
                total = it
                    .take(8)
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum::<u64>()
                    * NANOS_PER_TICK
            }
            Some(c) if c.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    (total, cpus)
}

/// Interfaces of a network namespace but loopback, from `/proc/<pid>/net/dev`'s text.
pub fn net_dev(text: &str) -> Vec<NetworkStats> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() < 12 {
                return None;
            }
            Some(NetworkStats {
                name: name.to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            })
        })
        .collect()
}

/// The pids in a container's cgroup (v1: the pids controller's copy of it).
pub fn cgroup_pids(cgroup_root: &Path, cgroups_path: &str) -> Vec<i32> {
    let rel = cgroups_path.trim_start_matches('/');
    let file = match CgroupDirs::detect(cgroup_root, cgroups_path) {
        CgroupDirs::V2(dir) => dir.join("cgroup.procs"),
        CgroupDirs::V1 { root, .. } => root.join("pids").join(rel).join("cgroup.procs"),
    };
    read(&file)
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The host's memory in bytes (/proc/meminfo MemTotal).
pub fn host_memory() -> u64 {
    read(Path::new("/proc/meminfo"))
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kib| kib * 1024)
}

/// One sample of a running container: its cgroup (`cgroups_path`) and the network of
/// its init `pid`.
pub fn sample(cgroups_path: &str, pid: i32) -> ContainerStats {
    let mut out = ContainerStats {
        read_unix_nano: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        ..Default::default()
    };
    let dirs = CgroupDirs::detect(Path::new("/sys/fs/cgroup"), cgroups_path);
    read_cgroup(&dirs, host_memory(), &mut out);
    let (system, cpus) = read(Path::new("/proc/stat"))
        .map(|s| system_cpu(&s))
        .unwrap_or((0, 0));
    out.system_cpu_ns = system;
    out.online_cpus = cpus;
    out.networks = read(&PathBuf::from(format!("/proc/{pid}/net/dev")))
        .map(|s| net_dev(&s))
        .unwrap_or_default();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }

    #[test]
    fn reads_cgroup_v1_controllers() {
        let t = tempfile::tempdir().unwrap();
        let rel = "berth-x/c1";
        let at = |c: &str| t.path().join(c).join(rel);
        write(&at("cpuacct"), "cpuacct.usage", "5000000000\n");
        write(
            &at("cpuacct"),
            "cpuacct.usage_percpu",
            "3000000000 2000000000 \n",
        );
        write(&at("cpuacct"), "cpuacct.stat", "user 300\nsystem 150\n");
        write(
            &at("cpu"),
            "cpu.stat",
            "nr_periods 10\nnr_throttled 2\nthrottled_time 777\n",
        );
        write(&at("memory"), "memory.usage_in_bytes", "1048576\n");
        write(&at("memory"), "memory.max_usage_in_bytes", "2097152\n");
        write(
            &at("memory"),
            "memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(
            &at("memory"),
            "memory.stat",
            "cache 4096\ntotal_inactive_file 8192\n",
        );
        write(&at("pids"), "pids.current", "3\n");
        write(&at("pids"), "pids.max", "max\n");
        write(
            &at("blkio"),
            "blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 4096\n8:0 Write 8192\nTotal 12288\n",
        );
        let dirs = CgroupDirs::detect(t.path(), &format!("/{rel}"));
        let mut s = ContainerStats::default();
        read_cgroup(&dirs, 1 << 30, &mut s);
        assert_eq!(s.cgroup_version, 1);
        assert_eq!(s.cpu_total_ns, 5_000_000_000);
        assert_eq!(s.percpu_ns, vec![3_000_000_000, 2_000_000_000]);
        assert_eq!(
            (s.cpu_user_ns, s.cpu_kernel_ns),
            (3_000_000_000, 1_500_000_000)
        );
        assert_eq!(
            (s.throttling_periods, s.throttled_periods, s.throttled_ns),
            (10, 2, 777)
        );
        assert_eq!((s.memory_usage, s.memory_max_usage), (1 << 20, 2 << 20));
        // Unlimited: the host's memory.
        assert_eq!(s.memory_limit, 1 << 30);
        assert_eq!(s.memory_stat.get("total_inactive_file"), Some(&8192));
        assert_eq!((s.pids_current, s.pids_limit), (3, 0));
        assert_eq!(s.blkio.len(), 2);
        assert_eq!((s.blkio[1].op.as_str(), s.blkio[1].value), ("write", 8192));
    }

    #[test]
    fn reads_the_cgroup_v2_tree() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "cgroup.controllers", "cpu memory pids io\n");
        let dir = t.path().join("berth-x/c1");
        write(
            &dir,
            "cpu.stat",
            "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 9\n",
        );
        write(&dir, "memory.current", "4096\n");
        write(&dir, "memory.max", "65536\n");
        write(&dir, "memory.stat", "inactive_file 1024\n");
        write(&dir, "pids.current", "2\n");
        write(&dir, "pids.max", "100\n");
        write(
            &dir,
            "io.stat",
            "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        let mut s = ContainerStats::default();
        read_cgroup(
            &CgroupDirs::detect(t.path(), "/berth-x/c1"),
            1 << 30,
            &mut s,
        );
        assert_eq!(s.cgroup_version, 2);
        assert_eq!(
            (s.cpu_total_ns, s.cpu_user_ns, s.cpu_kernel_ns),
            (2_000_000, 1_500_000, 500_000)
        );
        assert_eq!(s.throttled_ns, 9000);
        assert_eq!((s.memory_usage, s.memory_limit), (4096, 65536));
        assert_eq!((s.pids_current, s.pids_limit), (2, 100));
        let ops: Vec<(&str, u64)> = s.blkio.iter().map(|b| (b.op.as_str(), b.value)).collect();
        assert_eq!(ops, vec![("read", 10), ("write", 20)]);
    }

    #[test]
    fn host_cpu_and_network_counters() {
        let stat = "cpu  100 0 50 800 10 0 0 0 0 0\ncpu0 50 0 25 400 5 0 0 0 0 0\ncpu1 50 0 25 400 5 0 0 0 0 0\nintr 1\n";
        assert_eq!(system_cpu(stat), (960 * NANOS_PER_TICK, 2));
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  eth0: 1500 12 1 2 0 0 0 0 900 9 3 4 0 0 0 0\n";
        let n = net_dev(dev);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].name, "eth0");
        assert_eq!(
            (
                n[0].rx_bytes,
                n[0].rx_packets,
                n[0].rx_errors,
                n[0].rx_dropped
            ),
            (1500, 12, 1, 2)
        );
        assert_eq!(
            (
                n[0].tx_bytes,
                n[0].tx_packets,
                n[0].tx_errors,
                n[0].tx_dropped
            ),
            (900, 9, 3, 4)
        );
    }
}
