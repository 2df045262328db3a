//! Splitting a byte stream into log lines.

/// Longest line sent as one entry; longer ones are cut into `partial` pieces (Docker's
/// json-file driver uses 16 KiB too).
pub const MAX_LINE: usize = 16 * 1024;

/// One piece of output: a whole line with its "\n", or a `partial` piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub bytes: Vec<u8>,
    pub partial: bool,
}

/// Accumulates bytes and yields complete lines.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
}

impl Splitter {
    /// Adds `data` and returns every complete (or over-long) piece now available.
    pub fn push(&mut self, data: &[u8]) -> Vec<Piece> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            let limit = self.buf.len().min(MAX_LINE);
            if let Some(pos) = self.buf[..limit].iter().position(|b| *b == b'\n') {
                let rest = self.buf.split_off(pos + 1);
                out.push(Piece {
                    bytes: std::mem::replace(&mut self.buf, rest),
                    partial: false,
                });
            } else if self.buf.len() >= MAX_LINE {
                let rest = self.buf.split_off(MAX_LINE);
                out.push(Piece {
                    bytes: std::mem::replace(&mut self.buf, rest),
                    partial: true,
                });
            } else {
                break;
            }
        }
        out
    }

    /// As [`Splitter::push`], then the unterminated rest at once as a partial piece: a
    /// terminal's prompt or echo has no newline and must reach an attached client now.
    pub fn push_flushing(&mut self, data: &[u8]) -> Vec<Piece> {
        let mut out = self.push(data);
        out.extend(self.finish());
        out
    }

    /// End of stream: the unterminated tail, if any, as a partial piece.
    pub fn finish(&mut self) -> Option<Piece> {
        if self.buf.is_empty() {
            None
        } else {
            Some(Piece {
                bytes: std::mem::take(&mut self.buf),
                partial: true,
            })
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_terminal_prompt_is_sent_without_waiting_for_its_newline() {
        let mut s = Splitter::default();
        let got = s.push_flushing(b"one\n/ # ");
        assert_eq!(
            got,
            vec![
                Piece {
                    bytes: b"one\n".to_vec(),
                    partial: false
                },
                Piece {
                    bytes: b"/ # ".to_vec(),
                    partial: true
                }
            ]
        );
        assert!(s.finish().is_none());
    }
    use super::*;

    #[test]
    fn splits_keeps_tail_and_caps_length() {
        let mut s = Splitter::default();
        assert!(s.push(b"hel").is_empty());
        let p = s.push(b"lo\nwor");
        assert_eq!(
            p,
            vec![Piece {
                bytes: b"hello\n".to_vec(),
                partial: false
            }]
        );
        let p = s.push(b"ld\n\nx");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].bytes, b"\n");
        assert_eq!(
            s.finish(),
            Some(Piece {
                bytes: b"x".to_vec(),
                partial: true
            })
        );
        assert_eq!(s.finish(), None);

        let long = vec![b'a'; MAX_LINE * 2 + 5];
        let mut p = s.push(&long);
        p.extend(s.push(b"\n"));
        assert_eq!(p.len(), 3);
        assert!(p[0].partial && p[1].partial && !p[2].partial);
        assert_eq!(p[0].bytes.len(), MAX_LINE);
        assert_eq!(p[2].bytes.len(), 6);
    }
}
