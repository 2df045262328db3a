//! berth-imaged: parse flags, open the database, reconcile, serve until SIGTERM.

use anyhow::Context;
use berth_imaged::{
    Imaged, ImagesService, MIGRATOR, Settings, insecure_registries_from,
    max_concurrent_downloads_from, registry_mirrors_from,
};
use berth_kit::ServiceArgs;
use berth_proto::images::images_server::ImagesServer;
use clap::Parser;

/// The Berth image store.
#[derive(Debug, Parser)]
#[command(name = "berth-imaged", version)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

/// At most two malloc arenas: downloads and unpacks run on several threads, and glibc's
/// default (an arena per thread, up to eight per core) keeps what each has freed: with
/// it, imaged's anonymous memory after the pull benchmark was 24 MB, with two 20 MB.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    // SAFETY: mallopt before any other thread exists only changes glibc's settings.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
}

fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = berth_kit::telemetry::init("berth-imaged", args.service.debug);
    berth_kit::reload::on_sighup(args.service.config_file.clone(), |_| {});
    berth_imaged::metrics::register();
    let roots = args.service.roots();
    let insecure_registries = insecure_registries_from(args.service.config_file.as_deref())
        .context("reading the daemon config")?;
    let registry_mirrors = registry_mirrors_from(args.service.config_file.as_deref())
        .context("reading the daemon config")?;
    let max_concurrent_downloads =
        max_concurrent_downloads_from(args.service.config_file.as_deref())
            .context("reading the daemon config")?;
    let pool = berth_kit::db::open(&roots.state_db("imaged"), &MIGRATOR).await?;
    let imaged = Imaged::new(
        pool,
        Settings {
            dir: roots.service_dir("imaged"),
            insecure_registries,
            registry_mirrors,
            max_concurrent_downloads,
        },
    );
    imaged.reconcile().await.context("reconciling")?;
    let routes = tonic::service::Routes::new(ImagesServer::new(ImagesService::new(imaged)));
    berth_kit::grpc::serve_unix(
        &roots.socket("imaged"),
        routes,
        berth_kit::shutdown::signal_received(),
    )
    .await?;
    telemetry.shutdown();
    Ok(())
}
