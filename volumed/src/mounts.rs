//! The local driver's `type`/`device`/`o` options: while containers use such a volume,
//! its `_data` directory is a mount of that filesystem (a tmpfs, a bind of a host
//! directory, nfs, ...), made with mount(2) as Docker's local driver does (option
//! parsing as moby/sys/mount's). Also the mount table checks that keep a volume
//! directory from being deleted through a mount.

use nix::mount::{MntFlags, MsFlags};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A volume's mount, from its driver options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMount {
    /// `type`: the filesystem type (`tmpfs`, `none` for a bind, `nfs`, ...).
    pub fstype: String,
    /// `device`: what to mount (`tmpfs`, a host path, `:/export`).
    pub device: String,
    /// `o`: comma-separated mount options (flags and filesystem data).
    pub options: String,
}

impl LocalMount {
    /// The mount a volume with these options needs; None for a plain directory volume
    /// (Docker's `needsMount`: a `type` or a `device` is set).
    pub fn from_options(options: &BTreeMap<String, String>) -> Option<Self> {
        let get = |k: &str| options.get(k).cloned().unwrap_or_default();
        let (fstype, device) = (get("type"), get("device"));
        if fstype.is_empty() && device.is_empty() {
            return None;
        }
        Some(Self {
            fstype,
            device,
            options: get("o"),
        })
    }
}

/// moby/sys/mount's flag table: these words are mount flags (set, or cleared when the
/// bool is true); every other word is filesystem data.
fn flag(word: &str) -> Option<(bool, MsFlags)> {
    Some(match word {
        "ro" => (false, MsFlags::MS_RDONLY),
        "rw" => (true, MsFlags::MS_RDONLY),
        "suid" => (true, MsFlags::MS_NOSUID),
        "nosuid" => (false, MsFlags::MS_NOSUID),
        "dev" => (true, MsFlags::MS_NODEV),
        "nodev" => (false, MsFlags::MS_NODEV),
        "exec" => (true, MsFlags::MS_NOEXEC),
        "noexec" => (false, MsFlags::MS_NOEXEC),
        "sync" => (false, MsFlags::MS_SYNCHRONOUS),
        "async" => (true, MsFlags::MS_SYNCHRONOUS),
        "dirsync" => (false, MsFlags::MS_DIRSYNC),
        "remount" => (false, MsFlags::MS_REMOUNT),
        "mand" => (false, MsFlags::MS_MANDLOCK),
        "nomand" => (true, MsFlags::MS_MANDLOCK),
        "atime" => (true, MsFlags::MS_NOATIME),
        "noatime" => (false, MsFlags::MS_NOATIME),
        "diratime" => (true, MsFlags::MS_NODIRATIME),
        "nodiratime" => (false, MsFlags::MS_NODIRATIME),
        "bind" => (false, MsFlags::MS_BIND),
        "rbind" => (false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
        "unbindable" => (false, MsFlags::MS_UNBINDABLE),
        "runbindable" => (false, MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
        "private" => (false, MsFlags::MS_PRIVATE),
        "rprivate" => (false, MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
        "shared" => (false, MsFlags::MS_SHARED),
        "rshared" => (false, MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
        "slave" => (false, MsFlags::MS_SLAVE),
        "rslave" => (false, MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
        "relatime" => (false, MsFlags::MS_RELATIME),
        "norelatime" => (true, MsFlags::MS_RELATIME),
        "strictatime" => (false, MsFlags::MS_STRICTATIME),
        "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
        _ => return None,
    })
}

/// Splits `o` into mount flags and the filesystem's data string.
pub fn parse_options(o: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for word in o.split(',').filter(|w| !w.is_empty()) {
        match flag(word) {
            Some((true, f)) => flags.remove(f),
            Some((false, f)) => flags.insert(f),
            None if word == "defaults" => {}
            None => data.push(word),
        }
    }
    (flags, data.join(","))
}

const PROPAGATION: MsFlags = MsFlags::MS_SHARED
    .union(MsFlags::MS_PRIVATE)
    .union(MsFlags::MS_SLAVE)
    .union(MsFlags::MS_UNBINDABLE);

/// Go's lower-case errno text ("no such file or directory"), as Docker's messages show.
fn errno_text(e: nix::Error) -> String {
    let d = e.desc();
    let mut c = d.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => d.to_string(),
    }
}

/// Mounts `m` on `target`. The error reads as Docker's local driver's
/// (`failed to mount local volume: mount <dev>:<target>, flags: 0x1000: <errno>`).
pub fn mount(m: &LocalMount, target: &Path) -> Result<(), String> {
    if m.device.is_empty() {
        return Err("missing device in volume options".into());
    }
    let (flags, data) = parse_options(&m.options);
    let fail = |op: &str, source: &str, flags: MsFlags, data: &str, e: nix::Error| {
        let mut s = format!("failed to mount local volume: {op} ");
        if source.is_empty() {
            s.push_str(&target.display().to_string());
        } else {
            s.push_str(&format!("{source}:{}", target.display()));
        }
        if !flags.is_empty() {
            s.push_str(&format!(", flags: {:#x}", flags.bits()));
        }
        if !data.is_empty() {
            s.push_str(&format!(", data: {data}"));
        }
        s.push_str(&format!(": {}", errno_text(e)));
        s
    };
    let base = flags.difference(PROPAGATION);
    let fstype = Some(m.fstype.as_str()).filter(|t| !t.is_empty());
    let data_arg = Some(data.as_str()).filter(|d| !d.is_empty());
    nix::mount::mount(Some(m.device.as_str()), target, fstype, base, data_arg)
        .map_err(|e| fail("mount", &m.device, base, &data, e))?;
    let propagation = flags.intersection(PROPAGATION.union(MsFlags::MS_REC));
    if flags.intersects(PROPAGATION) {
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            propagation,
            None::<&str>,
        )
        .map_err(|e| fail("remount", "", propagation, "", e))?;
    }
    // A bind mount ignores MS_RDONLY until remounted (as moby/sys/mount does).
    if base.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
        let re = base | MsFlags::MS_REMOUNT;
        nix::mount::mount(None::<&str>, target, None::<&str>, re, None::<&str>)
            .map_err(|e| fail("remount", "", re, "", e))?;
    }
    Ok(())
}

/// Undoes `\040`-style escapes of /proc/self/mountinfo.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount point of this process's mount namespace (the host's: volumed runs there,
/// as do the runtime's binds of volume directories).
pub fn mount_points() -> std::io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect())
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether something is mounted exactly at `p`.
pub fn is_mounted(p: &Path) -> std::io::Result<bool> {
    let p = canonical(p);
    Ok(mount_points()?.contains(&p))
}

/// Mounts at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = canonical(dir);
    let mut v: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|m| m.starts_with(&dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    Ok(v)
}

/// Detaches everything mounted at or below `dir` (stacked mounts too), and fails if
/// anything is still mounted there afterwards: deleting `dir` must never reach through
/// a mount into other files (a bind-type volume shows a host directory).
pub fn unmount_all_under(dir: &Path) -> std::io::Result<()> {
    for _ in 0..8 {
        let mounts = mounts_under(dir)?;
        if mounts.is_empty() {
            return Ok(());
        }
        for m in mounts {
            match nix::mount::umount2(&m, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                Err(e) => return Err(std::io::Error::from(e)),
            }
        }
    }
    let left = mounts_under(dir)?;
    if left.is_empty() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "still mounted: {}",
            left[0].display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data_like_moby() {
        let (f, d) = parse_options("size=100m,uid=1000,ro,noexec");
        assert_eq!(f, MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC);
        assert_eq!(d, "size=100m,uid=1000");
        let (f, d) = parse_options("bind");
        assert_eq!(f, MsFlags::MS_BIND);
        assert_eq!(d, "");
        // Later words win, as in mount(8).
        let (f, _) = parse_options("ro,rw,exec");
        assert!(f.is_empty());
        let (f, _) = parse_options("rbind,rprivate");
        assert!(f.contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_PRIVATE));
    }

    #[test]
    fn needs_a_mount_only_with_type_or_device() {
        let o = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(LocalMount::from_options(&o(&[])), None);
        assert_eq!(
            LocalMount::from_options(&o(&[
                ("type", "tmpfs"),
                ("device", "tmpfs"),
                ("o", "size=1m")
            ])),
            Some(LocalMount {
                fstype: "tmpfs".into(),
                device: "tmpfs".into(),
                options: "size=1m".into()
            })
        );
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\134y"), "/x\\y");
    }
}
