//! Overlay mounts for container snapshots, and reading the mount table.

use crate::error::ImagedError;
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// The kernel takes mount options in one page; leave room for the terminating NUL.
const MAX_OPTIONS: usize = 4095;

/// True when `path` is a mount point in this process's mount namespace.
pub fn is_mounted(path: &Path) -> Result<bool, ImagedError> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| ImagedError::io("reading /proc/self/mountinfo", e))?;
    let wanted = path.as_os_str().as_encoded_bytes();
    Ok(table.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape(mp).as_slice() == wanted)
    }))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> Vec<u8> {
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
    out
}

/// The overlay option string for these dirs (lower: topmost first).
pub fn overlay_options(lower: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    )
}

/// Mounts an overlay at `merged`.
pub fn mount_overlay(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> Result<(), ImagedError> {
    let options = overlay_options(lower, upper, work);
    if options.len() > MAX_OPTIONS {
        return Err(ImagedError::FailedPrecondition(format!(
            "too many layers to mount ({}): overlay options exceed a page",
            lower.len()
        )));
    }
    nix::mount::mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|source| ImagedError::Mount {
        context: format!("mounting overlay at {}", merged.display()),
        source,
    })
}

/// Detaches whatever is mounted at `path`; nothing mounted (or no such path) is success.
pub fn unmount(path: &Path) -> Result<(), ImagedError> {
    loop {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            // Stacked mounts (a double mount after a crash) come off one by one.
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(ImagedError::Mount {
                    context: format!("unmounting {}", path.display()),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape("/a\\040b"), b"/a b");
        assert_eq!(unescape("/plain"), b"/plain");
        assert_eq!(unescape("/end\\"), b"/end\\");
    }

    #[test]
    fn root_is_mounted() {
        assert!(is_mounted(Path::new("/")).unwrap());
        assert!(!is_mounted(Path::new("/definitely/not/a/mount")).unwrap());
    }
}
