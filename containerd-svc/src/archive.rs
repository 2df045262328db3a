//! `docker cp`: stat, tar and untar paths inside a container's filesystem.
//!
//! Every lookup goes through a descriptor of the container's root and `openat2` with
//! `RESOLVE_IN_ROOT`, so symlinks (absolute ones too) resolve as they would inside the
//! container and nothing — `..`, a link planted by the container — can reach the host's
//! files. The last component is never followed: entries are created and read with
//! `*at` calls on the resolved parent and `O_NOFOLLOW`. An archive to extract is checked
//! whole before the first entry is written, so a hostile one changes nothing.

use crate::service::Service;
use crate::{Error, store};
use berth_proto::containers::{
    ArchiveChunk, ArchivePutInput, ArchiveRequest, PathStat as ProtoStat,
};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, fstatat};
use nix::unistd::{Gid, Uid};
use std::ffi::OsString;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// What `HEAD/GET /containers/{id}/archive` report in `X-Docker-Container-Path-Stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits, as the CLI decodes them.
    pub mode: u32,
    /// RFC 3339.
    pub mtime: String,
    pub link_target: String,
}

/// Go's `os.FileMode` for a `st_mode`.
pub fn go_mode(st_mode: u32) -> u32 {
    let mut m = st_mode & 0o777;
    m |= match st_mode & libc::S_IFMT {
        libc::S_IFDIR => 1 << 31,
        libc::S_IFLNK => 1 << 27,
        libc::S_IFBLK => 1 << 26,
        libc::S_IFCHR => (1 << 26) | (1 << 21),
        libc::S_IFIFO => 1 << 25,
        libc::S_IFSOCK => 1 << 24,
        _ => 0,
    };
    if st_mode & libc::S_ISUID != 0 {
        m |= 1 << 23;
    }
    if st_mode & libc::S_ISGID != 0 {
        m |= 1 << 22;
    }
    if st_mode & libc::S_ISVTX != 0 {
        m |= 1 << 20;
    }
    m
}

fn sys(what: impl std::fmt::Display) -> impl FnOnce(nix::Error) -> Error {
    move |e| Error::Internal(format!("{what}: {e}"))
}

/// A container's root directory, held open.
pub struct Root {
    fd: OwnedFd,
    /// Names the container in Docker's "Could not find" message.
    container: String,
}

/// `path` made absolute and lexically clean ("a/../b" → "/b"); `..` cannot climb above
/// the root, as inside the container.
pub fn clean(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

impl Root {
    /// Opens `dir` (the container's `/proc/<pid>/root`, or its rootfs when stopped).
    pub fn open(dir: &Path, container: &str) -> Result<Self, Error> {
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys(format!("opening {}", dir.display())))?;
        Ok(Self {
            fd,
            container: container.to_string(),
        })
    }

    fn not_found(&self, path: &str) -> Error {
        // Docker's wording.
        Error::Missing(format!(
            "Could not find the file {path} in container {}",
            self.container
        ))
    }

    /// Opens directory `dir` (absolute in the container), following symlinks inside it.
    fn open_dir(&self, dir: &Path, shown: &str) -> Result<OwnedFd, Error> {
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(&self.fd, rel, how).map_err(|e| match e {
            nix::Error::ENOENT => self.not_found(shown),
            nix::Error::ENOTDIR => {
                Error::InvalidArgument(format!("{shown}: a path component is not a directory"))
            }
            e => Error::Internal(format!("resolving {shown}: {e}")),
        })
    }

    /// An `O_PATH` descriptor of `path` (absolute in the container, symlinks followed
    /// inside it), to mount on through `/proc/self/fd`.
    fn open_target(&self, path: &str) -> Result<OwnedFd, Error> {
        let clean = clean(path);
        let rel = clean.strip_prefix("/").unwrap_or(&clean);
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(&self.fd, rel, how).map_err(|e| match e {
            nix::Error::ENOENT => self.not_found(path),
            e => Error::Internal(format!("resolving {path}: {e}")),
        })
    }

    /// The text of a small regular file (absolute in the container, symlinks resolved
    /// inside it), at most `cap` bytes: None for anything else (missing, a FIFO or a
    /// device, larger than `cap`, unreadable). Opened non-blocking, so a FIFO planted
    /// by an image cannot hang the caller.
    pub fn read_small_file(&self, path: &str, cap: u64) -> Option<String> {
        let clean = clean(path);
        let rel = clean.strip_prefix("/").unwrap_or(&clean);
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = openat2(&self.fd, rel, how).ok()?;
        let st = nix::sys::stat::fstat(&fd).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size as u64 > cap {
            return None;
        }
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(cap + 1)
            .read_to_string(&mut text)
            .ok()?;
        (text.len() as u64 <= cap).then_some(text)
    }

    /// Creates directory `path` (absolute in the container) and any missing parents,
    /// mode 0755, each resolved inside the root (Docker creates a missing working
    /// directory at create). A component that exists and is no directory is an error.
    pub fn mkdir_all(&self, path: &str) -> Result<(), Error> {
        let clean = clean(path);
        let mut prefix = PathBuf::from("/");
        let mut parent = self.open_dir(&prefix, path)?;
        for c in clean.components().skip(1) {
            prefix.push(c);
            let dir = match self.open_dir(&prefix, path) {
                Err(Error::Missing(_)) => {
                    match nix::sys::stat::mkdirat(
                        &parent,
                        c.as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(nix::Error::EEXIST) => {}
                        Err(e) => return Err(Error::Internal(format!("creating {path}: {e}"))),
                    }
                    self.open_dir(&prefix, path)?
                }
                r => r?,
            };
            parent = dir;
        }
        Ok(())
    }

    /// The parent directory of `path` and its last component (None for "/").
    fn split(&self, path: &str) -> Result<(OwnedFd, Option<OsString>), Error> {
        let clean = clean(path);
        let name = clean.file_name().map(|n| n.to_os_string());
        let parent = clean.parent().unwrap_or(Path::new("/"));
        Ok((self.open_dir(parent, path)?, name))
    }

    /// lstat of `name` in `dir`; a missing one is Docker's "Could not find" for `path`.
    fn lstat_at(&self, dir: &OwnedFd, name: &OsString, path: &str) -> Result<FileStat, Error> {
        fstatat(
            dir,
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| match e {
            nix::Error::ENOENT => self.not_found(path),
            e => Error::Internal(format!("stat {path}: {e}")),
        })
    }

    /// lstat of `path`: the last component is not followed.
    pub fn stat(&self, path: &str) -> Result<PathStat, Error> {
        let (dir, name) = self.split(path)?;
        let name = name.unwrap_or_else(|| ".".into());
        let st = self.lstat_at(&dir, &name, path)?;
        let link_target = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            nix::fcntl::readlinkat(&dir, name.as_os_str())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(PathStat {
            name: entry_name(path),
            size: st.st_size,
            mode: go_mode(st.st_mode),
            mtime: crate::rfc3339_nanos(st.st_mtime * 1_000_000_000 + st.st_mtime_nsec),
            link_target,
        })
    }

    /// Writes a tar of `path` (named by its last component, as Docker names it; a
    /// directory with all it holds, symlinks as links) to `out`.
    pub fn tar(&self, path: &str, out: impl Write) -> Result<(), Error> {
        let (dir, name) = self.split(path)?;
        let mut b = tar::Builder::new(out);
        b.follow_symlinks(false);
        let io = |e: std::io::Error| Error::Internal(format!("writing the archive: {e}"));
        let entry = PathBuf::from(entry_name(path));
        match name {
            Some(name) => {
                // Existence (and Docker's 404) before any byte goes out.
                self.lstat_at(&dir, &name, path)?;
                append(&mut b, &dir, &name, &entry)?
            }
            None => append_dir_contents(&mut b, &dir, &entry, true)?,
        }
        b.finish().map_err(io)?;
        Ok(())
    }

    /// Extracts the tar in `archive` into directory `path` (which must exist). Every
    /// entry is checked first; then each is created through the resolved parent, owned
    /// by `owner` when given (else the archive's owner).
    pub fn untar(
        &self,
        path: &str,
        mut archive: impl Read + Seek,
        opts: &UntarOptions,
    ) -> Result<(), Error> {
        let dest = clean(path);
        let (dir, name) = self.split(path)?;
        if let Some(name) = &name {
            let st = fstatat(&dir, name.as_os_str(), nix::fcntl::AtFlags::empty()).map_err(
                |e| match e {
                    nix::Error::ENOENT => self.not_found(path),
                    e => Error::Internal(format!("stat {path}: {e}")),
                },
            )?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                // Docker's wording.
                return Err(Error::InvalidArgument(
                    "extraction point is not a directory".into(),
                ));
            }
        }
        let bad = |e: std::io::Error| Error::InvalidArgument(format!("invalid tar archive: {e}"));
        // Pass 1: every entry's name, type and link target must be acceptable.
        {
            let mut a = tar::Archive::new(&mut archive);
            for entry in a.entries().map_err(bad)? {
                let entry = entry.map_err(bad)?;
                check_entry(&entry)?;
            }
        }
        archive
            .rewind()
            .map_err(|e| Error::Internal(format!("rewinding the archive: {e}")))?;
        // Pass 2: write.
        let mut a = tar::Archive::new(archive);
        for entry in a.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let rel = entry_path(&entry)?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            let full = dest.join(&rel);
            let parent = full.parent().unwrap_or(Path::new("/"));
            let name = full
                .file_name()
                .map(|n| n.to_os_string())
                .ok_or_else(|| Error::InvalidArgument(format!("bad entry {}", rel.display())))?;
            let shown = full.display().to_string();
            let pdir = self.open_dir(parent, &shown)?;
            self.write_entry(&mut entry, &pdir, &name, &shown, opts)?;
        }
        Ok(())
    }

    fn write_entry<R: Read>(
        &self,
        entry: &mut tar::Entry<R>,
        dir: &OwnedFd,
        name: &OsString,
        shown: &str,
        opts: &UntarOptions,
    ) -> Result<(), Error> {
        use nix::fcntl::AtFlags;
        use nix::unistd::UnlinkatFlags;
        let h = entry.header().clone();
        let mode = Mode::from_bits_truncate(h.mode().unwrap_or(0o644) & 0o7777);
        let existing = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok();
        let is_dir = |st: &FileStat| st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let kind = h.entry_type();
        let want_dir = kind.is_dir();
        if let Some(st) = &existing {
            if opts.no_overwrite_dir_non_dir && is_dir(st) != want_dir {
                // Docker's wording.
                return Err(Error::InvalidArgument(if is_dir(st) {
                    format!("cannot overwrite directory {shown:?} with non-directory")
                } else {
                    format!("cannot overwrite non-directory {shown:?} with directory")
                }));
            }
            if !want_dir || !is_dir(st) {
                let flag = if is_dir(st) {
                    UnlinkatFlags::RemoveDir
                } else {
                    UnlinkatFlags::NoRemoveDir
                };
                nix::unistd::unlinkat(dir, name.as_os_str(), flag)
                    .map_err(sys(format!("replacing {shown}")))?;
            }
        }
        // The created entry, held open (never re-looked-up by name, so a container that
        // swaps it for a symlink cannot redirect the chown or chmod); None for a symlink.
        let handle: Option<OwnedFd> = if want_dir {
            if existing.as_ref().is_none_or(|st| !is_dir(st)) {
                nix::sys::stat::mkdirat(dir, name.as_os_str(), mode)
                    .map_err(sys(format!("creating {shown}")))?;
            }
            Some(
                openat(
                    dir,
                    name.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(sys(format!("opening {shown}")))?,
            )
        } else if kind.is_file() {
            let fd = openat(
                dir,
                name.as_os_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                mode,
            )
            .map_err(sys(format!("creating {shown}")))?;
            let mut f = std::fs::File::from(fd);
            std::io::copy(entry, &mut f)
                .map_err(|e| Error::Internal(format!("writing {shown}: {e}")))?;
            Some(f.into())
        } else if kind.is_symlink() {
            let target = h
                .link_name_bytes()
                .ok_or_else(|| Error::InvalidArgument(format!("{shown}: a link without target")))?;
            nix::unistd::symlinkat(std::ffi::OsStr::from_bytes(&target), dir, name.as_os_str())
                .map_err(sys(format!("creating {shown}")))?;
            None
        } else if kind.is_hard_link() {
            let target = entry_link_path(entry)?;
            let full = clean(&opts.dest_display).join(&target);
            let (tdir, tname) = self.split(&full.display().to_string())?;
            let tname = tname.ok_or_else(|| {
                Error::InvalidArgument(format!("{shown}: a hard link to the root"))
            })?;
            nix::unistd::linkat(
                &tdir,
                tname.as_os_str(),
                dir,
                name.as_os_str(),
                AtFlags::empty(),
            )
            .map_err(sys(format!("linking {shown}")))?;
            return Ok(());
        } else {
            return Err(Error::Unimplemented(format!(
                "copying a {kind:?} entry ({shown})"
            )));
        };
        let (uid, gid) = match opts.owner {
            Some(o) => o,
            None => (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32),
        };
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        match &handle {
            Some(fd) => {
                nix::unistd::fchown(fd, uid, gid).map_err(sys(format!("chown {shown}")))?;
                // After chown, which clears set-id bits.
                nix::sys::stat::fchmod(fd, mode).map_err(sys(format!("chmod {shown}")))?;
            }
            None => nix::unistd::fchownat(
                dir,
                name.as_os_str(),
                uid,
                gid,
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(sys(format!("chown {shown}")))?,
        }
        if let Ok(mtime) = h.mtime() {
            let t = nix::sys::time::TimeSpec::new(mtime as i64, 0);
            let _ = nix::sys::stat::utimensat(
                dir,
                name.as_os_str(),
                &t,
                &t,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            );
        }
        Ok(())
    }
}

/// How to extract.
#[derive(Debug, Clone, Default)]
pub struct UntarOptions {
    /// Refuse to replace a directory with a non-directory or the reverse.
    pub no_overwrite_dir_non_dir: bool,
    /// Owner of what is created (`docker cp -a`: the container's user); None keeps the
    /// archive's.
    pub owner: Option<(u32, u32)>,
    /// The extraction directory as asked (hard link targets are relative to it).
    pub dest_display: String,
}

/// The name Docker gives the archived path: its last component ("." for the root).
fn entry_name(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit('/').next() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => ".".into(),
    }
}

/// An entry's path, relative and without `..` (leading "./" and "/" dropped).
fn relative(raw: &Path, what: &str) -> Result<PathBuf, Error> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::InvalidArgument(format!(
                    "invalid tar archive: {what} {:?} leaves the destination",
                    raw.display().to_string()
                )));
            }
        }
    }
    Ok(out)
}

fn entry_path<R: Read>(entry: &tar::Entry<R>) -> Result<PathBuf, Error> {
    let raw = PathBuf::from(OsString::from_vec(entry.path_bytes().into_owned()));
    relative(&raw, "entry")
}

fn entry_link_path<R: Read>(entry: &tar::Entry<R>) -> Result<PathBuf, Error> {
    let raw = entry
        .link_name_bytes()
        .map(|b| PathBuf::from(OsString::from_vec(b.into_owned())))
        .ok_or_else(|| {
            Error::InvalidArgument("invalid tar archive: a link without target".into())
        })?;
    relative(&raw, "hard link target")
}

/// What may be extracted: regular files, directories, symlinks (they resolve inside the
/// container), and hard links to entries inside the destination.
fn check_entry<R: Read>(entry: &tar::Entry<R>) -> Result<(), Error> {
    entry_path(entry)?;
    let kind = entry.header().entry_type();
    if kind.is_hard_link() {
        entry_link_path(entry)?;
    } else if !(kind.is_file()
        || kind.is_dir()
        || kind.is_symlink()
        || kind.is_pax_global_extensions()
        || kind.is_pax_local_extensions()
        || kind.is_gnu_longname()
        || kind.is_gnu_longlink())
    {
        return Err(Error::Unimplemented(format!(
            "copying a {kind:?} entry ({})",
            String::from_utf8_lossy(&entry.path_bytes())
        )));
    }
    Ok(())
}

/// Appends `name` in `dir` as `entry` (recursing into directories).
fn append<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &OwnedFd,
    name: &OsString,
    entry: &Path,
) -> Result<(), Error> {
    use nix::fcntl::AtFlags;
    let io = |e: std::io::Error| Error::Internal(format!("writing the archive: {e}"));
    let st = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(sys(format!("stat {}", entry.display())))?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h.set_mtime(st.st_mtime.max(0) as u64);
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, entry, std::io::empty()).map_err(io)?;
            let sub = openat(
                dir,
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(sys(format!("opening {}", entry.display())))?;
            append_dir_contents(b, &sub, entry, false)?;
        }
        libc::S_IFREG => {
            let fd = openat(
                dir,
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(sys(format!("opening {}", entry.display())))?;
            let f = std::fs::File::from(fd);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(st.st_size as u64);
            b.append_data(&mut h, entry, f.take(st.st_size as u64))
                .map_err(io)?;
        }
        libc::S_IFLNK => {
            let target = nix::fcntl::readlinkat(dir, name.as_os_str())
                .map_err(sys(format!("readlink {}", entry.display())))?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, entry, Path::new(&target))
                .map_err(io)?;
        }
        // Devices, fifos and sockets are left out, as a copy of data.
        _ => {}
    }
    Ok(())
}

/// Appends everything in directory `dir` under `prefix` (the root: "." entries too).
fn append_dir_contents<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &OwnedFd,
    prefix: &Path,
    include_self: bool,
) -> Result<(), Error> {
    if include_self {
        append(b, dir, &OsString::from("."), prefix)?;
        return Ok(());
    }
    // The listing through the descriptor's /proc link reads the same directory.
    let listing = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()))
        .map_err(|e| Error::Internal(format!("listing {}: {e}", prefix.display())))?;
    let mut names: Vec<OsString> = listing
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for n in names {
        append(b, dir, &n, &prefix.join(&n))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The service side.

/// Bytes per `ArchiveChunk`.
const CHUNK: usize = 64 * 1024;

fn to_proto(s: PathStat) -> ProtoStat {
    ProtoStat {
        name: s.name,
        size: s.size,
        mode: s.mode,
        mtime: s.mtime,
        link_target: s.link_target,
    }
}

/// Where the first outcome of an archive read goes: the stat, or the failure before it.
type StatSlot = std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Result<PathStat, Error>>>>;

/// Answers the stat slot with `r` if nobody has yet; otherwise hands back `r`'s error
/// (it then belongs to the stream).
fn answer_stat(slot: &StatSlot, r: Result<PathStat, Error>) -> Option<Error> {
    match slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(tx) => {
            let _ = tx.send(r);
            None
        }
        None => r.err(),
    }
}

/// The stream of an archive: its stat, then the chunks of `rest` as they come.
fn with_stat_first(
    stat: ProtoStat,
    mut rest: tokio::sync::mpsc::Receiver<Result<ArchiveChunk, tonic::Status>>,
) -> tokio::sync::mpsc::Receiver<Result<ArchiveChunk, tonic::Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        let first = ArchiveChunk {
            stat: Some(stat),
            data: Vec::new(),
        };
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        while let Some(m) = rest.recv().await {
            if tx.send(m).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// A bind mount of a stopped container (a volume, `-v /host:/x`).
#[derive(Debug, Clone)]
struct Bind {
    source: PathBuf,
    destination: String,
    read_only: bool,
}

/// Where `docker cp` reads and writes a container's files.
enum View {
    /// `/proc/<pid>/root` of a running container (its mounts included), or the rootfs
    /// of a stopped one when no bind mount is on the way.
    Direct(Root),
    /// A stopped container's rootfs with its bind mounts where it sees them: each
    /// operation runs on a thread of its own, in a private mount namespace (made
    /// private first, so nothing propagates to the host) that ends with the thread.
    Mounted {
        rootfs: PathBuf,
        binds: Vec<Bind>,
        container: String,
    },
}

impl View {
    /// Runs `op` on the view's root (blocking).
    fn run<T: Send + 'static>(
        self,
        op: impl FnOnce(&Root) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        match self {
            View::Direct(root) => op(&root),
            View::Mounted {
                rootfs,
                binds,
                container,
            } => std::thread::Builder::new()
                .name("cp-mounts".into())
                .spawn(move || {
                    let root = mounted_root(&rootfs, &binds, &container)?;
                    op(&root)
                })
                .map_err(|e| Error::Internal(format!("starting the copy thread: {e}")))?
                .join()
                .map_err(|_| Error::Internal("the copy thread panicked".into()))?,
        }
    }
}

/// On the calling thread (which must be one of its own): a private mount namespace in
/// which `binds` are mounted on `rootfs`, each target resolved inside it.
fn mounted_root(rootfs: &Path, binds: &[Bind], container: &str) -> Result<Root, Error> {
    use nix::mount::{MsFlags, mount};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS | nix::sched::CloneFlags::CLONE_FS)
        .map_err(sys("unshare(CLONE_NEWNS)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("making the copy's mounts private"))?;
    let root = Root::open(rootfs, container)?;
    for b in binds {
        let target = match root.open_target(&b.destination) {
            // A container that never ran has no mount points yet: made as the runtime
            // makes them at start (and dockerd for a copy), inside the rootfs.
            Err(Error::Missing(_)) if b.source.is_dir() => {
                root.mkdir_all(&b.destination)?;
                root.open_target(&b.destination)?
            }
            Err(Error::Missing(_)) => {
                return Err(Error::Unimplemented(format!(
                    "copying under the file mount {} of a container that never ran",
                    b.destination
                )));
            }
            r => r?,
        };
        let at = format!("/proc/self/fd/{}", target.as_raw_fd());
        mount(
            Some(&b.source),
            at.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys(format!("mounting {} for the copy", b.destination)))?;
        if b.read_only {
            // The descriptor names the covered directory: the bind's own root is found
            // by resolving the path again.
            let mounted = root.open_target(&b.destination)?;
            let at = format!("/proc/self/fd/{}", mounted.as_raw_fd());
            mount(
                None::<&str>,
                at.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(sys(format!("{} read-only for the copy", b.destination)))?;
        }
    }
    Ok(root)
}

/// The bind mounts of a stopped container that matter to `path`: those under it or
/// above it, parents first.
fn binds_for(mounts: &[berth_proto::containers::Mount], path: &str) -> Vec<Bind> {
    let wanted = clean(path);
    let mut binds: Vec<Bind> = mounts
        .iter()
        .filter(|m| m.r#type == "bind" && !m.source.is_empty())
        .filter(|m| {
            let dest = clean(&m.destination);
            wanted.starts_with(&dest) || dest.starts_with(&wanted)
        })
        .map(|m| Bind {
            source: PathBuf::from(&m.source),
            destination: clean(&m.destination).display().to_string(),
            read_only: m.options.iter().any(|o| o == "ro"),
        })
        .collect();
    binds.sort_by_key(|b| Path::new(&b.destination).components().count());
    binds
}

impl Service {
    /// The container's files as it sees them: `/proc/<pid>/root` while it runs (volumes
    /// and tmpfs mounts included), its rootfs otherwise, with its bind mounts (volumes)
    /// placed for the copy when `path` involves one. A stopped container's tmpfs mounts
    /// hold nothing: their paths are the rootfs's, as in Docker.
    async fn archive_root(&self, key: &str, path: &str) -> Result<(View, store::Record), Error> {
        let rec = self.resolve(key).await?;
        let spec = rec.spec()?;
        let running = (rec.state == "running" || rec.state == "paused") && rec.pid > 0;
        if running {
            let dir = PathBuf::from(format!("/proc/{}/root", rec.pid));
            return Ok((View::Direct(Root::open(&dir, key)?), rec));
        }
        let binds = binds_for(&spec.mounts, path);
        let rootfs = PathBuf::from(&spec.rootfs_path);
        let view = if binds.is_empty() {
            View::Direct(Root::open(&rootfs, key)?)
        } else {
            View::Mounted {
                rootfs,
                binds,
                container: key.to_string(),
            }
        };
        Ok((view, rec))
    }

    pub async fn archive_stat(&self, req: ArchiveRequest) -> Result<ProtoStat, Error> {
        let (view, _) = self.archive_root(&req.id, &req.path).await?;
        let path = req.path;
        let stat = tokio::task::spawn_blocking(move || view.run(move |root| root.stat(&path)))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        Ok(to_proto(stat))
    }

    /// The stat, then the tar in chunks; an error after the stat ends the stream.
    pub async fn archive_get(
        &self,
        req: ArchiveRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ArchiveChunk, tonic::Status>>, Error> {
        let (view, _) = self.archive_root(&req.id, &req.path).await?;
        let path = req.path;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        // The stat decides the answer (a missing path is an error, not a stream); the tar
        // follows on the same root.
        let (stat_tx, stat_rx) = tokio::sync::oneshot::channel();
        let stat_tx: std::sync::Arc<StatSlot> =
            std::sync::Arc::new(std::sync::Mutex::new(Some(stat_tx)));
        tokio::task::spawn_blocking(move || {
            let streamed = tx.clone();
            let slot = stat_tx.clone();
            let r = view.run(move |root| {
                let stat = match root.stat(&path) {
                    Ok(s) => s,
                    Err(e) => {
                        answer_stat(&slot, Err(e));
                        return Ok(());
                    }
                };
                answer_stat(&slot, Ok(stat));
                let mut w = berth_kit::chunks::ChunkSender::new(streamed, CHUNK, |data| {
                    ArchiveChunk { stat: None, data }
                });
                root.tar(&path, &mut w).and_then(|()| {
                    w.flush()
                        .map_err(|e| Error::Internal(format!("sending the archive: {e}")))
                })
            });
            if let Err(e) = r
                && let Some(e) = answer_stat(&stat_tx, Err(e))
            {
                let _ = tx.blocking_send(Err(e.into()));
            }
        });
        let stat = stat_rx
            .await
            .map_err(|_| Error::Internal("the copy ended before its stat".into()))??;
        Ok(with_stat_first(to_proto(stat), rx))
    }

    /// Spools the archive to a temporary file (it is checked whole before writing), then
    /// extracts it.
    pub async fn archive_put(
        &self,
        mut input: tonic::Streaming<ArchivePutInput>,
    ) -> Result<(), Error> {
        let bad = |s: tonic::Status| Error::InvalidArgument(s.message().to_string());
        let first = input
            .message()
            .await
            .map_err(bad)?
            .ok_or_else(|| Error::InvalidArgument("ArchivePut needs a first message".into()))?;
        let (view, rec) = self.archive_root(&first.id, &first.path).await?;
        let spool_dir = self
            .inner
            .cfg
            .bundles_dir
            .parent()
            .unwrap_or(&self.inner.cfg.bundles_dir)
            .to_path_buf();
        let mut spool = tempfile::tempfile_in(&spool_dir)
            .map_err(|e| Error::Internal(format!("spooling the archive: {e}")))?;
        let spool_err = |e: std::io::Error| Error::Internal(format!("spooling the archive: {e}"));
        spool.write_all(&first.data).map_err(spool_err)?;
        while let Some(m) = input.message().await.map_err(bad)? {
            spool.write_all(&m.data).map_err(spool_err)?;
        }
        spool.rewind().map_err(spool_err)?;
        let owner = if first.copy_uid_gid {
            let spec = rec.spec()?;
            if spec.user.is_empty() {
                None
            } else {
                let u = crate::spec::resolve_user(&spec.user, Path::new(&spec.rootfs_path))?;
                Some((u.uid, u.gid))
            }
        } else {
            None
        };
        let opts = UntarOptions {
            no_overwrite_dir_non_dir: first.no_overwrite_dir_non_dir,
            owner,
            dest_display: first.path.clone(),
        };
        let path = first.path;
        tokio::task::spawn_blocking(move || view.run(move |root| root.untar(&path, spool, &opts)))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn root_with_files() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc/sub")).unwrap();
        std::fs::write(r.join("etc/hostname"), "box\n").unwrap();
        std::fs::write(r.join("etc/sub/a"), "aaa").unwrap();
        // Absolute and relative links that point outside: inside the container they
        // mean the container's own root.
        std::os::unix::fs::symlink("/", r.join("etc/up")).unwrap();
        std::os::unix::fs::symlink("../../../../../../", r.join("rel")).unwrap();
        let root = Root::open(r, "c1").unwrap();
        (d, root)
    }

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn mkdir_all_creates_inside_the_root_only() {
        let (d, root) = root_with_files();
        root.mkdir_all("/work/a/b").unwrap();
        assert!(d.path().join("work/a/b").is_dir());
        root.mkdir_all("/work/a/b").unwrap();
        // Through links that point outside: created in the container's root.
        root.mkdir_all("/rel/made-by-rel").unwrap();
        assert!(d.path().join("made-by-rel").is_dir());
        root.mkdir_all("/etc/up/made-by-up").unwrap();
        assert!(d.path().join("made-by-up").is_dir());
        assert!(!Path::new("/made-by-up").exists() && !Path::new("/made-by-rel").exists());
        assert!(matches!(
            root.mkdir_all("/etc/hostname/x"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            root.mkdir_all("/etc/hostname"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn stat_and_tar_stay_inside_the_root() {
        let (_d, root) = root_with_files();
        let st = root.stat("/etc/hostname").unwrap();
        assert_eq!((st.name.as_str(), st.size), ("hostname", 4));
        assert_eq!(st.mode, 0o644);
        assert_eq!(root.stat("/etc").unwrap().mode & (1 << 31), 1 << 31);
        let link = root.stat("/etc/up").unwrap();
        assert_eq!(link.mode & (1 << 27), 1 << 27);
        assert_eq!(link.link_target, "/");
        // Through the links: still the container's root, never the host's /etc.
        assert_eq!(root.stat("/etc/up/etc/hostname").unwrap().size, 4);
        assert_eq!(root.stat("/rel/etc/hostname").unwrap().size, 4);
        assert!(matches!(
            root.stat("/etc/up/etc/passwd"),
            Err(Error::Missing(_))
        ));
        let mut out = Vec::new();
        root.tar("/etc", &mut out).unwrap();
        let n = names(&out);
        assert!(
            n.contains(&"etc/".to_string()) || n.contains(&"etc".to_string()),
            "{n:?}"
        );
        assert!(n.contains(&"etc/sub/a".to_string()), "{n:?}");
        assert!(n.contains(&"etc/up".to_string()), "{n:?}");
        let mut out = Vec::new();
        root.tar("/rel/etc/hostname", &mut out).unwrap();
        assert_eq!(names(&out), vec!["hostname"]);
        let e = root.tar("/nope", Vec::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Could not find the file /nope in container c1"
        );
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Cursor<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o640);
            h.set_uid(1000);
            h.set_gid(1000);
            h.set_size(data.len() as u64);
            // set_path refuses "..": write the raw name as a hostile archive would.
            let raw = path.as_bytes();
            h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        Cursor::new(b.into_inner().unwrap())
    }

    #[test]
    fn untar_writes_through_links_inside_the_root_and_refuses_escapes() {
        let (d, root) = root_with_files();
        let opts = UntarOptions {
            dest_display: "/etc".into(),
            ..Default::default()
        };
        let good = tar_of(&[
            ("new/", tar::EntryType::Directory, b"", ""),
            ("new/f", tar::EntryType::Regular, b"data", ""),
            ("new/l", tar::EntryType::Symlink, b"", "/etc/hostname"),
            ("new/h", tar::EntryType::Link, b"", "new/f"),
            ("hostname", tar::EntryType::Regular, b"replaced", ""),
        ]);
        root.untar("/etc", good, &opts).unwrap();
        let r = d.path();
        assert_eq!(std::fs::read(r.join("etc/new/f")).unwrap(), b"data");
        assert_eq!(std::fs::read(r.join("etc/new/h")).unwrap(), b"data");
        assert_eq!(std::fs::read(r.join("etc/hostname")).unwrap(), b"replaced");
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(r.join("etc/new/f")).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o777), (1000, 0o640));
        // Extracting through the planted link lands inside the root.
        let via_link = tar_of(&[("x", tar::EntryType::Regular, b"in", "")]);
        root.untar("/etc/up/tmp-none/..", via_link, &opts).unwrap();
        assert_eq!(std::fs::read(r.join("x")).unwrap(), b"in");
        // Hostile archives: nothing of them is written.
        for bad in [
            tar_of(&[
                ("ok-first", tar::EntryType::Regular, b"x", ""),
                ("../escape", tar::EntryType::Regular, b"x", ""),
            ]),
            tar_of(&[
                ("ok-first", tar::EntryType::Regular, b"x", ""),
                ("h", tar::EntryType::Link, b"", "../../etc/shadow"),
            ]),
            tar_of(&[
                ("ok-first", tar::EntryType::Regular, b"x", ""),
                ("dev", tar::EntryType::Char, b"", ""),
            ]),
        ] {
            assert!(root.untar("/etc", bad, &opts).is_err());
            assert!(!r.join("etc/ok-first").exists());
        }
        // Not a directory / missing / no-overwrite.
        let one = || tar_of(&[("sub", tar::EntryType::Regular, b"x", "")]);
        let e = root.untar("/etc/hostname", one(), &opts).unwrap_err();
        assert_eq!(e.to_string(), "extraction point is not a directory");
        assert!(matches!(
            root.untar("/missing", one(), &opts),
            Err(Error::Missing(_))
        ));
        let strict = UntarOptions {
            no_overwrite_dir_non_dir: true,
            ..opts.clone()
        };
        let e = root.untar("/etc", one(), &strict).unwrap_err();
        assert!(e.to_string().contains("cannot overwrite directory"), "{e}");
    }

    #[test]
    fn names_and_modes() {
        assert_eq!(entry_name("/etc/hostname"), "hostname");
        assert_eq!(entry_name("/etc/"), "etc");
        assert_eq!(entry_name("/"), ".");
        assert_eq!(clean("a/../../b/./c"), PathBuf::from("/b/c"));
        assert_eq!(go_mode(libc::S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(
            go_mode(libc::S_IFREG | libc::S_ISUID | 0o4755 & 0o777),
            (1 << 23) | 0o755
        );
    }
}
