//! berth-gateway: serves the Docker API on a unix socket.

use anyhow::Context;
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = berth_kit::telemetry::init("berth-gateway", args.common.debug);
    let roots = args.common.roots();
    let state = AppState::new(roots);
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
    berth_kit::shutdown::signal_received().await;
    let _ = tx.send(());
    for s in servers {
        // Hijacked streams do not hold up shutdown; ordinary requests drain.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s).await;
    }
    telemetry.shutdown();
    Ok(())
}
