//! Copy-up: a volume mounted where the image has content gets that content first, as
//! Docker does when it creates a container (`populateVolumes`): only into an empty
//! volume, only from a directory, with owners, modes, times, hard links, symlinks,
//! device nodes and extended attributes kept, and the volume's own directory taking the
//! owner and mode of the image's directory.
//!
//! It reads the container's root filesystem (the image's layers under its fresh upper
//! layer) and writes only into the volume.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// What copy-up found at the destination in the image.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Content (possibly just the directory's owner and mode) was copied.
    Copied,
    /// Nothing to do: the image has no such path, or the volume already has content.
    Nothing,
    /// The image has a non-directory there (its path on the host).
    NotADirectory(PathBuf),
}

/// Resolves `path` inside `root` as if `root` were `/`: symlinks are followed, but never
/// out of `root` (moby's `FollowSymlinkInScope`); missing components stay as written.
pub fn resolve_in_root(root: &Path, path: &str) -> io::Result<PathBuf> {
    fn parts(p: &Path) -> VecDeque<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect()
    }
    let mut pending = parts(Path::new(path));
    let mut resolved = PathBuf::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(md) if md.file_type().is_symlink() => {
                hops += 1;
                if hops > 255 {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links resolving {path}"
                    )));
                }
                let target = std::fs::read_link(&full)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for p in parts(&target).into_iter().rev() {
                    pending.push_front(p);
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// Copies the image's content at `destination` (inside `rootfs`) into the empty volume
/// directory `volume`.
pub fn copy_up(rootfs: &Path, destination: &str, volume: &Path) -> io::Result<Outcome> {
    let src = resolve_in_root(rootfs, destination)?;
    let md = match std::fs::symlink_metadata(&src) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::Nothing),
        Err(e) => return Err(e),
    };
    if !md.is_dir() {
        return Ok(Outcome::NotADirectory(src));
    }
    if std::fs::read_dir(volume)?.next().is_some() {
        return Ok(Outcome::Nothing);
    }
    let mut links = HashMap::new();
    copy_tree(&src, volume, &mut links)?;
    copy_metadata(&src, volume, &md)?;
    Ok(Outcome::Copied)
}

fn ctx(e: io::Error, what: &str, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
}

fn copy_tree(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(src).map_err(|e| ctx(e, "reading", src))? {
        let entry = entry.map_err(|e| ctx(e, "reading", src))?;
        let s = entry.path();
        let d = dst.join(entry.file_name());
        let md = std::fs::symlink_metadata(&s).map_err(|e| ctx(e, "stat", &s))?;
        let ft = md.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&d).map_err(|e| ctx(e, "creating", &d))?;
            copy_tree(&s, &d, links)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&s).map_err(|e| ctx(e, "reading", &s))?;
            std::os::unix::fs::symlink(target, &d).map_err(|e| ctx(e, "creating", &d))?;
        } else {
            if md.nlink() > 1 {
                let key = (md.dev(), md.ino());
                if let Some(first) = links.get(&key) {
                    std::fs::hard_link(first, &d).map_err(|e| ctx(e, "linking", &d))?;
                    continue;
                }
                links.insert(key, d.clone());
            }
            if ft.is_file() {
                std::fs::copy(&s, &d).map_err(|e| ctx(e, "copying", &s))?;
            } else if ft.is_fifo() {
                nix::unistd::mkfifo(&d, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| ctx(e.into(), "creating", &d))?;
            } else if ft.is_char_device() || ft.is_block_device() {
                let kind = if ft.is_char_device() {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                nix::sys::stat::mknod(
                    &d,
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    md.rdev(),
                )
                .map_err(|e| ctx(e.into(), "creating", &d))?;
            } else {
                // A socket is bound by a process; there is nothing to copy.
                continue;
            }
        }
        copy_metadata(&s, &d, &md)?;
    }
    Ok(())
}

/// Owner, mode, extended attributes and times of `src` onto `dst` (in that order: a
/// chown clears set-id bits, and every change touches the times).
fn copy_metadata(src: &Path, dst: &Path, md: &std::fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()))
        .map_err(|e| ctx(e, "chown", dst))?;
    let symlink = md.file_type().is_symlink();
    if !symlink {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| ctx(e, "chmod", dst))?;
        // Attributes the target filesystem does not support are skipped, as Docker's
        // copy does (a tmpfs volume takes no `user.*`, for one).
        for name in xattr::list(src).map_err(|e| ctx(e, "listing xattrs of", src))? {
            if let Some(value) =
                xattr::get(src, &name).map_err(|e| ctx(e, "reading xattr of", src))?
            {
                match xattr::set(dst, &name, &value) {
                    Ok(()) => {}
                    Err(e)
                        if e.kind() == io::ErrorKind::Unsupported
                            || e.raw_os_error() == Some(libc_enotsup()) => {}
                    Err(e) => return Err(ctx(e, "setting xattr on", dst)),
                }
            }
        }
    }
    let atime = nix::sys::time::TimeSpec::new(md.atime(), md.atime_nsec());
    let mtime = nix::sys::time::TimeSpec::new(md.mtime(), md.mtime_nsec());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &atime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| ctx(e.into(), "setting times of", dst))?;
    Ok(())
}

fn libc_enotsup() -> i32 {
    nix::Error::ENOTSUP as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root_only() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("real/dir", root.join("rel")).unwrap();
        symlink("../../../../etc", root.join("real/escape")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/abs/dir").unwrap(),
            root.join("real/dir")
        );
        assert_eq!(
            resolve_in_root(root, "/rel").unwrap(),
            root.join("real/dir")
        );
        // `..` and absolute targets stop at the root: never the host's /etc.
        assert_eq!(
            resolve_in_root(root, "/real/escape").unwrap(),
            root.join("etc")
        );
        assert_eq!(resolve_in_root(root, "/../../x").unwrap(), root.join("x"));
        assert_eq!(
            resolve_in_root(root, "/missing/a").unwrap(),
            root.join("missing/a")
        );
        symlink("loop", root.join("loop")).unwrap();
        assert!(resolve_in_root(root, "/loop").is_err());
    }

    #[test]
    fn copies_content_owners_modes_and_links_into_an_empty_volume_only() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("rootfs");
        let src = root.join("data");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), b"hello").unwrap();
        std::fs::set_permissions(src.join("a.txt"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::fs::hard_link(src.join("a.txt"), src.join("sub/hard")).unwrap();
        symlink("../a.txt", src.join("sub/link")).unwrap();
        std::os::unix::fs::lchown(src.join("sub"), Some(1234), Some(5678)).unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o710)).unwrap();
        nix::unistd::mkfifo(
            &src.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let vol = d.path().join("vol");
        std::fs::create_dir(&vol).unwrap();

        assert_eq!(copy_up(&root, "/data", &vol).unwrap(), Outcome::Copied);
        assert_eq!(std::fs::read(vol.join("a.txt")).unwrap(), b"hello");
        let md = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        assert_eq!(md(&vol.join("a.txt")).mode() & 0o7777, 0o640);
        assert_eq!(
            md(&vol.join("a.txt")).ino(),
            md(&vol.join("sub/hard")).ino()
        );
        assert_eq!(
            std::fs::read_link(vol.join("sub/link")).unwrap(),
            Path::new("../a.txt")
        );
        assert_eq!(
            (md(&vol.join("sub")).uid(), md(&vol.join("sub")).gid()),
            (1234, 5678)
        );
        assert!(md(&vol.join("fifo")).file_type().is_fifo());
        assert_eq!(md(&vol).mode() & 0o7777, 0o710);
        assert_eq!(
            md(&vol.join("a.txt")).mtime(),
            md(&src.join("a.txt")).mtime()
        );

        // A volume with content is left alone.
        std::fs::write(src.join("new.txt"), b"x").unwrap();
        assert_eq!(copy_up(&root, "/data", &vol).unwrap(), Outcome::Nothing);
        assert!(!vol.join("new.txt").exists());
        // Nothing in the image there: nothing to do; a file there: reported.
        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert_eq!(copy_up(&root, "/nope", &empty).unwrap(), Outcome::Nothing);
        assert_eq!(
            copy_up(&root, "/data/a.txt", &empty).unwrap(),
            Outcome::NotADirectory(src.join("a.txt"))
        );
    }
}
