//! berth-shim entry point: parse flags and hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = berth_shim::cli::Cli::parse();
    berth_shim::daemon::main(cli)
}
