//! berth-logd: parse flags, open the database, reconcile, serve until SIGTERM/SIGINT.

use berth_logd::{LogService, MIGRATOR, SERVICE};
use berth_proto::logs::logs_server::LogsServer;
use clap::Parser;
use std::time::Duration;

/// Berth's log service.
#[derive(Debug, Parser)]
#[command(name = "berth-logd", version)]
struct Args {
    #[command(flatten)]
    service: berth_kit::ServiceArgs,
}

/// How long open streams get to finish after a stop signal.
const DRAIN: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = berth_kit::telemetry::init("berth-logd", args.service.debug);
    berth_kit::reload::on_sighup(args.service.config_file.clone(), |_| {});
    berth_logd::metrics::register();
    let roots = args.service.roots();
    let pool = berth_kit::db::open(&roots.state_db(SERVICE), &MIGRATOR).await?;
    let svc = LogService::start(pool.clone(), roots.service_dir(SERVICE)).await?;
    let routes = tonic::service::Routes::new(LogsServer::new(svc.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopper = svc.clone();
    tokio::spawn(async move {
        berth_kit::shutdown::signal_received().await;
        stopper.shutdown();
        let _ = stop_tx.send(true);
    });
    let mut rx = stop_rx.clone();
    let socket = roots.socket(SERVICE);
    let serve = berth_kit::grpc::serve_unix(&socket, routes, async move {
        let _ = rx.wait_for(|s| *s).await;
    });
    let mut rx = stop_rx;
    tokio::select! {
        r = serve => r?,
        _ = async move {
            let _ = rx.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN).await;
        } => tracing::warn!("streams still open after {DRAIN:?}, exiting"),
    }
    pool.close().await;
    telemetry.shutdown();
    Ok(())
}
