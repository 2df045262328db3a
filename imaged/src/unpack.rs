//! Layer unpacking: decompression, safe extraction, overlayfs whiteouts, diff IDs.
//!
//! Everything here is blocking: call it from `spawn_blocking`.

use crate::error::ImagedError;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// The compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`tar+gzip`, Docker's `tar.gzip`).
    Gzip,
    /// zstd (`tar+zstd`).
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Picks the decompressor: the magic bytes win (registries mislabel layers), the media
/// type decides when the magic is inconclusive.
pub fn detect(media_type: &str, magic: &[u8]) -> Compression {
    if magic.starts_with(&GZIP_MAGIC) {
        Compression::Gzip
    } else if magic.starts_with(&ZSTD_MAGIC) {
        Compression::Zstd
    } else if magic.len() >= 4 {
        Compression::None
    } else if media_type.ends_with("gzip") {
        Compression::Gzip
    } else if media_type.ends_with("zstd") {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// What unpacking one layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `sha256:<hex>` of the uncompressed tar stream.
    pub diff_id: String,
    /// Bytes of regular file content (what `docker images` counts).
    pub size: u64,
}

/// Unpacks the (possibly compressed) layer blob at `blob` into `dest` (created if needed).
pub fn unpack_layer(blob: &Path, media_type: &str, dest: &Path) -> Result<Unpacked, ImagedError> {
    let file =
        File::open(blob).map_err(|e| ImagedError::io(format!("opening {}", blob.display()), e))?;
    unpack_layer_from(file, media_type, dest)
}

/// [`unpack_layer`] from a stream (a download as it arrives): the compression comes from
/// the media type or the first bytes.
#[tracing::instrument(name = "layer.unpack", skip_all, fields(layer.media_type = media_type))]
pub fn unpack_layer_from<R: Read>(
    mut source: R,
    media_type: &str,
    dest: &Path,
) -> Result<Unpacked, ImagedError> {
    let mut magic = [0u8; 4];
    let n =
        read_up_to(&mut source, &mut magic).map_err(|e| ImagedError::io("reading the layer", e))?;
    let whole = io::Cursor::new(magic[..n].to_vec()).chain(source);
    let buffered = BufReader::with_capacity(64 * 1024, whole);
    match detect(media_type, &magic[..n]) {
        Compression::None => unpack_tar(buffered, dest),
        Compression::Gzip => unpack_tar(flate2::read::GzDecoder::new(buffered), dest),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| ImagedError::BadLayer(format!("zstd layer: {e}")))?;
            unpack_tar(decoder, dest)
        }
    }
}

/// A blocking reader over chunks an async task sends (a download feeding an unpack on
/// a blocking thread); the sender's end is the end of the stream. `rt` runs the waits.
pub fn chunk_reader(
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    rt: tokio::runtime::Handle,
) -> impl Read {
    use futures_util::StreamExt as _;
    let chunks = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, io::Error>);
    tokio_util::io::SyncIoBridge::new_with_handle(tokio_util::io::StreamReader::new(chunks), rt)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Hashes and counts what passes through it: the diff ID is the sha256 of the whole
/// uncompressed stream, trailing padding included.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks an uncompressed tar stream into `dest`, converting whiteouts for overlayfs.
/// Any entry that would land outside `dest` is an error.
pub fn unpack_tar<R: Read>(reader: R, dest: &Path) -> Result<Unpacked, ImagedError> {
    std::fs::create_dir_all(dest)
        .map_err(|e| ImagedError::io(format!("creating {}", dest.display()), e))?;
    let mut hashing = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
    };
    let mut size = 0u64;
    {
        let mut archive = tar::Archive::new(&mut hashing);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_preserve_mtime(true);
        archive.set_unpack_xattrs(true);
        archive.set_overwrite(true);
        let entries = archive
            .entries()
            .map_err(|e| ImagedError::BadLayer(format!("reading layer tar: {e}")))?;
        for entry in entries {
            let mut entry =
                entry.map_err(|e| ImagedError::BadLayer(format!("reading layer tar: {e}")))?;
            let path = entry
                .path()
                .map_err(|e| ImagedError::BadLayer(format!("invalid path in layer: {e}")))?
                .into_owned();
            let rel = relative_inside(&path)?;
            let Some(file_name) = rel.file_name().and_then(|n| n.to_str()) else {
                // The root itself ("./"): its metadata is not ours to change.
                continue;
            };
            let parent = rel.parent().unwrap_or(Path::new(""));
            if file_name == ".wh..wh..opq" {
                let dir = mkdir_inside(dest, parent)?;
                xattr::set(&dir, "trusted.overlay.opaque", b"y")
                    .map_err(|e| ImagedError::io(format!("marking {} opaque", dir.display()), e))?;
                continue;
            }
            if file_name.starts_with(".wh..wh.") {
                // aufs bookkeeping (e.g. .wh..wh.plnk): meaningless on overlayfs.
                continue;
            }
            if let Some(hidden) = file_name.strip_prefix(".wh.") {
                // As containerd: a whiteout must name an entry of its directory
                // (`.wh..` and `.wh...` would hide the directory or its parent).
                if matches!(hidden, "" | "." | "..") {
                    return Err(ImagedError::BadLayer(format!(
                        "invalid whiteout name {}",
                        path.display()
                    )));
                }
                let dir = mkdir_inside(dest, parent)?;
                whiteout(&dir.join(hidden))?;
                continue;
            }
            if entry.header().entry_type().is_file() {
                size += entry.size();
            }
            let unpacked = entry.unpack_in(dest).map_err(|e| {
                // tar's message names the file; the reason is in its source.
                let why = std::error::Error::source(&e)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                ImagedError::BadLayer(format!("unpacking {}: {e}{why}", path.display()))
            })?;
            if !unpacked {
                return Err(ImagedError::BadLayer(format!(
                    "layer entry {} escapes the layer root",
                    path.display()
                )));
            }
        }
    }
    // The tar reader stops at the end-of-archive marker; the diff ID covers the rest too.
    io::copy(&mut hashing, &mut io::sink())
        .map_err(|e| ImagedError::BadLayer(format!("reading layer tar: {e}")))?;
    Ok(Unpacked {
        diff_id: format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
        size,
    })
}

/// The entry path relative to the layer root. Absolute paths are taken as relative to the
/// root (as tar does); `..` anywhere is refused.
fn relative_inside(path: &Path) -> Result<PathBuf, ImagedError> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => rel.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(ImagedError::BadLayer(format!(
                    "layer entry {} escapes the layer root",
                    path.display()
                )));
            }
        }
    }
    Ok(rel)
}

/// Creates `root/rel` component by component, refusing to go through anything that is
/// not a real directory (a symlink could point outside the root).
fn mkdir_inside(root: &Path, rel: &Path) -> Result<PathBuf, ImagedError> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        let Component::Normal(part) = c else {
            continue;
        };
        cur.push(part);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ImagedError::BadLayer(format!(
                    "layer path {} goes through a non-directory",
                    cur.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(&cur)
                .map_err(|e| ImagedError::io(format!("creating {}", cur.display()), e))?,
            Err(e) => return Err(ImagedError::io(format!("inspecting {}", cur.display()), e)),
        }
    }
    Ok(cur)
}

/// An overlayfs whiteout: a 0/0 character device hides the name in lower layers.
fn whiteout(path: &Path) -> Result<(), ImagedError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path)
            .map_err(|e| ImagedError::io(format!("removing {}", path.display()), e))?,
        Ok(_) => std::fs::remove_file(path)
            .map_err(|e| ImagedError::io(format!("removing {}", path.display()), e))?,
        Err(_) => {}
    }
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        nix::sys::stat::makedev(0, 0),
    )
    .map_err(|e| ImagedError::io(format!("creating whiteout {}", path.display()), e.into()))
}

/// The chain IDs of a stack of diff IDs (bottom first), as the OCI image spec defines
/// them: `chain(0) = diff(0)`, `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// The fuzz target's property on stable: seeded mutations of a valid layer (names,
    /// types, sizes, link targets all get hit) may fail to unpack but never panic or
    /// write beside the destination. `cargo +nightly fuzz run unpack` (imaged/fuzz)
    /// searches the same property with coverage guidance.
    #[test]
    fn mutated_layers_never_escape() {
        use rand::{Rng, SeedableRng};
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in [
            ("dir/", tar::EntryType::Directory, &b""[..], ""),
            ("dir/file", tar::EntryType::Regular, &b"content"[..], ""),
            ("dir/link", tar::EntryType::Symlink, &b""[..], "../dir/file"),
            ("dir/hard", tar::EntryType::Link, &b""[..], "dir/file"),
            ("dir/.wh.gone", tar::EntryType::Regular, &b""[..], ""),
        ] {
            let mut h = header(path, kind, data.len() as u64, 0o644);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        let valid = b.into_inner().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0062_6572_7468);
        for round in 0..300 {
            let mut data = valid.clone();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..data.len());
                data[at] = match rng.random_range(0..4) {
                    0 => b'/',
                    1 => b'.',
                    2 => rng.random(),
                    _ => 0,
                };
            }
            let root = tempfile::tempdir().unwrap();
            let dest = root.path().join("layer");
            let _ = unpack_tar(&data[..], &dest);
            let beside: Vec<_> = std::fs::read_dir(root.path())
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .filter(|n| n != "layer")
                .collect();
            assert!(
                beside.is_empty(),
                "round {round} wrote beside the layer: {beside:?}"
            );
        }
    }

    fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        // Write the name bytes directly: set_path refuses `..` and absolute paths, and
        // these tests need exactly such hostile names.
        let name = path.as_bytes();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        h
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = header(path, *kind, data.len() as u64, 0o755);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
                h.set_cksum();
            }
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn parent_dir_entry_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let tar = tar_of(&[("../escape", tar::EntryType::Regular, b"x", None)]);
        let err = unpack_tar(&tar[..], &root).unwrap_err();
        assert!(err.to_string().contains("escapes"), "{err}");
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn absolute_path_lands_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let tar = tar_of(&[
            ("/etc/", tar::EntryType::Directory, b"", None),
            ("/etc/x", tar::EntryType::Regular, b"hello", None),
        ]);
        let out = unpack_tar(&tar[..], &root).unwrap();
        assert_eq!(std::fs::read(root.join("etc/x")).unwrap(), b"hello");
        assert_eq!(out.size, 5);
    }

    #[test]
    fn symlink_parent_escape_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let target = outside.to_str().unwrap().to_string();
        let tar = tar_of(&[
            ("evil", tar::EntryType::Symlink, b"", Some(&target)),
            ("evil/x", tar::EntryType::Regular, b"pwned", None),
        ]);
        assert!(unpack_tar(&tar[..], &root).is_err());
        assert!(!outside.join("x").exists());

        // The classic form: a link to / followed by a path through it.
        let root2 = dir.path().join("root2");
        let tar = tar_of(&[
            ("evil", tar::EntryType::Symlink, b"", Some("/")),
            (
                "evil/tmp/berth-imaged-escape-test",
                tar::EntryType::Regular,
                b"x",
                None,
            ),
        ]);
        assert!(unpack_tar(&tar[..], &root2).is_err());
        assert!(!Path::new("/tmp/berth-imaged-escape-test").exists());

        // A whiteout through the symlink must not touch the outside either.
        let root3 = dir.path().join("root3");
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let tar = tar_of(&[
            ("evil", tar::EntryType::Symlink, b"", Some(&target)),
            ("evil/.wh.keep", tar::EntryType::Regular, b"", None),
        ]);
        assert!(unpack_tar(&tar[..], &root3).is_err());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"k");
    }

    #[test]
    fn whiteouts_of_the_directory_or_its_parent_are_refused() {
        for bad in ["etc/.wh..", "etc/.wh...", ".wh..", ".wh."] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            let tar = tar_of(&[
                ("etc/", tar::EntryType::Directory, b"", None),
                ("etc/keep", tar::EntryType::Regular, b"k", None),
                (bad, tar::EntryType::Regular, b"", None),
            ]);
            let err = unpack_tar(&tar[..], &root).unwrap_err();
            assert!(
                err.to_string().contains("invalid whiteout name"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn whiteouts_become_overlay_objects() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let tar = tar_of(&[
            ("etc/", tar::EntryType::Directory, b"", None),
            ("etc/.wh.passwd", tar::EntryType::Regular, b"", None),
            ("opt/.wh..wh..opq", tar::EntryType::Regular, b"", None),
            ("opt/new", tar::EntryType::Regular, b"n", None),
        ]);
        unpack_tar(&tar[..], &root).unwrap();
        let m = std::fs::symlink_metadata(root.join("etc/passwd")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        assert!(!root.join("etc/.wh.passwd").exists());
        let opq = xattr::get(root.join("opt"), "trusted.overlay.opaque").unwrap();
        assert_eq!(opq.as_deref(), Some(&b"y"[..]));
        assert!(!root.join("opt/.wh..wh..opq").exists());
        assert!(root.join("opt/new").exists());
    }

    #[test]
    fn a_layer_unpacks_from_chunks_as_they_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 300_000];
        let tar = tar_of(&[
            ("d", tar::EntryType::Directory, b"", None),
            ("d/big", tar::EntryType::Regular, &big, None),
            ("link", tar::EntryType::Symlink, b"", Some("d/big")),
        ]);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let blob = gz.finish().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let dest = dir.path().join("r");
        let source = chunk_reader(rx, rt.handle().clone());
        let unpacking = std::thread::spawn(move || unpack_layer_from(source, "", &dest));
        // Odd-sized chunks, the first shorter than the magic bytes.
        rt.block_on(async {
            let mut rest = &blob[..];
            let mut size = 3;
            while !rest.is_empty() {
                let n = size.min(rest.len());
                tx.send(bytes::Bytes::copy_from_slice(&rest[..n]))
                    .await
                    .unwrap();
                rest = &rest[n..];
                size = 4093;
            }
        });
        drop(tx);
        let out = unpacking.join().unwrap().unwrap();
        assert_eq!(out.diff_id, expected);
        assert_eq!(std::fs::read(dir.path().join("r/d/big")).unwrap(), big);
        assert_eq!(
            std::fs::read_link(dir.path().join("r/link")).unwrap(),
            Path::new("d/big")
        );

        // A stream cut short is an error, not a half layer passed as whole.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let dest = dir.path().join("cut");
        let source = chunk_reader(rx, rt.handle().clone());
        let unpacking = std::thread::spawn(move || unpack_layer_from(source, "", &dest));
        rt.block_on(async {
            tx.send(bytes::Bytes::copy_from_slice(&blob[..blob.len() / 2]))
                .await
                .unwrap();
        });
        drop(tx);
        assert!(unpacking.join().unwrap().is_err());
    }

    #[test]
    fn diff_id_is_sha256_of_uncompressed_tar_and_gzip_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("a", tar::EntryType::Regular, b"abc", None)]);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, gz.finish().unwrap()).unwrap();
        let out = unpack_layer(
            &blob,
            "application/vnd.oci.image.layer.v1.tar",
            &dir.path().join("r"),
        )
        .unwrap();
        assert_eq!(out.diff_id, expected);

        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        std::fs::write(&blob, zst).unwrap();
        let out = unpack_layer(&blob, "", &dir.path().join("z")).unwrap();
        assert_eq!(out.diff_id, expected);
        assert_eq!(std::fs::read(dir.path().join("z/a")).unwrap(), b"abc");

        assert_eq!(
            detect("application/vnd.docker.image.rootfs.diff.tar.gzip", b""),
            Compression::Gzip
        );
        assert_eq!(detect("x", b"ustar"), Compression::None);
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let expect = format!("sha256:{}", hex::encode(Sha256::digest(format!("{a} {b}"))));
        assert_eq!(ids[1], expect);
        assert!(chain_ids(&[]).is_empty());
    }
}
