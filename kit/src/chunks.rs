//! A blocking `Write` whose bytes leave as gRPC stream messages: a tar written on a
//! blocking thread (`docker cp`, `docker save`) while the server streams the answer.

use std::io::{self, Write};
use tokio::sync::mpsc;

/// Sends what is written as messages of about `size` bytes (`wrap` makes one from bytes);
/// fails with BrokenPipe once the caller has gone. `flush` sends what is left.
pub struct ChunkSender<T> {
    tx: mpsc::Sender<Result<T, tonic::Status>>,
    buf: Vec<u8>,
    size: usize,
    wrap: fn(Vec<u8>) -> T,
}

impl<T> ChunkSender<T> {
    pub fn new(
        tx: mpsc::Sender<Result<T, tonic::Status>>,
        size: usize,
        wrap: fn(Vec<u8>) -> T,
    ) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(size),
            size,
            wrap,
        }
    }
}

impl<T> Write for ChunkSender<T> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.size {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let msg = (self.wrap)(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(msg))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the caller left"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_leave_in_chunks_and_a_gone_caller_is_an_error() {
        let (tx, mut rx) = mpsc::channel::<Result<Vec<u8>, tonic::Status>>(8);
        let mut w = ChunkSender::new(tx, 4, |b| b);
        w.write_all(b"abcdef").unwrap();
        w.flush().unwrap();
        assert_eq!(rx.try_recv().unwrap().unwrap(), b"abcdef".to_vec());
        drop(rx);
        w.write_all(b"x").unwrap();
        assert_eq!(w.flush().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
