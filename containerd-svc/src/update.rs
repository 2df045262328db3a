//! `docker update`: new resource limits (and restart policy) for a container. The stored
//! HostConfig takes them (so inspect and the next start agree) and, when the container
//! runs, its cgroup is rewritten in place (v1 controller files or the v2 tree).

use crate::Error;
use serde_json::{Value, json};
use std::path::Path;

/// The HostConfig keys `docker update` may change.
const UPDATABLE: &[&str] = &[
    "Memory",
    "MemorySwap",
    "MemoryReservation",
    "CpuShares",
    "NanoCpus",
    "CpuQuota",
    "CpuPeriod",
    "CpusetCpus",
    "CpusetMems",
    "PidsLimit",
    "RestartPolicy",
];

/// Merges the non-zero, non-empty fields of `update` into `host_config`; returns which
/// keys changed.
pub fn merge(host_config: &mut Value, update: &Value) -> Result<Vec<String>, Error> {
    if !host_config.is_object() {
        *host_config = json!({});
    }
    let mut changed = Vec::new();
    for key in UPDATABLE {
        let Some(v) = update.get(*key) else { continue };
        let set = match v {
            Value::Null => false,
            Value::Number(n) => n.as_i64() != Some(0),
            Value::String(s) => !s.is_empty(),
            Value::Object(o) => o
                .get("Name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty()),
            _ => true,
        };
        if set {
            host_config[*key] = v.clone();
            changed.push(key.to_string());
        }
    }
    if changed.iter().any(|k| k == "NanoCpus")
        && (host_config["CpuQuota"].as_i64().unwrap_or(0) > 0
            || host_config["CpuPeriod"].as_i64().unwrap_or(0) > 0)
    {
        return Err(Error::InvalidArgument(
            "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set"
                .into(),
        ));
    }
    let memory = host_config["Memory"].as_i64().unwrap_or(0);
    let swap = host_config["MemorySwap"].as_i64().unwrap_or(0);
    if memory > 0 && swap > 0 && swap < memory {
        return Err(Error::InvalidArgument(
            "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
        ));
    }
    Ok(changed)
}

fn write(path: &Path, value: &str) -> Result<(), Error> {
    std::fs::write(path, value)
        .map_err(|e| Error::Internal(format!("writing {value} to {}: {e}", path.display())))
}

/// Writes the limits of `host_config` named in `changed` into the running container's
/// cgroup `rel` under `cgroup_root`.
pub fn apply_to_cgroup(
    cgroup_root: &Path,
    rel: &str,
    host_config: &Value,
    changed: &[String],
) -> Result<(), Error> {
    let rel = rel.trim_start_matches('/');
    let has = |k: &str| changed.iter().any(|c| c == k);
    let int = |k: &str| host_config[k].as_i64().unwrap_or(0);
    let v2 = cgroup_root.join("cgroup.controllers").exists();
    let file = |controller: &str, name: &str| {
        if v2 {
            cgroup_root.join(rel).join(name)
        } else {
            cgroup_root.join(controller).join(rel).join(name)
        }
    };
    if has("Memory") || has("MemorySwap") {
        let (memory, swap) = (int("Memory"), int("MemorySwap"));
        if v2 {
            if memory > 0 {
                write(&file("memory", "memory.max"), &memory.to_string())?;
            }
            if swap > 0 && memory > 0 {
                write(
                    &file("memory", "memory.swap.max"),
                    &(swap - memory).to_string(),
                )?;
            } else if swap < 0 {
                write(&file("memory", "memory.swap.max"), "max")?;
            }
        } else {
            let mem = file("memory", "memory.limit_in_bytes");
            let memsw = file("memory", "memory.memsw.limit_in_bytes");
            // memsw must stay >= the memory limit at every step: raise it first when the
            // memory limit grows past it, lower it last.
            let current_memsw: i64 = std::fs::read_to_string(&memsw)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(i64::MAX);
            let swap_target = if swap > 0 {
                swap
            } else if swap < 0 {
                -1
            } else {
                0
            };
            if memory > 0 && memory > current_memsw && memsw.exists() {
                let to = if swap_target != 0 { swap_target } else { -1 };
                write(&memsw, &to.to_string())?;
                write(&mem, &memory.to_string())?;
            } else {
                if memory > 0 {
                    write(&mem, &memory.to_string())?;
                }
                if swap_target != 0 && memsw.exists() {
                    write(&memsw, &swap_target.to_string())?;
                }
            }
        }
    }
    if has("MemoryReservation") {
        let (name, ctl) = if v2 {
            ("memory.low", "memory")
        } else {
            ("memory.soft_limit_in_bytes", "memory")
        };
        write(&file(ctl, name), &int("MemoryReservation").to_string())?;
    }
    if has("CpuShares") {
        let shares = int("CpuShares");
        if v2 {
            // The kernel's conversion from cgroup v1 shares to v2 weight.
            let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
            write(&file("cpu", "cpu.weight"), &weight.to_string())?;
        } else {
            write(&file("cpu", "cpu.shares"), &shares.to_string())?;
        }
    }
    if has("NanoCpus") || has("CpuQuota") || has("CpuPeriod") {
        let (quota, period) = if int("NanoCpus") > 0 {
            (int("NanoCpus") * 100_000 / 1_000_000_000, 100_000)
        } else {
            (int("CpuQuota"), int("CpuPeriod").max(0))
        };
        let period = if period > 0 { period } else { 100_000 };
        if v2 {
            let q = if quota > 0 {
                quota.to_string()
            } else {
                "max".into()
            };
            write(&file("cpu", "cpu.max"), &format!("{q} {period}"))?;
        } else {
            write(&file("cpu", "cpu.cfs_period_us"), &period.to_string())?;
            write(
                &file("cpu", "cpu.cfs_quota_us"),
                &(if quota > 0 { quota } else { -1 }).to_string(),
            )?;
        }
    }
    for (key, name) in [("CpusetCpus", "cpuset.cpus"), ("CpusetMems", "cpuset.mems")] {
        if has(key) {
            let v = host_config[key].as_str().unwrap_or_default();
            write(&file("cpuset", name), v)?;
        }
    }
    if has("PidsLimit") {
        let limit = int("PidsLimit");
        let v = if limit > 0 {
            limit.to_string()
        } else {
            "max".into()
        };
        write(&file("pids", "pids.max"), &v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_only_what_is_set() {
        let mut hc = json!({"Memory": 100, "CpuShares": 0, "NetworkMode": "bridge"});
        let changed = merge(
            &mut hc,
            &json!({"Memory": 0, "CpuShares": 512, "PidsLimit": 10, "RestartPolicy": {"Name": ""}, "Bogus": 1}),
        )
        .unwrap();
        assert_eq!(changed, ["CpuShares", "PidsLimit"]);
        assert_eq!(hc["Memory"], 100);
        assert_eq!(hc["CpuShares"], 512);
        assert_eq!(hc["NetworkMode"], "bridge");
        assert!(hc.get("Bogus").is_none());
        assert!(merge(&mut json!({"Memory": 100}), &json!({"MemorySwap": 50})).is_err());
        assert!(merge(&mut json!({"CpuQuota": 5000}), &json!({"NanoCpus": 1})).is_err());
    }

    #[test]
    fn writes_v1_files_in_a_safe_order() {
        let t = tempfile::tempdir().unwrap();
        let at = |c: &str| t.path().join(c).join("p/c");
        for c in ["memory", "cpu", "pids", "cpuset"] {
            std::fs::create_dir_all(at(c)).unwrap();
        }
        std::fs::write(at("memory").join("memory.memsw.limit_in_bytes"), "1000").unwrap();
        let hc = json!({"Memory": 5000, "MemorySwap": 8000, "CpuShares": 256, "NanoCpus": 500_000_000, "PidsLimit": 7, "CpusetCpus": "0"});
        let changed: Vec<String> = [
            "Memory",
            "MemorySwap",
            "CpuShares",
            "NanoCpus",
            "PidsLimit",
            "CpusetCpus",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        apply_to_cgroup(t.path(), "/p/c", &hc, &changed).unwrap();
        let read = |c: &str, f: &str| std::fs::read_to_string(at(c).join(f)).unwrap();
        assert_eq!(read("memory", "memory.limit_in_bytes"), "5000");
        assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), "8000");
        assert_eq!(read("cpu", "cpu.shares"), "256");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("pids", "pids.max"), "7");
        assert_eq!(read("cpuset", "cpuset.cpus"), "0");
    }

    #[test]
    fn writes_the_v2_tree() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cgroup.controllers"), "").unwrap();
        let dir = t.path().join("p/c");
        std::fs::create_dir_all(&dir).unwrap();
        let hc = json!({"Memory": 4096, "MemorySwap": 8192, "CpuShares": 1024, "NanoCpus": 2_000_000_000i64, "PidsLimit": 0});
        let changed: Vec<String> = ["Memory", "MemorySwap", "CpuShares", "NanoCpus", "PidsLimit"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        apply_to_cgroup(t.path(), "p/c", &hc, &changed).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), "4096");
        assert_eq!(read("memory.swap.max"), "4096");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "200000 100000");
        assert_eq!(read("pids.max"), "max");
    }
}
