//! `docker export`: the container's filesystem (its merged overlay, so no volume or bind
//! mount of the running container) as one tar stream, written in chunks as it is read.

use bytes::Bytes;
use std::io::{self, Write};
use std::path::Path;
use tokio::sync::mpsc;

/// Bytes per message of the stream.
const CHUNK: usize = 256 * 1024;

/// A `Write` that hands full chunks to a channel (from a blocking thread).
struct ChunkSink {
    buf: Vec<u8>,
    tx: mpsc::Sender<Result<Bytes, String>>,
}

impl ChunkSink {
    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_chunk()
    }
}

/// Writes `root` as a tar (paths relative to it, links kept as links, owners, modes and
/// times preserved) into `tx`; an error ends the stream with its message.
pub fn export_tree(root: &Path, tx: mpsc::Sender<Result<Bytes, String>>) {
    let sink = ChunkSink {
        buf: Vec::with_capacity(CHUNK),
        tx: tx.clone(),
    };
    let mut tar = tar::Builder::new(sink);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    let result = tar
        .append_dir_all("", root)
        .and_then(|()| tar.into_inner())
        .and_then(|mut sink| sink.flush());
    if let Err(e) = result
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        let _ = tx.blocking_send(Err(format!("exporting {}: {e}", root.display())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_a_tar_with_links() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/data"), vec![7u8; 600_000]).unwrap();
        std::os::unix::fs::symlink("/etc/data", t.path().join("link")).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let root = t.path().to_path_buf();
        let writer = std::thread::spawn(move || export_tree(&root, tx));
        let mut all = Vec::new();
        let mut chunks = 0;
        while let Some(c) = rx.blocking_recv() {
            all.extend_from_slice(&c.unwrap());
            chunks += 1;
        }
        writer.join().unwrap();
        assert!(chunks >= 3, "{chunks}");
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(all.as_slice());
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            if path == "link" {
                assert_eq!(
                    e.link_name().unwrap().unwrap().display().to_string(),
                    "/etc/data"
                );
            }
            names.push(path);
        }
        assert!(names.iter().any(|n| n.ends_with("etc/data")), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with("link")), "{names:?}");
    }
}
