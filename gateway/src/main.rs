//! berth-gateway: serves the Docker API on a unix socket.

use anyhow::Context;
use berth_gateway::metrics::metrics_addr_from;
use berth_gateway::{AppState, reaper};
use clap::Parser;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "berth-gateway", about = "Berth's Docker API gateway")]
struct Args {
    #[command(flatten)]
    common: berth_kit::ServiceArgs,
    /// Where to serve the API: unix://PATH (repeatable). Default: <exec-root>/docker.sock.
    #[arg(short = 'H', long = "host")]
    hosts: Vec<String>,
    /// Address (host:port) serving every service's metrics at /metrics; "" turns it off.
    /// Default: daemon.json's `metrics-addr`, else off (as dockerd).
    #[arg(long)]
    metrics_addr: Option<String>,
}

fn socket_paths(args: &Args) -> anyhow::Result<Vec<PathBuf>> {
    if args.hosts.is_empty() {
        return Ok(vec![args.common.roots().docker_socket()]);
    }
    args.hosts
        .iter()
        .map(|h| match h.strip_prefix("unix://") {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ if h.starts_with("tcp://") => {
                anyhow::bail!("{h}: TCP is not supported without TLS (tlsverify) yet")
            }
            _ => anyhow::bail!("{h}: only unix:// hosts are supported"),
        })
        .collect()
}

/// Mode 0660 and group `docker` when it exists: the socket is root-equivalent.
fn secure_socket(path: &std::path::Path) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("docker") {
        nix::unistd::chown(path, None, Some(group.gid))?;
    }
    Ok(())
}

/// Serves the metrics address. Only loopback unless the operator says otherwise; a busy
/// port (another Berth) costs the metrics, never the API.
async fn serve_metrics(
    addr: &str,
    state: AppState,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(addr, error = %e, "metrics address unavailable; metrics not served");
            return;
        }
    };
    tracing::info!(addr, "serving metrics");
    let app = berth_gateway::metrics::routes(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.recv().await;
            })
            .await;
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = berth_kit::telemetry::init("berth-gateway", args.common.debug);
    let roots = args.common.roots();
    let events = berth_gateway::events::Events::open(&roots.state_db("gateway"))
        .await
        .context("opening the event store")?;
    let (log_driver, log_opts) = berth_gateway::util::log_defaults(
        &berth_gateway::util::daemon_json(args.common.config_file.as_deref())?,
    );
    let doc = berth_gateway::util::daemon_json(args.common.config_file.as_deref())?;
    let state = AppState::new(roots, events)
        .with_log_defaults(log_driver, log_opts)
        .with_registry_mirrors(&doc);
    state.set_labels(&doc);
    let live = state.clone();
    berth_kit::reload::on_sighup(args.common.config_file.clone(), move |doc| {
        live.set_labels(doc)
    });
    tokio::spawn(reaper::run(state.clone()));
    let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut servers = Vec::new();
    for path in socket_paths(&args)? {
        let listener = berth_kit::grpc::bind_unix(&path)
            .with_context(|| format!("binding {}", path.display()))?;
        secure_socket(&path).with_context(|| format!("securing {}", path.display()))?;
        tracing::info!(socket = %path.display(), "serving the Docker API");
        let mut rx = tx.subscribe();
        let st = state.clone();
        servers.push(tokio::spawn(async move {
            berth_gateway::serve(listener, st, async move {
                let _ = rx.recv().await;
            })
            .await
        }));
    }
    let metrics_addr = match args.metrics_addr.clone() {
        Some(a) => a,
        None => metrics_addr_from(args.common.config_file.as_deref())?.unwrap_or_default(),
    };
    if !metrics_addr.is_empty() {
        serve_metrics(&metrics_addr, state.clone(), tx.subscribe()).await;
    }
    berth_kit::shutdown::signal_received().await;
    let _ = tx.send(());
    for s in servers {
        // Hijacked streams do not hold up shutdown; ordinary requests drain.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s).await;
    }
    telemetry.shutdown();
    Ok(())
}
