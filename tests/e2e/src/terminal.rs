//! Running a command (the docker CLI) on a pseudo-terminal, as a person at a terminal
//! would: the test types into the master, reads what the screen shows, and resizes the
//! window (the kernel sends SIGWINCH to the command).

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command whose stdin, stdout and stderr are the slave side of a new pty, in its own
/// session with the pty as controlling terminal.
pub struct Terminal {
    master: std::fs::File,
    screen: Arc<Mutex<Vec<u8>>>,
    /// Where the next `expect` starts looking.
    seen: usize,
    child: Child,
}

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Terminal {
    /// Spawns `cmd` on a `rows` x `cols` terminal.
    #[allow(unsafe_code)]
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> Result<Self> {
        let pty = nix::pty::openpty(Some(&winsize(rows, cols)), None).context("openpty")?;
        let slave: OwnedFd = pty.slave;
        let stdio = |fd: &OwnedFd| -> Result<Stdio> { Ok(Stdio::from(fd.try_clone()?)) };
        cmd.stdin(stdio(&slave)?)
            .stdout(stdio(&slave)?)
            .stderr(stdio(&slave)?);
        // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("spawning on the terminal")?;
        drop(slave);
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone()?;
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the command and its children closed the slave.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Ok(Self {
            master,
            screen,
            seen: 0,
            child,
        })
    }

    fn lock_screen(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.screen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Types `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.master.write_all(bytes)?;
        Ok(())
    }

    /// Everything the terminal showed so far, as text.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.lock_screen()).into_owned()
    }

    /// Waits until `needle` shows up after what earlier calls matched; returns the text
    /// up to and including it.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = {
                let screen = self.lock_screen();
                let text = String::from_utf8_lossy(&screen[self.seen.min(screen.len())..]);
                text.find(needle)
                    .map(|at| text[..at + needle.len()].to_string())
            };
            if let Some(upto) = found {
                self.seen += upto.len();
                return Ok(upto);
            }
            if Instant::now() > deadline {
                bail!(
                    "{needle:?} did not show within {timeout:?}; the terminal shows:\n{}",
                    self.screen()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Changes the window size (the kernel signals SIGWINCH to the command).
    #[allow(unsafe_code)]
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
        if unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Waits for the command to exit; its exit code (killed after `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> Result<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "the command did not exit within {timeout:?}; the terminal shows:\n{}",
                    self.screen()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
