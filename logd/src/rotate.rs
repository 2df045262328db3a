//! json-file rotation (`--log-opt max-size/max-file/compress`): the options, and the file
//! moves, written so that redoing an interrupted rotation gives the same result.
//!
//! Files: `<id>-json.log` (current), then `.1` (newest rotated) up to `.<max-file - 1>`,
//! each possibly gzipped (`.N.gz`).

use crate::error::LogError;
use crate::format::{self, LogLine};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// How a json-file log rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// 0 = never rotate.
    pub max_size: u64,
    /// Files kept including the current one (at least 1).
    pub max_file: u32,
    pub compress: bool,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_size: 0,
            max_file: 1,
            compress: false,
        }
    }
}

/// Options json-file accepts (Docker's list); only the rotation ones change anything here.
const KNOWN: &[&str] = &[
    "max-size",
    "max-file",
    "compress",
    "labels",
    "labels-regex",
    "env",
    "env-regex",
    "tag",
];

/// `10m` -> 10 MiB, as Docker's `RAMInBytes` (binary units, optional `b`/`ib`).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v >= 0.0).then_some((v * mult as f64) as u64)
}

impl Rotation {
    /// Validates the `--log-opt`s of the json-file or local driver as Docker does; local's
    /// defaults are Docker's: rotate at 20 MiB, keep 5 files, compress rotated ones.
    pub fn from_options(driver: &str, opts: &HashMap<String, String>) -> Result<Self, LogError> {
        let bad = |m: String| LogError::BadOption(m);
        let local = driver == "local";
        let known: &[&str] = if local { &KNOWN[..3] } else { KNOWN };
        if let Some(k) = opts.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown log opt '{k}' for {driver} log driver"
            )));
        }
        let mut r = if local {
            Self {
                max_size: 20 << 20,
                max_file: 5,
                compress: true,
            }
        } else {
            Self::default()
        };
        if let Some(s) = opts.get("max-size") {
            r.max_size = parse_size(s).ok_or_else(|| bad(format!("invalid size: '{s}'")))?;
        }
        if let Some(s) = opts.get("max-file") {
            r.max_file = s
                .parse::<u32>()
                .map_err(|_| bad(format!("invalid value for max-file: {s}")))?;
            if r.max_file < 1 {
                return Err(bad("max-file cannot be less than 1".into()));
            }
        }
        if let Some(s) = opts.get("compress") {
            r.compress = match s.as_str() {
                "true" | "1" => true,
                "false" | "0" | "" => false,
                _ => return Err(bad(format!("invalid value for compress: {s}"))),
            };
        }
        if r.compress && r.max_file < 2 {
            if opts.contains_key("compress") {
                return Err(bad(
                    "compress cannot be true when max-file is less than 2".into()
                ));
            }
            // local's default compression has nothing to compress with one file.
            r.compress = false;
        }
        Ok(r)
    }

    /// Rotated files kept besides the current one.
    pub fn keep(self) -> u32 {
        self.max_file.saturating_sub(1)
    }
}

fn slot(current: &Path, i: u32, gz: bool) -> PathBuf {
    let mut s = current.as_os_str().to_owned();
    s.push(format!(".{i}"));
    if gz {
        s.push(".gz");
    }
    PathBuf::from(s)
}

/// The existing file of slot `i` (plain or gzipped).
fn existing_slot(current: &Path, i: u32) -> Option<PathBuf> {
    [slot(current, i, true), slot(current, i, false)]
        .into_iter()
        .find(|p| p.exists())
}

fn sync_dir(current: &Path) -> io::Result<()> {
    File::open(current.parent().unwrap_or(Path::new("/")))?.sync_all()
}

/// Moves the current file to `.1` (shifting older ones, dropping what falls past `keep`)
/// and creates an empty current file, which it returns. With `keep == 0` the current
/// file is just emptied. Safe to run again after a crash part-way: the shift runs only
/// while `.1` still exists, and skips holes, so nothing moves twice.
pub fn rotate_files(current: &Path, keep: u32) -> io::Result<File> {
    if keep > 0 {
        if existing_slot(current, 1).is_some() {
            for i in (1..keep).rev() {
                if let Some(from) = existing_slot(current, i) {
                    let gz = from.extension().is_some_and(|e| e == "gz");
                    // The other variant of the target would shadow or duplicate it.
                    let _ = std::fs::remove_file(slot(current, i + 1, !gz));
                    std::fs::rename(&from, slot(current, i + 1, gz))?;
                }
            }
            // What was in the last slot is gone now unless it was just replaced.
            if keep == 1 {
                for gz in [true, false] {
                    let _ = std::fs::remove_file(slot(current, 1, gz));
                }
            }
        }
        if current.exists() {
            std::fs::rename(current, slot(current, 1, false))?;
        }
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(current)?;
    f.sync_all()?;
    sync_dir(current)?;
    Ok(f)
}

/// Gzips `.1` into `.1.gz` (through a temporary file, so `.1.gz` is whole or absent)
/// and removes `.1`.
pub fn compress_newest(current: &Path) -> io::Result<()> {
    let plain = slot(current, 1, false);
    if !plain.exists() {
        return Ok(());
    }
    let gz = slot(current, 1, true);
    let mut tmp = gz.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut input = File::open(&plain)?;
        let out = File::create(&tmp)?;
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        io::copy(&mut input, &mut enc)?;
        enc.finish()?.sync_all()?;
    }
    std::fs::rename(&tmp, &gz)?;
    std::fs::remove_file(&plain)?;
    sync_dir(current)
}

/// Start-up tidying: half-written `.gz.tmp` files go; a slot present both plain and
/// gzipped keeps the gzipped one (it was renamed into place whole).
pub fn tidy(current: &Path, keep: u32) {
    for i in 1..=keep.max(1) {
        let gz = slot(current, i, true);
        let mut tmp = gz.as_os_str().to_owned();
        tmp.push(".tmp");
        let _ = std::fs::remove_file(PathBuf::from(tmp));
        if gz.exists() {
            let _ = std::fs::remove_file(slot(current, i, false));
        }
    }
}

/// The rotated files, oldest first.
pub fn rotated_files(current: &Path, keep: u32) -> Vec<PathBuf> {
    (1..=keep)
        .rev()
        .filter_map(|i| existing_slot(current, i))
        .collect()
}

/// Every line of a rotated file (gzipped or not).
pub fn read_file_lines(path: &Path) -> io::Result<Vec<LogLine>> {
    let mut raw = Vec::new();
    let f = File::open(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(f).read_to_end(&mut raw)?;
    } else {
        let mut f = f;
        f.read_to_end(&mut raw)?;
    }
    let mut out = Vec::new();
    for line in raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match format::decode(line) {
            Ok(l) => out.push(l),
            Err(e) => tracing::warn!(path = %path.display(), "skipping log line: {e}"),
        }
    }
    Ok(out)
}

/// Total bytes of the current and rotated files (for tests and `docker system df`).
pub fn disk_usage(current: &Path, keep: u32) -> u64 {
    std::iter::once(current.to_path_buf())
        .chain(rotated_files(current, keep))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_validate_like_docker() {
        let r = Rotation::from_options(
            "json-file",
            &opts(&[("max-size", "10m"), ("max-file", "3"), ("compress", "true")]),
        )
        .unwrap();
        assert_eq!(
            r,
            Rotation {
                max_size: 10 << 20,
                max_file: 3,
                compress: true
            }
        );
        assert_eq!(r.keep(), 2);
        assert_eq!(parse_size("1k"), Some(1024));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("1.5KB"), Some(1536));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert!(parse_size("lots").is_none());
        let local = Rotation::from_options("local", &HashMap::new()).unwrap();
        assert_eq!(
            (local.max_size, local.max_file, local.compress),
            (20 << 20, 5, true)
        );
        let one = Rotation::from_options("local", &opts(&[("max-file", "1")])).unwrap();
        assert!(!one.compress);
        assert!(Rotation::from_options("local", &opts(&[("tag", "x")])).is_err());
        let e = Rotation::from_options("json-file", &opts(&[("bogus", "1")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown log opt 'bogus' for json-file log driver"
        );
        assert!(Rotation::from_options("json-file", &opts(&[("max-file", "0")])).is_err());
        assert!(Rotation::from_options("json-file", &opts(&[("max-size", "x")])).is_err());
        let e = Rotation::from_options("json-file", &opts(&[("compress", "true")])).unwrap_err();
        assert!(e.to_string().contains("compress cannot be true"), "{e}");
        assert_eq!(
            Rotation::from_options("json-file", &opts(&[("tag", "x")])).unwrap(),
            Rotation::default()
        );
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn content(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn rotation_shifts_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let cur = dir.path().join("c-json.log");
        for generation in ["a", "b", "c", "d"] {
            std::fs::write(&cur, generation).unwrap();
            rotate_files(&cur, 2).unwrap();
        }
        assert_eq!(
            names(dir.path()),
            ["c-json.log", "c-json.log.1", "c-json.log.2"]
        );
        assert_eq!(content(&cur), "");
        assert_eq!(content(&slot(&cur, 1, false)), "d");
        assert_eq!(content(&slot(&cur, 2, false)), "c");
        // keep 0: the current file is emptied in place.
        std::fs::write(&cur, "x").unwrap();
        rotate_files(&dir.path().join("other"), 0).unwrap();
        assert_eq!(content(&dir.path().join("other")), "");
    }

    #[test]
    fn an_interrupted_rotation_redone_moves_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let cur = dir.path().join("c-json.log");
        // keep 3, files .1=A .2=B .3=C; the shift got as far as .2 -> .3 (C dropped).
        std::fs::write(&cur, "CUR").unwrap();
        std::fs::write(slot(&cur, 1, false), "A").unwrap();
        std::fs::write(slot(&cur, 3, false), "B").unwrap();
        rotate_files(&cur, 3).unwrap();
        assert_eq!(content(&slot(&cur, 1, false)), "CUR");
        assert_eq!(content(&slot(&cur, 2, false)), "A");
        assert_eq!(content(&slot(&cur, 3, false)), "B");
        // The shift finished (.1 moved) but the current file was not renamed yet.
        let dir = tempfile::tempdir().unwrap();
        let cur = dir.path().join("c-json.log");
        std::fs::write(&cur, "CUR").unwrap();
        std::fs::write(slot(&cur, 2, false), "A").unwrap();
        std::fs::write(slot(&cur, 3, false), "B").unwrap();
        rotate_files(&cur, 3).unwrap();
        assert_eq!(content(&slot(&cur, 1, false)), "CUR");
        assert_eq!(content(&slot(&cur, 2, false)), "A");
        assert_eq!(content(&slot(&cur, 3, false)), "B");
    }

    #[test]
    fn compressed_slots_shift_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cur = dir.path().join("c-json.log");
        let line = |s: &str| format::encode(s.as_bytes(), 1, 1_700_000_000_000_000_000);
        for generation in ["one\n", "two\n", "three\n"] {
            std::fs::write(&cur, line(generation)).unwrap();
            rotate_files(&cur, 2).unwrap();
            compress_newest(&cur).unwrap();
        }
        assert_eq!(
            names(dir.path()),
            ["c-json.log", "c-json.log.1.gz", "c-json.log.2.gz"]
        );
        let files = rotated_files(&cur, 2);
        let text: Vec<String> = files
            .iter()
            .flat_map(|f| read_file_lines(f).unwrap())
            .map(|l| String::from_utf8_lossy(&l.line).into_owned())
            .collect();
        assert_eq!(text, ["two\n", "three\n"]);
        // A crash between writing .1.gz and removing .1 leaves both: the gz wins.
        std::fs::write(slot(&cur, 1, false), "stale").unwrap();
        tidy(&cur, 2);
        assert!(!slot(&cur, 1, false).exists());
    }
}
