//! Disk usage as Docker measures it (`docker system df`, prune's reclaimed space).

use std::collections::HashSet;
use std::path::Path;

/// Docker's `directory.Size`: the bytes of every file below `dir`, hard links once.
pub fn dir_size(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for ent in rd {
            let ent = ent?;
            let md = std::fs::symlink_metadata(ent.path())?;
            if md.is_dir() {
                stack.push(ent.path());
            } else if seen.insert((md.dev(), md.ino())) {
                total += md.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_once_and_missing_as_zero() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("a"), vec![0u8; 1000]).unwrap();
        std::fs::write(d.path().join("sub/b"), vec![0u8; 24]).unwrap();
        std::fs::hard_link(d.path().join("a"), d.path().join("sub/a2")).unwrap();
        std::os::unix::fs::symlink("a", d.path().join("link")).unwrap();
        // The symlink counts its own length (1), the hard link nothing more.
        assert_eq!(dir_size(d.path()).unwrap(), 1025);
        assert_eq!(dir_size(&d.path().join("missing")).unwrap(), 0);
    }
}
