//! A stand-in upstream resolver on a loopback address: the only place a test's embedded
//! DNS may forward to (the host's configured resolver is off this machine).

use anyhow::{Context, Result};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

/// Answers every query with one A record; stops when dropped (the socket closes with
/// the thread's next timeout).
pub struct FakeResolver {
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FakeResolver {
    /// Serves UDP on `addr` (e.g. `127.0.0.77:53`), answering `answer` to everything.
    pub fn start(addr: SocketAddr, answer: Ipv4Addr) -> Result<Self> {
        let sock = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
        sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                // Same id and question; QR, RD, RA; one answer: a pointer to the
                // question's name, type A, class IN, TTL 60, the address.
                let mut out = buf[..n].to_vec();
                out[2] = 0x81;
                out[3] = 0x80;
                out[6] = 0;
                out[7] = 1;
                out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                out.extend_from_slice(&answer.octets());
                let _ = sock.send_to(&out, from);
            }
        });
        Ok(Self { addr, stop })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FakeResolver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
