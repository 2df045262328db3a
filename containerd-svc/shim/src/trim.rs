//! Giving back the memory an idle shim no longer uses.
//!
//! Creating the container runs a lot of code once (libcontainer, spec parsing, seccomp)
//! and the pages of that code stay mapped in the shim for as long as the container runs:
//! about 8 MB of the binary and libc on an idle shim, against about 1 MB of its own data.
//! Those pages are clean copies of the files on disk, so dropping them from the shim's
//! page tables loses nothing: the next use faults them back in from the page cache. A
//! shim lives as long as its container, and there is one per container, so this is done
//! once the container runs and again now and then (what a burst of exec or attach
//! touched).
//!
//! Only private mappings of a file that are not writable and hold no page of their own
//! (smaps' `Anonymous: 0`) are dropped: their content is the file's. Relocated data
//! (RELRO), heap, stacks and everything writable are left alone.

use std::time::Duration;

/// How often an idle shim sheds again what it touched since.
pub const EVERY: Duration = Duration::from_secs(10);

/// One mapping of `/proc/self/smaps`, as far as trimming cares.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    /// Private, not writable, backed by a file (a path).
    clean_file_copy: bool,
    rss_kib: u64,
    anonymous_kib: u64,
}

impl Mapping {
    fn droppable(&self) -> bool {
        self.clean_file_copy && self.anonymous_kib == 0 && self.rss_kib > 0
    }
}

/// Parses smaps text into mappings.
fn mappings(smaps: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let p = perms.as_bytes();
            out.push(Mapping {
                start,
                end,
                clean_file_copy: p.len() == 4
                    && p[1] == b'-'
                    && p[3] == b'p'
                    && path.starts_with('/'),
                rss_kib: 0,
                // Unknown until read: assume the worst.
                anonymous_kib: u64::MAX,
            });
            continue;
        }
        let kib = || fields.clone().next().and_then(|v| v.parse::<u64>().ok());
        if let Some(m) = out.last_mut() {
            match first {
                "Rss:" => m.rss_kib = kib().unwrap_or(0),
                "Anonymous:" => m.anonymous_kib = kib().unwrap_or(u64::MAX),
                _ => {}
            }
        }
    }
    out
}

/// Returns freed heap to the system and drops clean file pages from this process's page
/// tables; the KiB of resident file pages dropped.
#[allow(unsafe_code)]
pub fn trim() -> u64 {
    // SAFETY: malloc_trim only releases free memory of glibc's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut dropped = 0;
    for m in mappings(&smaps).into_iter().filter(Mapping::droppable) {
        // SAFETY: the range is a whole mapping that is private, read-only and holds no
        // page of its own: its content is the file's, which a later access faults back
        // in. Nothing in it is lost.
        let r = unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_DONTNEED,
            )
        };
        if r == 0 {
            dropped += m.rss_kib;
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 123   /usr/bin/berth-shim
Size:               1024 kB
Rss:                 800 kB
Anonymous:             0 kB
55d0c0100000-55d0c0800000 r-xp 00100000 fd:01 123   /usr/bin/berth-shim
Rss:                5000 kB
Anonymous:             0 kB
55d0c0800000-55d0c0900000 r--p 00800000 fd:01 123   /usr/bin/berth-shim
Rss:                 580 kB
Anonymous:           580 kB
55d0c0900000-55d0c0910000 rw-p 00900000 fd:01 123   /usr/bin/berth-shim
Rss:                  20 kB
Anonymous:             0 kB
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0     [heap]
Rss:                 400 kB
Anonymous:           400 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0     [vdso]
Rss:                   8 kB
Anonymous:             0 kB
7f0000000000-7f0000001000 r-xp 00000000 fd:01 9     /lib/x86_64-linux-gnu/libc.so.6
Rss:                   4 kB
";

    #[test]
    fn only_clean_read_only_file_copies_are_dropped() {
        let maps = mappings(SMAPS);
        assert_eq!(maps.len(), 7);
        let dropped: Vec<usize> = maps
            .iter()
            .filter(|m| m.droppable())
            .map(|m| m.start)
            .collect();
        // The read-only and code mappings of the binary; not the relocated (anonymous)
        // one, the writable one, the heap, the vdso, nor a mapping whose Anonymous line
        // is missing.
        assert_eq!(dropped, vec![0x55d0c0000000, 0x55d0c0100000]);
    }

    #[test]
    fn trimming_this_process_keeps_it_working() {
        let before = std::fs::read_to_string("/proc/self/status").unwrap();
        let dropped = trim();
        assert!(dropped > 0, "nothing dropped:\n{before}");
        // Code, read-only data and libc fault back in.
        let v: Vec<String> = (0..1000).map(|i| format!("{i}")).collect();
        assert_eq!(v[999], "999");
        assert!(mappings(&std::fs::read_to_string("/proc/self/smaps").unwrap()).len() > 3);
    }
}
