//! Command-line flags.

use std::path::PathBuf;

/// `berth-shim run ...` is what berth-containerd executes; it detaches and re-executes
/// itself as `berth-shim daemon ...` (same flags), the long-lived process.
#[derive(Debug, clap::Parser)]
#[command(name = "berth-shim", about = "Berth per-container shim")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The two stages of starting a shim.
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Detach (new session, reparent to pid 1) and start the container.
    Run(RunArgs),
    /// The detached shim itself (started by `run`; not for direct use).
    #[command(hide = true)]
    Daemon(RunArgs),
}

/// Flags shared by `run` and `daemon`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Container id (64 hex).
    #[arg(long)]
    pub id: String,
    /// OCI bundle dir holding config.json.
    #[arg(long)]
    pub bundle: PathBuf,
    /// libcontainer state root (the container's state lives in `<state-root>/<id>`).
    #[arg(long)]
    pub state_root: PathBuf,
    /// The shim's own dir: shim.sock, exit, shim.log.
    #[arg(long)]
    pub shim_dir: PathBuf,
    /// logd's gRPC socket.
    #[arg(long)]
    pub logd_socket: PathBuf,
    /// Log driver passed to logd's Open.
    #[arg(long, default_value = "json-file")]
    pub log_driver: String,
    /// Give the container a stdin pipe (held open by the shim) instead of /dev/null.
    #[arg(long)]
    pub open_stdin: bool,
    /// Run the init on a pseudo-terminal (Docker's `-t`).
    #[arg(long)]
    pub tty: bool,
    /// Initial terminal rows (0: the kernel's default).
    #[arg(long, default_value_t = 0)]
    pub console_height: u16,
    /// Initial terminal columns.
    #[arg(long, default_value_t = 0)]
    pub console_width: u16,
    /// Debug logging.
    #[arg(short = 'D', long)]
    pub debug: bool,
}
