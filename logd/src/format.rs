//! Docker's json-file on-disk format, and reading it by byte ranges (tail seek, follow).
//!
//! One JSON object per line: `{"log":"hello\n","stream":"stdout","time":"…Z"}`. `log` is
//! the output line including its trailing newline; a partial line (Docker splits lines
//! longer than 16 KiB) has no trailing newline.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// `LogEntry.stream` for stdout.
pub const STDOUT: i32 = 1;
/// `LogEntry.stream` for stderr.
pub const STDERR: i32 = 2;

/// Bytes scanned per step when seeking backwards for `tail`.
const TAIL_CHUNK: usize = 64 * 1024;

#[derive(Serialize)]
struct JsonLineOut<'a> {
    log: &'a str,
    stream: &'a str,
    time: &'a str,
}

/// `stream` and `time` never need unescaping in a file we wrote, so they borrow from the
/// line (one allocation per line: the output itself).
#[derive(Deserialize)]
struct JsonLineIn<'a> {
    log: String,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// One decoded line of a json-file log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The output bytes (with the trailing newline unless partial).
    pub line: Vec<u8>,
    /// [`STDOUT`] or [`STDERR`].
    pub stream: i32,
    /// Unix time in nanoseconds.
    pub time_unix_nano: i64,
    /// The line has no trailing newline.
    pub partial: bool,
}

/// A line of the log file could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not a JSON log object.
    #[error("invalid json log line: {0}")]
    Json(#[from] serde_json::Error),
    /// `time` is not RFC 3339 (or out of range for nanoseconds).
    #[error("invalid time {0:?} in log line")]
    Time(String),
}

/// Formats unix nanoseconds as Go's `time.RFC3339Nano` in UTC, as Docker writes it:
/// trailing zeros of the fraction are trimmed (and a zero fraction is left out).
pub fn format_time(unix_nano: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp_nanos(unix_nano);
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Parses an RFC 3339 time into unix nanoseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    parse_utc_time(s).or_else(|| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
    })
}

/// The fast path for the times [`format_time`] writes (`YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`),
/// read once per line of every `docker logs`; anything else goes to chrono's parser.
fn parse_utc_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[b.len() - 1] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', frac @ ..] if (1..=9).contains(&frac.len()) => {
            num(20..b.len() - 1)? * 10u32.pow(9 - frac.len() as u32)
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    date.and_hms_nano_opt(num(11..13)?, num(14..16)?, num(17..19)?, nanos)?
        .and_utc()
        .timestamp_nanos_opt()
}

/// Encodes one log line as a json-file record, newline-terminated.
pub fn encode(line: &[u8], stream: i32, unix_nano: i64) -> Vec<u8> {
    // Docker's JSON encoder replaces invalid UTF-8 with U+FFFD too.
    let log = String::from_utf8_lossy(line);
    let time = format_time(unix_nano);
    let rec = JsonLineOut {
        log: &log,
        stream: if stream == STDERR { "stderr" } else { "stdout" },
        time: &time,
    };
    let mut out = Vec::with_capacity(log.len() + 64);
    // Serialising a struct of strings into a Vec cannot fail; fall back to an empty
    // object rather than panic if serde ever says otherwise.
    if serde_json::to_writer(&mut out, &rec).is_err() {
        out.clear();
        out.extend_from_slice(b"{}");
    }
    out.push(b'\n');
    out
}

/// Decodes one json-file record (without its newline).
pub fn decode(raw: &[u8]) -> Result<LogLine, FormatError> {
    let rec: JsonLineIn = serde_json::from_slice(raw)?;
    let time_unix_nano =
        parse_time(&rec.time).ok_or_else(|| FormatError::Time(rec.time.to_string()))?;
    let partial = !rec.log.ends_with('\n');
    Ok(LogLine {
        line: rec.log.into_bytes(),
        stream: if rec.stream == "stderr" {
            STDERR
        } else {
            STDOUT
        },
        time_unix_nano,
        partial,
    })
}

/// The offset where the last `n` lines of `file[..end]` start, found by scanning
/// backwards from `end` in chunks (never reading the whole file). `end` must be a line
/// boundary.
pub fn tail_offset(file: &File, end: u64, n: u64) -> io::Result<u64> {
    if n == 0 || end == 0 {
        return Ok(end);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, end - 1)?;
    // The newline ending the last line does not start another line.
    let mut pos = if last[0] == b'\n' { end - 1 } else { end };
    let mut seen = 0u64;
    let mut buf = vec![0u8; TAIL_CHUNK];
    while pos > 0 {
        let len = usize::try_from(pos.min(TAIL_CHUNK as u64)).unwrap_or(TAIL_CHUNK);
        let start = pos - len as u64;
        let chunk = &mut buf[..len];
        file.read_exact_at(chunk, start)?;
        for i in (0..len).rev() {
            if chunk[i] == b'\n' {
                seen += 1;
                if seen == n {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        pos = start;
    }
    Ok(0)
}

/// Reads whole lines of `file[start..end]`, about `max_bytes` at a time (more if a single
/// line is longer). Returns the decoded lines (undecodable ones are logged and skipped)
/// and the offset after the last whole line read.
pub fn read_lines(
    file: &File,
    start: u64,
    end: u64,
    max_bytes: usize,
) -> io::Result<(Vec<LogLine>, u64)> {
    if start >= end {
        return Ok((Vec::new(), start));
    }
    let avail = end - start;
    let mut want = max_bytes.max(1) as u64;
    loop {
        let len = usize::try_from(want.min(avail))
            .map_err(|_| io::Error::other("log chunk too large for memory"))?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, start)?;
        match memchr::memrchr(b'\n', &buf) {
            Some(last_nl) => {
                let mut lines = Vec::with_capacity(last_nl / 64);
                let mut from = 0;
                for nl in memchr::memchr_iter(b'\n', &buf[..=last_nl]) {
                    let raw = &buf[from..nl];
                    from = nl + 1;
                    if raw.is_empty() {
                        continue;
                    }
                    match decode(raw) {
                        Ok(l) => lines.push(l),
                        Err(e) => tracing::warn!("skipping log line: {e}"),
                    }
                }
                return Ok((lines, start + last_nl as u64 + 1));
            }
            // A committed range always ends on a newline; garbage without one is skipped.
            None if want >= avail => return Ok((Vec::new(), end)),
            None => want = want.saturating_mul(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn encodes_docker_json_file_lines() {
        let out = encode(b"hello \"x\"\n", STDOUT, 1_704_067_200_123_456_789);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"log\":\"hello \\\"x\\\"\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-01T00:00:00.123456789Z\"}\n"
        );
        let err = encode(b"oops", STDERR, 1_704_067_200_000_000_000);
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "{\"log\":\"oops\",\"stream\":\"stderr\",\"time\":\"2024-01-01T00:00:00Z\"}\n"
        );
    }

    #[test]
    fn time_trims_trailing_zeros_like_go() {
        assert_eq!(format_time(1_500_000_000), "1970-01-01T00:00:01.5Z");
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        // The fast path agrees with chrono's parser on what format_time writes.
        for t in [
            0i64,
            1,
            999_999_999,
            1_704_067_200_123_456_789,
            1_764_400_000_100_000_000,
        ] {
            let s = format_time(t);
            assert_eq!(parse_utc_time(&s), Some(t), "{s}");
        }
        for bad in [
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.1234567890Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:0xZ",
        ] {
            assert_eq!(parse_utc_time(bad), None, "{bad}");
        }
        assert_eq!(
            parse_time("2024-01-01T01:00:00.000000001+01:00"),
            Some(1_704_067_200_000_000_001)
        );
    }

    #[test]
    fn decode_roundtrips_and_flags_partial() {
        let raw = encode(b"abc\n", STDERR, 42);
        let l = decode(&raw[..raw.len() - 1]).unwrap();
        assert_eq!(
            l,
            LogLine {
                line: b"abc\n".to_vec(),
                stream: STDERR,
                time_unix_nano: 42,
                partial: false
            }
        );
        let raw = encode(b"part", STDOUT, 7);
        let l = decode(&raw[..raw.len() - 1]).unwrap();
        assert!(l.partial);
        assert!(decode(b"not json").is_err());
        assert!(decode(br#"{"log":"x","stream":"stdout","time":"yesterday"}"#).is_err());
    }

    fn file_with(lines: usize) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for i in 0..lines {
            f.write_all(&encode(format!("line {i}\n").as_bytes(), STDOUT, i as i64))
                .unwrap();
        }
        f.flush().unwrap();
        let len = f.as_file().metadata().unwrap().len();
        (f, len)
    }

    #[test]
    fn tail_seeks_from_the_end_across_chunks() {
        // ~70 bytes a line: 5000 lines span several 64 KiB chunks.
        let (f, len) = file_with(5000);
        let file = f.as_file();
        assert_eq!(tail_offset(file, len, 0).unwrap(), len);
        for n in [1u64, 10, 999, 4999] {
            let off = tail_offset(file, len, n).unwrap();
            let (lines, next) = read_lines(file, off, len, 1 << 30).unwrap();
            assert_eq!(next, len);
            assert_eq!(lines.len() as u64, n);
            assert_eq!(
                lines[0].line,
                format!("line {}\n", 5000 - n).into_bytes(),
                "tail {n}"
            );
        }
        assert_eq!(tail_offset(file, len, 5000).unwrap(), 0);
        assert_eq!(tail_offset(file, len, 100_000).unwrap(), 0);
    }

    #[test]
    fn read_lines_returns_whole_lines_only() {
        let (f, len) = file_with(100);
        let file = f.as_file();
        let mut off = 0;
        let mut all = Vec::new();
        while off < len {
            // A budget smaller than one line still makes progress.
            let (lines, next) = read_lines(file, off, len, 10).unwrap();
            assert!(next > off);
            off = next;
            all.extend(lines);
        }
        assert_eq!(all.len(), 100);
        assert_eq!(all[99].line, b"line 99\n");
        assert_eq!(read_lines(file, len, len, 10).unwrap().0.len(), 0);
    }
}
