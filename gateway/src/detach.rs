//! Detach keys: the byte sequence in an attached client's input that ends the attachment
//! without touching the container (Docker's default `ctrl-p,ctrl-q`).

use crate::error::ApiError;

/// Docker's default sequence, ctrl-p then ctrl-q.
pub const DEFAULT_KEYS: &[u8] = &[16, 17];

/// Parses Docker's notation: comma-separated keys, each one character or `ctrl-<c>` with
/// `<c>` in `a-z @ [ \ ] ^ _`. An empty text means the default.
pub fn parse(text: &str) -> Result<Vec<u8>, ApiError> {
    if text.is_empty() {
        return Ok(DEFAULT_KEYS.to_vec());
    }
    let invalid = || ApiError::bad_request(format!("Invalid detach keys ({text}) provided"));
    text.split(',')
        .map(|key| {
            let lower = key.to_ascii_lowercase();
            if let Some(c) = lower.strip_prefix("ctrl-") {
                let c = match c.as_bytes() {
                    [c] => *c,
                    _ => return Err(invalid()),
                };
                match c {
                    b'a'..=b'z' => Ok(c - b'a' + 1),
                    b'@' => Ok(0),
                    b'[' => Ok(27),
                    b'\\' => Ok(28),
                    b']' => Ok(29),
                    b'^' => Ok(30),
                    b'_' => Ok(31),
                    _ => Err(invalid()),
                }
            } else {
                match key.as_bytes() {
                    [c] => Ok(*c),
                    _ => Err(invalid()),
                }
            }
        })
        .collect()
}

/// Watches input for the sequence. Bytes that may start it are held back until the next
/// byte decides, so a completed sequence never reaches the container.
#[derive(Debug, Clone)]
pub struct Detector {
    keys: Vec<u8>,
    matched: usize,
}

/// What a chunk of input turned into.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned {
    /// To pass on to the container.
    pub forward: Vec<u8>,
    /// The sequence was typed: stop here (anything after it is dropped).
    pub detached: bool,
}

impl Detector {
    pub fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    pub fn scan(&mut self, input: &[u8]) -> Scanned {
        let mut forward = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            forward.extend_from_slice(input);
            return Scanned {
                forward,
                detached: false,
            };
        }
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return Scanned {
                        forward,
                        detached: true,
                    };
                }
                continue;
            }
            // A broken prefix goes through as typed, then this byte starts over.
            forward.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    self.matched = 0;
                    return Scanned {
                        forward,
                        detached: true,
                    };
                }
            } else {
                forward.push(b);
            }
        }
        Scanned {
            forward,
            detached: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_notation() {
        assert_eq!(parse("").unwrap(), vec![16, 17]);
        assert_eq!(parse("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(
            parse("ctrl-a,x,ctrl-@,ctrl-_").unwrap(),
            vec![1, b'x', 0, 31]
        );
        assert_eq!(parse("CTRL-X").unwrap(), vec![24]);
        for bad in ["ctrl-", "ctrl-1", "ab", "ctrl-p,,ctrl-q"] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn the_sequence_detaches_and_is_not_forwarded() {
        let mut d = Detector::new(DEFAULT_KEYS.to_vec());
        assert_eq!(
            d.scan(b"ls\n\x10"),
            Scanned {
                forward: b"ls\n".to_vec(),
                detached: false
            }
        );
        // Split across reads.
        assert_eq!(
            d.scan(b"\x11after"),
            Scanned {
                forward: vec![],
                detached: true
            }
        );
    }

    #[test]
    fn a_broken_prefix_is_passed_on() {
        let mut d = Detector::new(DEFAULT_KEYS.to_vec());
        assert_eq!(d.scan(b"\x10a").forward, b"\x10a".to_vec());
        // ctrl-p ctrl-p ctrl-q: the first is typed, the next two detach.
        let s = d.scan(b"\x10\x10\x11");
        assert_eq!(s.forward, b"\x10".to_vec());
        assert!(s.detached);
        // No keys: everything goes through.
        let mut none = Detector::new(Vec::new());
        assert!(!none.scan(b"\x10\x11").detached);
    }
}
