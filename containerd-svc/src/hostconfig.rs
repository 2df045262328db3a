//! The `docker run` options that live in Docker's HostConfig, applied to the OCI config
//! built by [`crate::spec`]: capabilities and `--privileged`, `--read-only`, CPU and
//! memory limits, `--ulimit`, `--sysctl`, `--shm-size`, `--group-add`, `--device`,
//! `--security-opt no-new-privileges|seccomp=...`. The HostConfig is the one the gateway
//! stored for inspect, so what inspect shows is what runs.

use crate::Error;
use serde_json::{Value, json};
use std::path::Path;

/// Every capability the kernel knows (what `--privileged` and `--cap-add ALL` grant).
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The CFS period Docker uses for `--cpus`.
const CPU_PERIOD: i64 = 100_000;

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn int(hc: &Value, key: &str) -> i64 {
    hc.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// `NET_ADMIN`, `cap_net_admin` and `CAP_NET_ADMIN` all name CAP_NET_ADMIN.
fn cap_name(name: &str) -> Result<String, Error> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::InvalidArgument(format!(
            "unknown capability: {name:?}"
        )))
    }
}

/// The capabilities in this process's bounding set: no container can hold more (a host
/// may withhold some, e.g. CAP_SYS_RESOURCE in some sandboxes), so "all" means these.
pub fn grantable() -> Vec<String> {
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask >> bit & 1 == 1)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// The effective capability set: Docker's defaults, minus CapDrop, plus CapAdd (ALL in
/// either means every capability or none; every one means every one this host grants).
pub fn capabilities(defaults: &[&str], hc: &Value) -> Result<Vec<String>, Error> {
    let grantable = grantable();
    if hc.get("Privileged").and_then(Value::as_bool) == Some(true) {
        return Ok(grantable);
    }
    let add = strings(hc.get("CapAdd"))
        .iter()
        .map(|c| cap_name(c))
        .collect::<Result<Vec<_>, _>>()?;
    let drop = strings(hc.get("CapDrop"))
        .iter()
        .map(|c| cap_name(c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut caps: Vec<String> = if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        defaults
            .iter()
            .filter(|c| !drop.iter().any(|d| d == *c))
            .map(|c| c.to_string())
            .collect()
    };
    if add.iter().any(|c| c == "ALL") {
        return Ok(grantable);
    }
    for c in add {
        if !grantable.contains(&c) {
            return Err(Error::InvalidArgument(format!(
                "cannot add {c}: it is not in the daemon's own capability bounding set"
            )));
        }
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// `--ulimit nofile=1024:2048` as OCI rlimits (replacing the default of the same type).
fn rlimits(hc: &Value, config: &mut Value) -> Result<(), Error> {
    let Some(list) = hc.get("Ulimits").and_then(Value::as_array) else {
        return Ok(());
    };
    let limits = config["process"]["rlimits"]
        .as_array_mut()
        .ok_or_else(|| Error::Internal("config without rlimits".into()))?;
    for u in list {
        let name = u.get("Name").and_then(Value::as_str).unwrap_or_default();
        let kind = format!("RLIMIT_{}", name.to_ascii_uppercase());
        const KNOWN: &[&str] = &[
            "RLIMIT_CORE",
            "RLIMIT_CPU",
            "RLIMIT_DATA",
            "RLIMIT_FSIZE",
            "RLIMIT_LOCKS",
            "RLIMIT_MEMLOCK",
            "RLIMIT_MSGQUEUE",
            "RLIMIT_NICE",
            "RLIMIT_NOFILE",
            "RLIMIT_NPROC",
            "RLIMIT_RSS",
            "RLIMIT_RTPRIO",
            "RLIMIT_RTTIME",
            "RLIMIT_SIGPENDING",
            "RLIMIT_STACK",
            "RLIMIT_AS",
        ];
        if !KNOWN.contains(&kind.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "invalid ulimit type: {name}"
            )));
        }
        let soft = u.get("Soft").and_then(Value::as_i64).unwrap_or(0);
        let hard = u.get("Hard").and_then(Value::as_i64).unwrap_or(soft);
        if soft > hard {
            return Err(Error::InvalidArgument(format!(
                "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            )));
        }
        limits.retain(|l| l["type"] != kind.as_str());
        // -1 is "unlimited".
        let v = |n: i64| if n < 0 { u64::MAX } else { n as u64 };
        limits.push(json!({"type": kind, "soft": v(soft), "hard": v(hard)}));
    }
    Ok(())
}

/// `--group-add`: numbers, or names from the image's /etc/group.
fn additional_gids(hc: &Value, rootfs: &Path) -> Result<Vec<u32>, Error> {
    let groups = crate::spec::etc_file(rootfs, "/etc/group");
    strings(hc.get("GroupAdd"))
        .iter()
        .map(|g| {
            g.parse::<u32>().or_else(|_| {
                groups
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|e| e.len() >= 3 && e[0] == g)
                    .and_then(|e| e[2].parse().ok())
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "Unable to find group {g}: no matching entries in group file"
                        ))
                    })
            })
        })
        .collect()
}

/// A host device node as an OCI device and its cgroup rule (`--device`).
fn host_device(host: &str, inside: &str, perms: &str) -> Result<(Value, Value), Error> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(host).map_err(|e| {
        Error::InvalidArgument(format!(
            "error gathering device information while adding custom device {host:?}: {e}"
        ))
    })?;
    let kind = if md.file_type().is_char_device() {
        "c"
    } else if md.file_type().is_block_device() {
        "b"
    } else {
        return Err(Error::InvalidArgument(format!(
            "{host:?} is not a device node"
        )));
    };
    let rdev = md.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let perms = if perms.is_empty() { "rwm" } else { perms };
    Ok((
        json!({"path": inside, "type": kind, "major": major, "minor": minor,
               "fileMode": md.mode() & 0o777, "uid": md.uid(), "gid": md.gid()}),
        json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": perms}),
    ))
}

/// Every device node directly in the host's /dev (what `--privileged` gets).
fn all_host_devices() -> Vec<(Value, Value)> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(rd) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    rd.flatten()
        // Real nodes only: links (stdin, fd, rtc, ...) point into /proc or at other nodes.
        .filter(|e| {
            e.file_type()
                .is_ok_and(|t| t.is_char_device() || t.is_block_device())
        })
        .filter_map(|e| {
            let p = e.path().display().to_string();
            // The container has its own pty, console and shm.
            if matches!(p.as_str(), "/dev/ptmx" | "/dev/console" | "/dev/tty") {
                return None;
            }
            host_device(&p, &p, "rwm").ok()
        })
        .collect()
}

/// Docker's seccomp profile format (what `--security-opt seccomp=<file>` sends) as the
/// OCI form: the same keys but for `archMap`, which names architectures by groups.
fn seccomp_profile(text: &str) -> Result<Value, Error> {
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| Error::InvalidArgument(format!("decoding seccomp profile failed: {e}")))?;
    let mut out = json!({
        "defaultAction": doc.get("defaultAction").cloned().unwrap_or(json!("SCMP_ACT_ALLOW")),
        "syscalls": doc.get("syscalls").cloned().unwrap_or(json!([])),
    });
    if let Some(errno) = doc.get("defaultErrnoRet") {
        out["defaultErrnoRet"] = errno.clone();
    }
    let arches = doc.get("architectures").cloned().or_else(|| {
        doc.get("archMap").and_then(Value::as_array).map(|m| {
            m.iter()
                .flat_map(|a| {
                    let mut v = vec![a["architecture"].clone()];
                    v.extend(
                        a["subArchitectures"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default(),
                    );
                    v
                })
                .collect()
        })
    });
    if let Some(a) = arches {
        out["architectures"] = a;
    }
    Ok(out)
}

/// Where Docker mounts its init in the container.
pub const INIT_IN_CONTAINER: &str = "/sbin/docker-init";

/// `--pid`, `--ipc`, `--uts`: `host` shares that namespace of the host, as Docker does
/// (with `--ipc host` the host's /dev/shm too; `--ipc none` has no /dev/shm). Joining
/// another container's (`container:<name>`) is refused as not supported yet.
fn namespace_modes(hc: &Value, config: &mut Value) -> Result<(), Error> {
    for (key, ns, flag) in [
        ("PidMode", "pid", "--pid"),
        ("IpcMode", "ipc", "--ipc"),
        ("UTSMode", "uts", "--uts"),
    ] {
        let mode = hc.get(key).and_then(Value::as_str).unwrap_or_default();
        match (ns, mode) {
            (_, "") | ("ipc", "private" | "shareable") => {}
            ("ipc", "none") => remove_mount(config, "/dev/shm"),
            (_, "host") => {
                if let Some(list) = config["linux"]["namespaces"].as_array_mut() {
                    list.retain(|n| n["type"] != ns);
                }
                match ns {
                    // The host's hostname is the container's: it cannot set its own.
                    "uts" => {
                        if let Some(c) = config.as_object_mut() {
                            c.remove("hostname");
                        }
                    }
                    "ipc" => {
                        remove_mount(config, "/dev/shm");
                        if let Some(ms) = config["mounts"].as_array_mut() {
                            ms.push(json!({"destination": "/dev/shm", "type": "bind",
                                "source": "/dev/shm", "options": ["rbind", "rprivate"]}));
                        }
                    }
                    _ => {}
                }
            }
            (_, m) if m.starts_with("container:") => {
                return Err(Error::Unimplemented(format!(
                    "{flag}={m}: joining another container's namespace is not supported yet"
                )));
            }
            // Docker's wording (runconfig's validation).
            (_, m) => {
                return Err(Error::InvalidArgument(format!(
                    "invalid {} mode: {m}",
                    ns.to_uppercase()
                )));
            }
        }
    }
    Ok(())
}

fn remove_mount(config: &mut Value, destination: &str) {
    if let Some(ms) = config["mounts"].as_array_mut() {
        ms.retain(|m| m["destination"] != destination);
    }
}

/// `--init`: the init runs as PID 1 (reaping zombies, passing signals on) with the
/// command after `--`, bind-mounted read-only from the host.
fn add_init(config: &mut Value, init: &Path) {
    let mut args = vec![json!(INIT_IN_CONTAINER), json!("--")];
    args.extend(
        config["process"]["args"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    config["process"]["args"] = json!(args);
    if let Some(mounts) = config["mounts"].as_array_mut() {
        mounts.push(json!({
            "destination": INIT_IN_CONTAINER,
            "type": "bind",
            "source": init.display().to_string(),
            "options": ["bind", "ro", "nosuid", "nodev"],
        }));
    }
}

/// Applies the HostConfig options to `config` (built from Docker's defaults).
pub fn apply(
    hc: &Value,
    config: &mut Value,
    rootfs: &Path,
    init_binary: Option<&Path>,
) -> Result<(), Error> {
    if hc.is_null() {
        return Ok(());
    }
    if hc.get("Init").and_then(Value::as_bool) == Some(true) {
        let init = init_binary.ok_or_else(|| {
            Error::Unimplemented("--init without an init binary (install tini)".into())
        })?;
        add_init(config, init);
    }
    let privileged = hc.get("Privileged").and_then(Value::as_bool) == Some(true);
    let defaults: Vec<String> = config["process"]["capabilities"]["bounding"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let defaults: Vec<&str> = defaults.iter().map(String::as_str).collect();
    let caps = capabilities(&defaults, hc)?;
    for set in ["bounding", "effective", "permitted"] {
        config["process"]["capabilities"][set] = json!(caps);
    }
    if hc.get("ReadonlyRootfs").and_then(Value::as_bool) == Some(true) {
        config["root"]["readonly"] = json!(true);
    }
    rlimits(hc, config)?;
    namespace_modes(hc, config)?;
    let gids = additional_gids(hc, rootfs)?;
    if !gids.is_empty() {
        config["process"]["user"]["additionalGids"] = json!(gids);
    }
    if let Some(sysctls) = hc.get("Sysctls").and_then(Value::as_object)
        && !sysctls.is_empty()
    {
        config["linux"]["sysctl"] = Value::Object(sysctls.clone());
    }
    let shm = int(hc, "ShmSize");
    if shm > 0
        && let Some(m) = config["mounts"]
            .as_array_mut()
            .and_then(|ms| ms.iter_mut().find(|m| m["destination"] == "/dev/shm"))
    {
        m["options"] = json!([
            "nosuid",
            "noexec",
            "nodev",
            "mode=1777",
            format!("size={shm}")
        ]);
    }

    // Resources.
    let res = &mut config["linux"]["resources"];
    let nano_cpus = int(hc, "NanoCpus");
    let (quota, period) = (int(hc, "CpuQuota"), int(hc, "CpuPeriod"));
    if nano_cpus > 0 && (quota > 0 || period > 0) {
        return Err(Error::InvalidArgument(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set".into(),
        ));
    }
    let mut cpu = serde_json::Map::new();
    if nano_cpus > 0 {
        cpu.insert(
            "quota".into(),
            json!(nano_cpus * CPU_PERIOD / 1_000_000_000),
        );
        cpu.insert("period".into(), json!(CPU_PERIOD));
    }
    if quota > 0 {
        cpu.insert("quota".into(), json!(quota));
    }
    if period > 0 {
        cpu.insert("period".into(), json!(period));
    }
    let shares = int(hc, "CpuShares");
    if shares > 0 {
        cpu.insert("shares".into(), json!(shares));
    }
    for (key, field) in [("CpusetCpus", "cpus"), ("CpusetMems", "mems")] {
        if let Some(v) = hc
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            cpu.insert(field.into(), json!(v));
        }
    }
    if !cpu.is_empty() {
        res["cpu"] = Value::Object(cpu);
    }
    let memory = int(hc, "Memory");
    let swap = int(hc, "MemorySwap");
    let reservation = int(hc, "MemoryReservation");
    if swap > 0 && memory > 0 && swap < memory {
        return Err(Error::InvalidArgument(
            "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
        ));
    }
    if memory > 0 || swap != 0 || reservation > 0 {
        let mut mem = res.get("memory").cloned().unwrap_or(json!({}));
        if memory > 0 {
            mem["limit"] = json!(memory);
        }
        if swap != 0 {
            mem["swap"] = json!(swap);
        }
        if reservation > 0 {
            mem["reservation"] = json!(reservation);
        }
        res["memory"] = mem;
    }
    let pids = int(hc, "PidsLimit");
    if pids > 0 {
        res["pids"] = json!({"limit": pids});
    }

    // Devices.
    let mut devices: Vec<(Value, Value)> = Vec::new();
    if let Some(list) = hc.get("Devices").and_then(Value::as_array) {
        for d in list {
            let host = d
                .get("PathOnHost")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let inside = d
                .get("PathInContainer")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(host);
            let perms = d
                .get("CgroupPermissions")
                .and_then(Value::as_str)
                .unwrap_or("rwm");
            devices.push(host_device(host, inside, perms)?);
        }
    }
    if privileged {
        devices.extend(all_host_devices());
        res["devices"] = json!([{"allow": true, "access": "rwm"}]);
    }
    for (dev, rule) in devices {
        let path = dev["path"].clone();
        if let Some(list) = config["linux"]["devices"].as_array_mut() {
            list.retain(|d| d["path"] != path);
            list.push(dev);
        }
        if !privileged && let Some(rules) = config["linux"]["resources"]["devices"].as_array_mut() {
            rules.push(rule);
        }
    }

    // Security options.
    let mut seccomp: Option<Value> = None;
    let mut unconfined = privileged;
    for opt in strings(hc.get("SecurityOpt")) {
        let (key, value) = opt
            .split_once(['=', ':'])
            .map_or((opt.as_str(), ""), |(k, v)| (k, v));
        match key {
            "no-new-privileges" => {
                if matches!(value, "" | "true") {
                    config["process"]["noNewPrivileges"] = json!(true);
                } else if value != "false" {
                    return Err(Error::InvalidArgument(format!(
                        "invalid --security-opt 2: {opt:?}"
                    )));
                }
            }
            "seccomp" if value == "unconfined" => unconfined = true,
            "seccomp" => seccomp = Some(seccomp_profile(value)?),
            // No AppArmor or SELinux on the hosts Berth runs on: as dockerd without them.
            "apparmor" | "label" => {}
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "invalid --security-opt 1: {opt:?}"
                )));
            }
        }
    }
    if unconfined {
        if let Some(linux) = config["linux"].as_object_mut() {
            linux.remove("seccomp");
        }
    } else if let Some(profile) = seccomp {
        config["linux"]["seccomp"] = profile;
    } else if config["linux"].get("seccomp").is_some() {
        // The default profile follows the capabilities the container ended up with.
        let held: Vec<&str> = caps.iter().map(String::as_str).collect();
        config["linux"]["seccomp"] = crate::seccomp::default_profile(&held);
    }
    if privileged {
        config["linux"]["maskedPaths"] = json!([]);
        config["linux"]["readonlyPaths"] = json!([]);
        // /sys is writable for a privileged container.
        if let Some(ms) = config["mounts"].as_array_mut() {
            for m in ms.iter_mut() {
                if m["destination"] == "/sys"
                    && let Some(o) = m["options"].as_array_mut()
                {
                    o.retain(|x| x != "ro");
                    o.push(json!("rw"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({
            "process": {
                "user": {"uid": 0, "gid": 0},
                "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": [], "permitted": []},
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}],
            },
            "root": {"path": "/x", "readonly": false},
            "mounts": [
                {"destination": "/dev/shm", "options": ["size=67108864"]},
                {"destination": "/sys", "options": ["nosuid", "ro"]},
            ],
            "linux": {"resources": {"devices": []}, "devices": [], "seccomp": {"defaultAction": "SCMP_ACT_ALLOW"},
                      "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/bus"]},
        })
    }

    #[test]
    fn caps_add_drop_and_privileged() {
        let d = ["CAP_CHOWN", "CAP_KILL"];
        let caps =
            capabilities(&d, &json!({"CapAdd": ["net_admin"], "CapDrop": ["KILL"]})).unwrap();
        assert_eq!(caps, ["CAP_CHOWN", "CAP_NET_ADMIN"]);
        assert_eq!(
            capabilities(&d, &json!({"CapDrop": ["ALL"]})).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            capabilities(&d, &json!({"Privileged": true})).unwrap(),
            grantable()
        );
        assert!(grantable().len() > 30, "{:?}", grantable());
        assert!(capabilities(&d, &json!({"CapAdd": ["NOPE"]})).is_err());
    }

    #[test]
    fn host_namespace_modes() {
        let t = tempfile::tempdir().unwrap();
        let with_ns = || {
            let mut c = base();
            c["hostname"] = json!("abc");
            c["linux"]["namespaces"] =
                json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
            c
        };
        let mut c = with_ns();
        let hc = json!({"PidMode": "host", "IpcMode": "host", "UTSMode": "host"});
        apply(&hc, &mut c, t.path(), None).unwrap();
        assert_eq!(c["linux"]["namespaces"], json!([{"type": "mount"}]));
        assert!(c.get("hostname").is_none());
        let shm: Vec<&Value> = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["destination"] == "/dev/shm")
            .collect();
        assert_eq!(shm.len(), 1);
        assert_eq!(shm[0]["source"], "/dev/shm");
        let mut c = with_ns();
        apply(
            &json!({"IpcMode": "shareable", "PidMode": ""}),
            &mut c,
            t.path(),
            None,
        )
        .unwrap();
        assert_eq!(c["linux"]["namespaces"].as_array().unwrap().len(), 4);
        assert!(matches!(
            apply(
                &json!({"PidMode": "container:x"}),
                &mut with_ns(),
                t.path(),
                None
            ),
            Err(Error::Unimplemented(_))
        ));
        assert!(matches!(
            apply(&json!({"UTSMode": "bogus"}), &mut with_ns(), t.path(), None),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn resources_limits_and_options() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let hc = json!({
            "NanoCpus": 1_500_000_000i64, "CpuShares": 512, "CpusetCpus": "0",
            "Memory": 64 << 20, "MemorySwap": 128 << 20, "PidsLimit": 20,
            "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}, {"Name": "nproc", "Soft": -1, "Hard": -1}],
            "Sysctls": {"net.ipv4.ip_forward": "1"}, "ShmSize": 1 << 20, "GroupAdd": ["staff", "7"],
            "ReadonlyRootfs": true, "SecurityOpt": ["no-new-privileges"],
        });
        let mut c = base();
        apply(&hc, &mut c, t.path(), None).unwrap();
        let r = &c["linux"]["resources"];
        assert_eq!(r["cpu"]["quota"], 150_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["cpu"]["shares"], 512);
        assert_eq!(r["cpu"]["cpus"], "0");
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(r["memory"]["swap"], 128 << 20);
        assert_eq!(r["pids"]["limit"], 20);
        let rl = c["process"]["rlimits"].as_array().unwrap();
        assert!(rl.contains(&json!({"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200})));
        assert!(
            rl.iter()
                .any(|l| l["type"] == "RLIMIT_NPROC" && l["soft"] == u64::MAX)
        );
        assert_eq!(
            rl.iter().filter(|l| l["type"] == "RLIMIT_NOFILE").count(),
            1
        );
        assert_eq!(c["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
        assert_eq!(c["mounts"][0]["options"][4], "size=1048576");
        assert_eq!(c["process"]["user"]["additionalGids"], json!([50, 7]));
        assert_eq!(c["root"]["readonly"], true);
        assert_eq!(c["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn bad_options_are_docker_errors() {
        let t = tempfile::tempdir().unwrap();
        let bad = [
            json!({"Ulimits": [{"Name": "bogus", "Soft": 1, "Hard": 1}]}),
            json!({"Ulimits": [{"Name": "nofile", "Soft": 2, "Hard": 1}]}),
            json!({"NanoCpus": 1, "CpuPeriod": 1000}),
            json!({"Memory": 100, "MemorySwap": 50}),
            json!({"GroupAdd": ["nosuchgroup"]}),
            json!({"SecurityOpt": ["bogus=1"]}),
            json!({"Devices": [{"PathOnHost": "/nonexistent"}]}),
        ];
        for hc in bad {
            assert!(apply(&hc, &mut base(), t.path(), None).is_err(), "{hc}");
        }
        assert!(matches!(
            apply(&json!({"Init": true}), &mut base(), t.path(), None),
            Err(Error::Unimplemented(_))
        ));
        // With an init: it runs as PID 1 with the command after "--", mounted read-only.
        let mut c = base();
        c["process"]["args"] = json!(["sleep", "1"]);
        apply(
            &json!({"Init": true}),
            &mut c,
            t.path(),
            Some(Path::new("/usr/bin/tini-static")),
        )
        .unwrap();
        assert_eq!(
            c["process"]["args"],
            json!([INIT_IN_CONTAINER, "--", "sleep", "1"])
        );
        let m = c["mounts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(m["source"], "/usr/bin/tini-static");
        assert_eq!(m["destination"], INIT_IN_CONTAINER);
        assert!(m["options"].as_array().unwrap().contains(&json!("ro")));
    }

    #[test]
    fn privileged_and_seccomp() {
        let t = tempfile::tempdir().unwrap();
        let mut c = base();
        apply(&json!({"Privileged": true}), &mut c, t.path(), None).unwrap();
        assert!(c["linux"].get("seccomp").is_none());
        assert_eq!(c["linux"]["maskedPaths"], json!([]));
        assert!(
            c["linux"]["devices"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["path"] == "/dev/null")
        );
        assert_eq!(c["mounts"][1]["options"], json!(["nosuid", "rw"]));
        let mut c = base();
        let profile = r#"{"defaultAction":"SCMP_ACT_ERRNO","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],"syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#;
        apply(
            &json!({"SecurityOpt": [format!("seccomp={profile}")]}),
            &mut c,
            t.path(),
            None,
        )
        .unwrap();
        assert_eq!(c["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(
            c["linux"]["seccomp"]["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
        );
        let mut c = base();
        apply(
            &json!({"SecurityOpt": ["seccomp=unconfined"]}),
            &mut c,
            t.path(),
            None,
        )
        .unwrap();
        assert!(c["linux"].get("seccomp").is_none());
    }
}
