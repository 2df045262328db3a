//! Building the OCI runtime spec (`config.json`) from a resolved `ContainerSpec`.
//!
//! Docker's defaults are copied where it matters (capabilities, masked and read-only
//! paths, standard mounts, device allowlist); comments say so.

use crate::Error;
use berth_proto::containers::ContainerSpec;
use serde_json::{Value, json};
use std::path::Path;

/// Docker's default capability set for unprivileged containers.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Docker's masked paths.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's default PATH when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default open-files limit for containers; lowered to the host's hard limit.
const DEFAULT_NOFILE: u64 = 1_048_576;

/// A resolved process identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub home: Option<String>,
}

/// The most of an image's /etc/passwd or /etc/group that is read.
const ETC_FILE_CAP: u64 = 4 << 20;

/// An image's /etc/passwd or /etc/group, read inside its rootfs: a symlink it holds
/// resolves inside it (never to the host's files), and only a regular file of at most
/// [`ETC_FILE_CAP`] counts (a link to /dev/zero, a FIFO: as if absent).
pub fn etc_file(rootfs: &Path, path: &str) -> String {
    crate::archive::Root::open(rootfs, "")
        .ok()
        .and_then(|root| root.read_small_file(path, ETC_FILE_CAP))
        .unwrap_or_default()
}

fn passwd_entries(rootfs: &Path) -> Vec<Vec<String>> {
    colon_file(rootfs, "/etc/passwd")
}

fn colon_file(rootfs: &Path, path: &str) -> Vec<Vec<String>> {
    etc_file(rootfs, path)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

/// Resolves Docker's `user` forms: "", "uid", "uid:gid", "name", "name:group" (names from
/// the rootfs' /etc/passwd and /etc/group).
pub fn resolve_user(user: &str, rootfs: &Path) -> Result<User, Error> {
    if user.is_empty() {
        return Ok(User {
            uid: 0,
            gid: 0,
            home: Some("/root".into()),
        });
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = passwd_entries(rootfs);
    let entry = |pred: &dyn Fn(&Vec<String>) -> bool| {
        passwd.iter().find(|e| e.len() >= 4 && pred(e)).cloned()
    };
    let (uid, pw) = if let Ok(uid) = u.parse::<u32>() {
        (uid, entry(&|e| e[2] == u))
    } else {
        let pw = entry(&|e| e[0] == u).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unable to find user {u}: no matching entries in passwd file"
            ))
        })?;
        let uid = pw[2]
            .parse()
            .map_err(|_| Error::InvalidArgument(format!("bad uid for user {u} in passwd")))?;
        (uid, Some(pw))
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = colon_file(rootfs, "/etc/group");
                groups
                    .iter()
                    .find(|e| e.len() >= 3 && e[0] == g)
                    .and_then(|e| e[2].parse().ok())
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "unable to find group {g}: no matching entries in group file"
                        ))
                    })?
            }
        },
        None => pw.as_ref().and_then(|e| e[3].parse().ok()).unwrap_or(0),
    };
    let home = pw.and_then(|e| e.get(5).cloned()).filter(|h| !h.is_empty());
    Ok(User { uid, gid, home })
}

fn host_nofile_hard() -> u64 {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) => hard,
        Err(_) => 1024,
    }
}

fn device(path: &str, major: i64, minor: i64) -> Value {
    json!({"path": path, "type": "c", "major": major, "minor": minor, "fileMode": 0o666, "uid": 0, "gid": 0})
}

fn allow(major: i64, minor: Option<i64>) -> Value {
    json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"})
}

/// Files written into the bundle and bind-mounted into the container.
pub struct EtcFiles {
    pub hostname: String,
    pub hosts: Option<String>,
    pub resolv_conf: Option<String>,
}

/// The hostname Docker gives a container without one: its short id.
pub fn effective_hostname(spec: &ContainerSpec) -> String {
    if spec.hostname.is_empty() {
        spec.id.chars().take(12).collect()
    } else {
        spec.hostname.clone()
    }
}

/// Builds config.json for `spec`; `bundle` is where the /etc files live, `cgroup_parent`
/// the instance's cgroup parent.
pub fn build(
    spec: &ContainerSpec,
    bundle: &Path,
    cgroup_parent: &str,
    init_binary: Option<&Path>,
) -> Result<Value, Error> {
    if spec.args.is_empty() {
        return Err(Error::InvalidArgument("no command specified".into()));
    }
    if spec.rootfs_path.is_empty() {
        return Err(Error::InvalidArgument("rootfs_path is empty".into()));
    }
    let rootfs = Path::new(&spec.rootfs_path);
    let user = resolve_user(&spec.user, rootfs)?;
    let hostname = effective_hostname(spec);

    let mut env = spec.env.clone();
    let has = |env: &[String], k: &str| env.iter().any(|e| e.starts_with(&format!("{k}=")));
    if !has(&env, "PATH") {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={hostname}"));
    }
    // Docker gives a terminal container TERM=xterm unless the user set one.
    if spec.tty && !has(&env, "TERM") {
        env.push("TERM=xterm".to_string());
    }
    if !has(&env, "HOME") {
        env.push(format!(
            "HOME={}",
            user.home.clone().unwrap_or_else(|| "/".into())
        ));
    }
    let nofile = DEFAULT_NOFILE.min(host_nofile_hard());
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    // noNewPrivileges is left out on purpose: libcontainer 0.7 loads seccomp late (after
    // dropping CAP_SYS_ADMIN, so the load fails) whenever the field is present, even
    // when false. Absent means false, as Docker's default.

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]}),
    ];
    let bind = |src: &Path, dst: &str| json!({"destination": dst, "type": "bind", "source": src.display().to_string(), "options": ["rbind", "rprivate"]});
    for m in &spec.mounts {
        if m.destination.is_empty() || !m.destination.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "invalid mount destination {:?}: must be an absolute path",
                m.destination
            )));
        }
        match m.r#type.as_str() {
            "" | "bind" => {
                let mut opts: Vec<String> = vec!["rbind".into(), "rprivate".into()];
                for o in &m.options {
                    if o != "bind" && o != "rbind" && !opts.contains(o) {
                        opts.push(o.clone());
                    }
                }
                mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": opts}));
            }
            "tmpfs" => {
                let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
                opts.extend(m.options.iter().cloned());
                mounts.push(json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": opts}));
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unsupported mount type {other:?}"
                )));
            }
        }
    }

    // After the user's mounts, as Docker appends its network files last: a volume on
    // /etc must not hide them. A user mount on the file itself replaces it.
    let user_has = |dst: &str| spec.mounts.iter().any(|m| m.destination == dst);
    let mut etc_files = vec![("hostname", "/etc/hostname")];
    if !spec.hosts_file.is_empty() {
        etc_files.push(("hosts", "/etc/hosts"));
    }
    if !spec.resolv_conf.is_empty() {
        etc_files.push(("resolv.conf", "/etc/resolv.conf"));
    }
    for (file, dst) in etc_files {
        if !user_has(dst) {
            mounts.push(bind(&bundle.join(file), dst));
        }
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if !spec.netns_path.is_empty() {
        namespaces.push(json!({"type": "network", "path": spec.netns_path}));
    }

    let mut resources = json!({
        // Docker's device cgroup: deny all, then allow the standard character devices.
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "access": "m"},
            {"allow": true, "type": "b", "access": "m"},
            allow(1, Some(3)), allow(1, Some(5)), allow(1, Some(7)), allow(1, Some(8)),
            allow(1, Some(9)), allow(5, Some(0)), allow(5, Some(1)), allow(5, Some(2)),
            allow(136, None), allow(10, Some(200)),
        ],
    });
    if spec.memory_bytes > 0 {
        resources["memory"] = json!({"limit": spec.memory_bytes});
    }
    if spec.pids_limit > 0 {
        resources["pids"] = json!({"limit": spec.pids_limit});
    }

    // Docker's semantics: an allow-list, recomputed by hostconfig when the capabilities
    // change (--cap-add/--cap-drop).
    let seccomp = crate::seccomp::default_profile(&caps);

    let cwd = if spec.working_dir.is_empty() {
        "/"
    } else {
        spec.working_dir.as_str()
    };
    if !cwd.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "the working directory '{cwd}' is invalid, it needs to be an absolute path"
        )));
    }

    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.tty,
            "user": {"uid": user.uid, "gid": user.gid},
            "args": spec.args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        },
        "root": {"path": spec.rootfs_path, "readonly": false},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": format!("/{cgroup_parent}/{}", spec.id),
            "resources": resources,
            "devices": [
                device("/dev/null", 1, 3), device("/dev/zero", 1, 5), device("/dev/full", 1, 7),
                device("/dev/random", 1, 8), device("/dev/urandom", 1, 9), device("/dev/tty", 5, 0),
            ],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp,
        },
    });
    let host_config: Value = if spec.host_config_json.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&spec.host_config_json)
            .map_err(|e| Error::InvalidArgument(format!("bad HostConfig: {e}")))?
    };
    crate::hostconfig::apply(&host_config, &mut config, rootfs, init_binary)?;
    Ok(config)
}

/// Writes `config.json` and the /etc files into `bundle` (created if needed).
pub fn write_bundle(
    spec: &ContainerSpec,
    bundle: &Path,
    cgroup_parent: &str,
    init_binary: Option<&Path>,
) -> Result<(), Error> {
    let config = build(spec, bundle, cgroup_parent, init_binary)?;
    if let Some(cwd) = config["process"]["cwd"].as_str().filter(|c| *c != "/") {
        // Docker's wording when the working directory cannot be made.
        crate::archive::Root::open(Path::new(&spec.rootfs_path), &spec.id)?
            .mkdir_all(cwd)
            .map_err(|e| match e {
                Error::InvalidArgument(_) => {
                    Error::InvalidArgument(format!("Cannot mkdir: {cwd} is not a directory"))
                }
                e => e,
            })?;
    }
    let io = |what: String| move |e: std::io::Error| Error::Internal(format!("{what}: {e}"));
    // Only root reads a bundle: config.json holds the container's environment (its
    // secrets), whatever the umask.
    berth_kit::paths::ensure_dir_mode(bundle, berth_kit::paths::PRIVATE_DIR_MODE)
        .map_err(io(format!("creating {}", bundle.display())))?;
    let files = EtcFiles {
        hostname: format!("{}\n", effective_hostname(spec)),
        hosts: (!spec.hosts_file.is_empty()).then(|| spec.hosts_file.clone()),
        resolv_conf: (!spec.resolv_conf.is_empty()).then(|| spec.resolv_conf.clone()),
    };
    // The /etc files are bind-mounted into the container, where any user must read
    // them: 0644; config.json is for the runtime only: 0600. Explicit, not the umask.
    let write_mode = |name: &str, data: &[u8], mode: u32| {
        use std::io::Write as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let path = bundle.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| {
                f.set_permissions(std::fs::Permissions::from_mode(mode))?;
                f.write_all(data)
            })
            .map_err(io(format!("writing {name}")))
    };
    let write = |name: &str, data: &[u8]| write_mode(name, data, 0o644);
    write("hostname", files.hostname.as_bytes())?;
    if let Some(h) = &files.hosts {
        write("hosts", h.as_bytes())?;
    }
    if let Some(r) = &files.resolv_conf {
        write("resolv.conf", r.as_bytes())?;
    }
    let data = serde_json::to_vec_pretty(&config).map_err(|e| Error::Internal(e.to_string()))?;
    write_mode("config.json", &data, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etc_files_are_read_inside_the_rootfs_only() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::write(r.join("usr/lib/passwd"), "app:x:7:7::/app:/bin/sh\n").unwrap();
        // A link inside the image: followed, inside it.
        std::os::unix::fs::symlink("/usr/lib/passwd", r.join("etc/passwd")).unwrap();
        assert_eq!(resolve_user("app", r).unwrap().uid, 7);
        // Links meant for the host's files, a device, a FIFO: as if absent.
        for (target, what) in [("/etc/shadow", "host file"), ("/dev/zero", "device")] {
            let _ = std::fs::remove_file(r.join("etc/group"));
            std::os::unix::fs::symlink(target, r.join("etc/group")).unwrap();
            assert_eq!(etc_file(r, "/etc/group"), "", "{what}");
        }
        std::fs::create_dir_all(r.join("dev")).unwrap();
        nix::unistd::mkfifo(&r.join("dev/zero"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(
            etc_file(r, "/etc/group"),
            "",
            "a FIFO must not hang or count"
        );
        let _ = std::fs::remove_file(r.join("etc/group"));
        std::fs::write(r.join("etc/group"), vec![b'x'; (ETC_FILE_CAP + 1) as usize]).unwrap();
        assert_eq!(etc_file(r, "/etc/group"), "", "too large");
        assert!(resolve_user("app:nogroup", r).is_err());
    }
    use berth_proto::containers::Mount;
    use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};

    fn base(rootfs: &Path) -> ContainerSpec {
        ContainerSpec {
            id: "ab".repeat(32),
            name: "x".into(),
            args: vec!["sh".into()],
            rootfs_path: rootfs.display().to_string(),
            ..Default::default()
        }
    }

    fn parse(v: Value) -> Spec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_caps_namespaces_mounts() {
        let d = tempfile::tempdir().unwrap();
        let s = base(d.path());
        let spec = parse(build(&s, Path::new("/b"), "berth", None).unwrap());
        let p = spec.process().as_ref().unwrap();
        let caps = p.capabilities().as_ref().unwrap();
        let bounding = caps.bounding().as_ref().unwrap();
        assert_eq!(bounding.len(), 14);
        assert!(bounding.contains(&Capability::NetBindService));
        assert!(!bounding.contains(&Capability::SysAdmin));
        assert!(caps.ambient().is_none() && caps.inheritable().is_none());
        assert_eq!(p.cwd().to_str(), Some("/"));
        assert!(p.env().as_ref().unwrap()[0].starts_with("PATH="));
        let linux = spec.linux().as_ref().unwrap();
        let ns: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(ns.contains(&LinuxNamespaceType::Pid));
        assert!(
            !ns.contains(&LinuxNamespaceType::Network),
            "empty netns = host network"
        );
        assert_eq!(
            linux.cgroups_path().as_ref().unwrap().to_str().unwrap(),
            format!("/berth/{}", s.id)
        );
        let dests: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/etc/hostname",
        ] {
            assert!(dests.contains(&d.to_string()), "{d}");
        }
        assert!(!dests.contains(&"/etc/hosts".to_string()));
        assert_eq!(spec.hostname().as_deref(), Some(&s.id[..12]));
        let rl = &p.rlimits().as_ref().unwrap()[0];
        assert!(rl.hard() <= host_nofile_hard());
        let sc = linux.seccomp().as_ref().unwrap();
        assert_eq!(
            sc.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
        );
        assert!(sc.syscalls().as_ref().unwrap()[0].names().len() > 300);
        assert!(
            linux
                .masked_paths()
                .as_ref()
                .unwrap()
                .contains(&"/proc/kcore".to_string())
        );
    }

    #[test]
    fn netns_mounts_limits_and_etc_files() {
        let d = tempfile::tempdir().unwrap();
        let mut s = base(d.path());
        s.netns_path = "/run/berth/netns/x".into();
        s.memory_bytes = 64 << 20;
        s.pids_limit = 100;
        s.hosts_file = "127.0.0.1 localhost\n".into();
        s.mounts = vec![Mount {
            source: "/data".into(),
            destination: "/mnt".into(),
            r#type: "bind".into(),
            options: vec!["ro".into()],
        }];
        let spec = parse(build(&s, Path::new("/b"), "p", None).unwrap());
        let linux = spec.linux().as_ref().unwrap();
        let net = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(
            net.path().as_ref().unwrap().to_str(),
            Some("/run/berth/netns/x")
        );
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 100);
        let mounts = spec.mounts().as_ref().unwrap();
        let m = mounts
            .iter()
            .find(|m| m.destination().to_str() == Some("/mnt"))
            .unwrap();
        let opts = m.options().as_ref().unwrap();
        assert!(opts.contains(&"rbind".to_string()) && opts.contains(&"ro".to_string()));
        let h = mounts
            .iter()
            .find(|m| m.destination().to_str() == Some("/etc/hosts"))
            .unwrap();
        assert_eq!(h.source().as_ref().unwrap().to_str(), Some("/b/hosts"));

        s.mounts[0].destination = "rel".into();
        assert!(matches!(
            build(&s, Path::new("/b"), "p", None),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn etc_files_go_over_a_volume_on_etc_unless_the_user_mounts_them() {
        let d = tempfile::tempdir().unwrap();
        let mut s = base(d.path());
        s.hosts_file = "127.0.0.1 localhost\n".into();
        let bind = |src: &str, dst: &str| Mount {
            source: src.into(),
            destination: dst.into(),
            r#type: "bind".into(),
            options: vec![],
        };
        s.mounts = vec![bind("/vol", "/etc"), bind("/mine", "/etc/hostname")];
        let spec = parse(build(&s, Path::new("/b"), "p", None).unwrap());
        let dests: Vec<(String, String)> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| {
                let src = m.source().as_ref().map(|p| p.display().to_string());
                (
                    m.destination().display().to_string(),
                    src.unwrap_or_default(),
                )
            })
            .filter(|(d, _)| d.starts_with("/etc"))
            .collect();
        assert_eq!(
            dests,
            vec![
                ("/etc".to_string(), "/vol".to_string()),
                ("/etc/hostname".to_string(), "/mine".to_string()),
                ("/etc/hosts".to_string(), "/b/hosts".to_string()),
            ]
        );
    }

    #[test]
    fn users() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34:www:/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let r = |u: &str| resolve_user(u, d.path());
        assert_eq!(r("").unwrap().uid, 0);
        assert_eq!((r("1000").unwrap().uid, r("1000").unwrap().gid), (1000, 0));
        assert_eq!(
            (r("1000:20").unwrap().uid, r("1000:20").unwrap().gid),
            (1000, 20)
        );
        let w = r("www").unwrap();
        assert_eq!(
            (w.uid, w.gid, w.home.as_deref()),
            (33, 34, Some("/var/www"))
        );
        assert_eq!(r("33").unwrap().gid, 34);
        assert_eq!(r("www:staff").unwrap().gid, 50);
        assert!(matches!(r("nobody"), Err(Error::InvalidArgument(_))));
        assert!(matches!(r("www:nogroup"), Err(Error::InvalidArgument(_))));
    }
}
