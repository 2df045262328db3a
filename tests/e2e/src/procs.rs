//! Looking at processes, namespaces, mounts and cgroups through /proc, to check what
//! Berth did in the kernel rather than what it reports.

use std::path::{Path, PathBuf};

/// The namespaces a container must have of its own.
pub const CONTAINER_NAMESPACES: [&str; 5] = ["pid", "mnt", "uts", "ipc", "net"];

/// The target of `/proc/<pid>/ns/<ns>` (e.g. `net:[4026531840]`).
pub fn ns_link(pid: u32, ns: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The last number of the `NSpid:` line of `/proc/<pid>/status`: the process's pid in
/// its innermost pid namespace (1 for a container's init).
pub fn innermost_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The parent pid from `/proc/<pid>/stat`.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The arguments of a process (`/proc/<pid>/cmdline`).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The executable of a process, if it can be read.
pub fn exe(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The child of `parent` whose executable's file name is `name` (e.g. `berth-gateway`).
pub fn child_named(parent: u32, name: &str) -> Option<u32> {
    all_pids().into_iter().find(|&p| {
        parent_pid(p) == Some(parent)
            && (exe(p).is_some_and(|e| e.file_name().is_some_and(|f| f == name))
                || cmdline(p)
                    .first()
                    .is_some_and(|a0| Path::new(a0).file_name().is_some_and(|f| f == name)))
    })
}

/// True while `/proc/<pid>` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// One line of a mountinfo file, the fields tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount point (unescaped).
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `overlay`.
    pub fstype: String,
    /// Mount source.
    pub source: String,
}

/// Parses a mountinfo file (`/proc/self/mountinfo` or `/proc/<pid>/mountinfo`).
pub fn mountinfo(path: &Path) -> Vec<MountEntry> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().filter_map(parse_mountinfo_line).collect())
        .unwrap_or_default()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    // id parent major:minor root mount-point options [optional...] - fstype source super
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let mut right = right.split(' ');
    let fstype = right.next()?.to_string();
    let source = right.next().unwrap_or_default().to_string();
    Some(MountEntry {
        mount_point: PathBuf::from(unescape_octal(mount_point)),
        fstype,
        source,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The filesystem type of a process's root (`/` in its own mountinfo).
pub fn root_fstype(pid: u32) -> Option<String> {
    mountinfo(Path::new(&format!("/proc/{pid}/mountinfo")))
        .into_iter()
        .rev()
        .find(|m| m.mount_point == Path::new("/"))
        .map(|m| m.fstype)
}

/// `/proc/<pid>/cgroup` lines (`id:controllers:path`).
pub fn cgroups(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|t| t.lines().map(String::from).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_and_unescaped() {
        let m = parse_mountinfo_line(
            "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - overlay overlay rw,lowerdir=/x",
        )
        .unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/mnt/a b"));
        assert_eq!(m.fstype, "overlay");
        let me = std::process::id();
        assert_eq!(parent_pid(me), Some(nix::unistd::getppid().as_raw() as u32));
        assert!(alive(me));
        assert!(ns_link(me, "net").unwrap().starts_with("net:["));
    }
}
