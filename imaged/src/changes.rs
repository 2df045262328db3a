//! `docker diff`: what a container changed, read from its overlay upper dir against the
//! image's layers (Docker's kinds: 0 modified, 1 added, 2 deleted).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Modified, added, deleted (Docker's `ChangeType`).
pub const MODIFIED: i32 = 0;
pub const ADDED: i32 = 1;
pub const DELETED: i32 = 2;

/// What the runtime itself puts in the upper dir (Docker keeps these in an init layer,
/// so they never show in its diff): mount points of /etc files and kernel filesystems.
pub(crate) const RUNTIME_PATHS: &[&str] = &[
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/mtab",
    "/.dockerenv",
    "/dev",
    "/proc",
    "/sys",
];

fn in_lower(lowers: &[PathBuf], rel: &str) -> bool {
    let rel = rel.trim_start_matches('/');
    lowers
        .iter()
        .any(|l| std::fs::symlink_metadata(l.join(rel)).is_ok())
}

pub(crate) fn is_opaque(path: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|a| {
            xattr::get(path, a)
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y")
        })
}

/// The changes under `upper` (the container's writable layer) given the image's `lowers`,
/// sorted by path, parents of changed paths included as modified.
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> io::Result<Vec<(String, i32)>> {
    let mut found: BTreeMap<String, i32> = BTreeMap::new();
    let mut stack = vec![(upper.to_path_buf(), String::new())];
    while let Some((dir, rel_dir)) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for ent in rd {
            let ent = ent?;
            let rel = format!("{rel_dir}/{}", ent.file_name().to_string_lossy());
            if RUNTIME_PATHS.contains(&rel.as_str()) {
                continue;
            }
            let md = std::fs::symlink_metadata(ent.path())?;
            let whiteout = md.file_type().is_char_device() && md.rdev() == 0;
            if whiteout {
                found.insert(rel, DELETED);
                continue;
            }
            let existed = in_lower(lowers, &rel);
            if md.is_dir() {
                if !existed {
                    found.insert(rel.clone(), ADDED);
                } else if is_opaque(&ent.path()) {
                    found.insert(rel.clone(), MODIFIED);
                }
                stack.push((ent.path(), rel));
            } else {
                found.insert(rel, if existed { MODIFIED } else { ADDED });
            }
        }
    }
    // A changed path's directories changed too (as Docker reports them).
    let parents: Vec<String> = found
        .keys()
        .flat_map(|p| {
            let mut out = Vec::new();
            let mut cur = Path::new(p).parent();
            while let Some(d) = cur {
                let s = d.display().to_string();
                if s == "/" || s.is_empty() {
                    break;
                }
                out.push(s);
                cur = d.parent();
            }
            out
        })
        .collect();
    for p in parents {
        found.entry(p).or_insert(MODIFIED);
    }
    Ok(found.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_modified_deleted_and_runtime_paths() {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        for d in ["bin", "etc", "tmp"] {
            std::fs::create_dir_all(lower.join(d)).unwrap();
        }
        std::fs::write(lower.join("bin/ls"), "x").unwrap();
        std::fs::write(lower.join("etc/passwd"), "x").unwrap();
        for d in ["bin", "etc", "tmp/new", "proc"] {
            std::fs::create_dir_all(upper.join(d)).unwrap();
        }
        std::fs::write(upper.join("etc/passwd"), "changed").unwrap();
        std::fs::write(upper.join("etc/hostname"), "").unwrap();
        std::fs::write(upper.join("tmp/new/file"), "x").unwrap();
        nix::sys::stat::mknod(
            &upper.join("bin/ls"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let got = changes(&upper, &[lower]).unwrap();
        assert_eq!(
            got,
            vec![
                ("/bin".to_string(), MODIFIED),
                ("/bin/ls".to_string(), DELETED),
                ("/etc".to_string(), MODIFIED),
                ("/etc/passwd".to_string(), MODIFIED),
                ("/tmp".to_string(), MODIFIED),
                ("/tmp/new".to_string(), ADDED),
                ("/tmp/new/file".to_string(), ADDED),
            ]
        );
    }
}
