//! berth-containerd: container records and lifecycle over `<run-root>/containerd.sock`.

use anyhow::Context;
use berth_containerd::service::Service;
use berth_containerd::{Config, MIGRATOR, SERVICE, find_init_binary, find_shim_binary};
use berth_proto::containers::containers_server::ContainersServer;
use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "berth-containerd", about = "Berth container service")]
struct Args {
    #[command(flatten)]
    common: berth_kit::ServiceArgs,
    /// The berth-shim executable (default: beside this binary, else on PATH).
    #[arg(long)]
    shim_binary: Option<PathBuf>,
    /// logd's socket handed to shims (default `<run-root>/logd.sock`).
    #[arg(long)]
    logd_socket: Option<PathBuf>,
    /// Cgroup parent for containers (default: the instance's, e.g. `berth`).
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// The init `--init` runs as PID 1 (default: daemon.json `init-path`, else the
    /// host's static tini or docker-init).
    #[arg(long)]
    init_path: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = berth_kit::telemetry::init("berth-containerd", args.common.debug);
    berth_kit::reload::on_sighup(args.common.config_file.clone(), |_| {});
    let roots = args.common.roots();
    let shim_binary = args
        .shim_binary
        .or_else(find_shim_binary)
        .context("berth-shim not found beside berth-containerd nor on PATH (use --shim-binary)")?;
    let cfg = Config {
        bundles_dir: roots.service_dir(SERVICE).join("bundles"),
        shims_dir: roots.run_root.join("shims"),
        state_root: roots.run_root.join("youki"),
        shim_binary,
        logd_socket: args.logd_socket.unwrap_or_else(|| roots.socket("logd")),
        cgroup_parent: args.cgroup_parent.unwrap_or_else(|| roots.cgroup_parent()),
        init_binary: args
            .init_path
            .or_else(|| {
                let doc =
                    berth_kit::reload::read_daemon_json(args.common.config_file.as_deref()).ok()?;
                doc.get("init-path")?.as_str().map(PathBuf::from)
            })
            .or_else(find_init_binary),
    };
    std::fs::create_dir_all(&cfg.bundles_dir)?;
    std::fs::create_dir_all(&cfg.shims_dir)?;
    let pool = berth_kit::db::open(&roots.state_db(SERVICE), &MIGRATOR).await?;
    let svc = Service::new(pool, cfg, telemetry.tracer_for("berth-shim"));
    svc.reconcile().await.context("reconciling with shims")?;
    svc.spawn_state_metrics();
    let routes = tonic::service::Routes::new(ContainersServer::new(svc));
    berth_kit::grpc::serve_unix(
        &roots.socket(SERVICE),
        routes,
        berth_kit::shutdown::signal_received(),
    )
    .await?;
    telemetry.shutdown();
    Ok(())
}
