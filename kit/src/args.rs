//! Flags every service binary takes (the launcher passes them through).

use crate::paths::{DEFAULT_DATA_ROOT, DEFAULT_RUN_ROOT, Roots};
use std::path::PathBuf;

/// Common flags, named as dockerd names them.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Root of persistent state.
    #[arg(long, env = "BERTH_DATA_ROOT", default_value = DEFAULT_DATA_ROOT)]
    pub data_root: PathBuf,
    /// Root of runtime state: sockets, shims, network namespaces.
    #[arg(long = "exec-root", alias = "run-root", env = "BERTH_EXEC_ROOT", default_value = DEFAULT_RUN_ROOT)]
    pub exec_root: PathBuf,
    /// Debug logging.
    #[arg(short = 'D', long, env = "BERTH_DEBUG")]
    pub debug: bool,
    /// daemon.json (optional).
    #[arg(long, env = "BERTH_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
}

impl ServiceArgs {
    pub fn roots(&self) -> Roots {
        Roots::new(self.data_root.clone(), self.exec_root.clone())
    }
}
