//! berth-volumed: parse flags, open the database, reconcile, serve until SIGTERM/SIGINT.

use berth_proto::volumes::volumes_server::VolumesServer;
use berth_volumed::{MIGRATOR, SERVICE, VolumeService, VolumeStore};
use clap::Parser;

/// Berth's volume service.
#[derive(Debug, Parser)]
#[command(name = "berth-volumed", version)]
struct Args {
    #[command(flatten)]
    service: berth_kit::ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = berth_kit::telemetry::init("berth-volumed", args.service.debug);
    berth_kit::reload::on_sighup(args.service.config_file.clone(), |_| {});
    let roots = args.service.roots();
    let pool = berth_kit::db::open(&roots.state_db(SERVICE), &MIGRATOR).await?;
    let store = VolumeStore::new(pool.clone(), roots.service_dir(SERVICE));
    store.reconcile().await?;
    let routes = tonic::service::Routes::new(VolumesServer::new(VolumeService::new(store)));
    let socket = roots.socket(SERVICE);
    berth_kit::grpc::serve_unix(&socket, routes, berth_kit::shutdown::signal_received()).await?;
    pool.close().await;
    telemetry.shutdown();
    Ok(())
}
