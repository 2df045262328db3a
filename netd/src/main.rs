//! berth-netd: parse flags, open the database, reconcile the kernel, serve gRPC.

use anyhow::Context;
use berth_kit::ServiceArgs;
use berth_netd::{Netd, NetdConfig, NetworksService, config, store};
use clap::Parser;
use std::sync::Arc;

/// Berth's network service.
#[derive(Debug, Parser)]
#[command(name = "berth-netd", version)]
struct Args {
    #[command(flatten)]
    common: ServiceArgs,
    /// The default bridge's address and prefix (dockerd's --bip), e.g. 172.29.3.1/24.
    #[arg(long)]
    bip: Option<String>,
    /// The default bridge's kernel name (dockerd's -b); default berth0 or bx<suffix>.
    #[arg(short = 'b', long)]
    bridge: Option<String>,
    /// Upstream resolver of the embedded DNS (repeatable; daemon.json `dns`); default:
    /// the host's resolv.conf nameservers.
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// dockerd's `--default-address-pool base=A.B.C.D/N,size=N` (repeatable; daemon.json
    /// `default-address-pools`).
    #[arg(long = "default-address-pool")]
    default_address_pools: Vec<String>,
    /// Delete every veth, netns, bridge and the nft table of this instance, then exit.
    #[arg(long)]
    teardown: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = berth_kit::telemetry::init("berth-netd", args.common.debug);
    berth_kit::reload::on_sighup(args.common.config_file.clone(), |_| {});
    let roots = args.common.roots();
    let file = config::DaemonNetConfig::load(args.common.config_file.as_deref())?;
    let netd_config = config::merge(
        NetdConfig {
            bridge_override: args.bridge,
            ..NetdConfig::default()
        },
        &args.dns,
        &args.default_address_pools,
        &file,
    )?;
    let pool = berth_kit::db::open(&roots.state_db("netd"), &store::MIGRATOR).await?;
    let netd = Netd::new(pool.clone(), roots.clone(), netd_config)?;
    if args.teardown {
        netd.teardown().await.context("teardown")?;
        pool.close().await;
        return Ok(());
    }
    netd.reconcile(args.bip.as_deref())
        .await
        .context("reconciling network state")?;
    let routes = tonic::service::Routes::new(NetworksService::new(Arc::new(netd)).into_server());
    berth_kit::grpc::serve_unix(
        &roots.socket("netd"),
        routes,
        berth_kit::shutdown::signal_received(),
    )
    .await?;
    pool.close().await;
    telemetry.shutdown();
    Ok(())
}
