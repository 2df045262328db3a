//! berthd: parse flags and daemon.json, then run the services until a signal.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = berthd::config::Cli::parse();
    let loaded = match berthd::config::load(&cli) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let settings = match berthd::config::Settings::resolve(&cli, loaded.as_ref()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if cli.validate {
        // dockerd --validate's wording.
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    berth_kit::telemetry::init_logging("berthd", settings.debug);
    if let Some(berthd::config::Command::Status { json }) = cli.command {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        return match runtime.block_on(berthd::print_status(&settings.exec_root, json)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    // One thread: berthd only waits on children and sockets, and children must be
    // forked from a thread that lives as long as berthd (PR_SET_PDEATHSIG is per thread).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let reload: berthd::Reload = Box::new(move || {
        let loaded = berthd::config::load(&cli).map_err(|e| e.to_string())?;
        berthd::config::Settings::resolve(&cli, loaded.as_ref()).map_err(|e| e.to_string())
    });
    match runtime.block_on(berthd::run(settings, reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("berthd: {e}");
    ExitCode::FAILURE
}
