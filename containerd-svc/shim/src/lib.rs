//! berth-shim: the per-container process that outlives berth-containerd.
//!
//! One shim runs per started container. It creates and starts the container with
//! libcontainer while still single-threaded, becomes the init's parent (subreaper), holds
//! its stdio, streams output lines to logd, records the exit status on disk and serves
//! `berth.shim.v1` on `<shim-dir>/shim.sock` until told to shut down. It stays
//! single-threaded (a current-thread runtime, no blocking pool) so that each `docker
//! exec` can fork it: the child starts the process with libcontainer as the shim's own
//! child (see [`exec`]); the shim streams its output and records its exit in
//! `<shim-dir>/exec-<id>`.

pub mod children;
pub mod cli;
pub mod daemon;
pub mod exec;
pub mod exitfile;
pub mod lines;
pub mod logfwd;
pub mod pty;
pub mod server;
pub mod sockpath;
pub mod trim;

/// Everything that can go wrong inside the shim.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::Error,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// libcontainer refused or failed; the text is the whole error chain.
    #[error("{0}")]
    Runtime(String),
}

/// Renders an error with all its sources, so the runtime's real reason (e.g. "executable
/// 'x' not found in $PATH") reaches the user instead of a generic top-level message.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = e.source();
    }
    text
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_unix_nano() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}
