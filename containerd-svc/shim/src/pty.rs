//! Pseudo-terminals: receiving the master libcontainer sends over the console socket,
//! window sizes, and async reads and writes on the master.
//!
//! With `process.terminal`, libcontainer opens the pty inside the container (its own
//! devpts, so `tty` names a device the container has), makes the slave the process's
//! controlling terminal and stdio, and sends the master to the console socket the caller
//! listens on. The shim keeps the master for the process's life: closing it would hang
//! up the terminal (SIGHUP to the session).

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long the runtime may take to send the master once it connected.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads one message from a console-socket connection and returns the fd it carries.
pub fn recv_master(conn: &UnixStream) -> io::Result<OwnedFd> {
    conn.set_read_timeout(Some(RECV_TIMEOUT))?;
    recv_fd(conn.as_raw_fd())
}

/// [`recv_master`] on the runtime (the caller bounds the wait).
pub async fn recv_master_async(conn: &tokio::net::UnixStream) -> io::Result<OwnedFd> {
    loop {
        conn.readable().await?;
        match conn.try_io(tokio::io::Interest::READABLE, || recv_fd(conn.as_raw_fd())) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

#[allow(unsafe_code)]
fn recv_fd(conn: std::os::fd::RawFd) -> io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut name = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(conn, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // Close any extra descriptor a confused sender attached.
            for &extra in &fds[1..] {
                // SAFETY: received with SCM_RIGHTS, so this process owns it.
                drop(unsafe { OwnedFd::from_raw_fd(extra) });
            }
            // SAFETY: as above.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the runtime closed the console socket without sending the terminal",
    ))
}

/// Sets the terminal's window size (rows, columns); the kernel sends SIGWINCH to the
/// foreground process group when it changes.
pub fn set_size(master: &impl AsFd, height: u16, width: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the fd is borrowed.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::ioctl(master.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pty master driven by tokio; clones share the descriptor.
#[derive(Clone)]
pub struct Master(Arc<AsyncFd<OwnedFd>>);

impl Master {
    /// Takes the master over (made non-blocking). Needs a tokio runtime.
    #[allow(unsafe_code)]
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: an OwnedFd is open and names the same description until it is dropped,
        // which happens only with the AsyncFd.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Self(Arc::new(fd)))
    }

    /// See [`set_size`].
    pub fn resize(&self, height: u16, width: u16) -> io::Result<()> {
        set_size(self.0.get_ref(), height, width)
    }
}

impl AsyncRead for Master {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(Into::into)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // EIO: every slave descriptor is closed (the processes exited): the end.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Master {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(Into::into)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `master` as libcontainer does: one message carrying the descriptor.
    fn send_master(sock: std::os::fd::RawFd, master: &OwnedFd) {
        let fds = [master.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"/dev/ptmx")];
        nix::sys::socket::sendmsg::<()>(
            sock,
            &iov,
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .expect("sendmsg");
    }

    #[test]
    fn the_master_travels_over_a_unix_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        send_master(a.as_raw_fd(), &pty.master);
        let got = recv_master(&b).unwrap();
        set_size(&got, 33, 101).unwrap();
        let ws = nix::pty::Winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let mut ws = ws;
        // SAFETY: TIOCGWINSZ writes one winsize.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (33, 101));
        // A sender that closes without a descriptor is an error, not a hang.
        drop(a);
        assert!(recv_master(&b).is_err());
    }

    #[test]
    fn the_master_is_received_on_the_runtime_without_a_thread() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, b) = tokio::net::UnixStream::pair().unwrap();
            let pty = nix::pty::openpty(None, None).unwrap();
            let receive = tokio::spawn(async move { recv_master_async(&b).await });
            // The receiver waits for readiness first: the descriptor comes later.
            tokio::time::sleep(Duration::from_millis(50)).await;
            send_master(a.as_raw_fd(), &pty.master);
            let got = receive.await.unwrap().unwrap();
            set_size(&got, 20, 70).unwrap();
            let (b2, a2) = tokio::net::UnixStream::pair().unwrap();
            drop(a2);
            assert!(recv_master_async(&b2).await.is_err());
        });
    }

    #[tokio::test]
    async fn reads_and_writes_go_through_the_line_discipline() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut master = Master::new(pty.master).unwrap();
        master.write_all(b"hi\n").await.unwrap();
        // Echo is on: the master reads back what was typed.
        let mut buf = [0u8; 16];
        let n = master.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"hi"));
        // Once the slave is closed, the read ends (EIO) instead of failing.
        drop(pty.slave);
        let mut rest = Vec::new();
        master.read_to_end(&mut rest).await.unwrap();
    }
}
