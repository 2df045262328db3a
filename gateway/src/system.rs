//! Daemon-wide endpoints: ping, version, info.

use crate::services::{CONTAINERD, IMAGED, NETD, VOLUMED, call_within};
use crate::{API_VERSION, AppState, BERTH_VERSION, MIN_API_VERSION};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_proto::{containers, images, networks, volumes};
use serde_json::{Value, json};

/// `GET|HEAD /_ping`: the CLI negotiates its API version from these headers.
pub async fn ping() -> Response {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert("Swarm", HeaderValue::from_static("inactive"));
    (StatusCode::OK, h, "OK").into_response()
}

fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `GET /version`.
pub async fn version() -> Json<Value> {
    Json(json!({
        "Platform": {"Name": "Berth"},
        "Components": [{
            "Name": "Engine",
            "Version": BERTH_VERSION,
            "Details": {
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux",
                "Arch": go_arch(),
                "KernelVersion": kernel_version(),
                "Experimental": "false",
            }
        }],
        "Version": BERTH_VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown"),
        "GoVersion": "n/a (Rust)",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel_version(),
        "BuildTime": "",
        "Experimental": false,
    }))
}

fn meminfo_total_bytes() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|k| k.parse::<i64>().ok())
                })
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

fn os_pretty_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

/// "2" when /sys/fs/cgroup is a cgroup2 mount, else "1" (legacy or hybrid).
fn cgroup_version() -> &'static str {
    match nix::sys::statfs::statfs("/sys/fs/cgroup") {
        Ok(s) if s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => "2",
        _ => "1",
    }
}

/// How long `docker info` waits for each service.
const INFO_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /info`: real counts from the services; a service that is down is listed under
/// Warnings instead of failing the whole call.
pub async fn info(State(st): State<AppState>) -> Json<Value> {
    let mut warnings: Vec<String> = Vec::new();
    let s = st.services.clone();
    let (mut running, mut paused, mut stopped, mut total) = (0, 0, 0, 0);
    // Asked concurrently with a short deadline: `docker info` must answer quickly even
    // when a service hangs, and name that service under Warnings.
    let (mut c, mut i, mut n, mut v) = (
        s.containers.clone(),
        s.images.clone(),
        s.networks.clone(),
        s.volumes.clone(),
    );
    let (containers_r, images_r, networks_r, volumes_r) = tokio::join!(
        call_within(
            CONTAINERD,
            INFO_DEADLINE,
            c.list(containers::ListRequest { all: true })
        ),
        call_within(
            IMAGED,
            INFO_DEADLINE,
            i.list_images(images::ListImagesRequest { all: false })
        ),
        call_within(
            NETD,
            INFO_DEADLINE,
            n.list_networks(networks::ListNetworksRequest {})
        ),
        call_within(
            VOLUMED,
            INFO_DEADLINE,
            v.list_volumes(volumes::ListVolumesRequest::default())
        ),
    );
    match containers_r {
        Ok(list) => {
            for c in list.containers {
                total += 1;
                match c.state.as_str() {
                    "running" | "restarting" => running += 1,
                    "paused" => paused += 1,
                    _ => stopped += 1,
                }
            }
        }
        Err(e) => warnings.push(e.message),
    }
    let images = match images_r {
        Ok(l) => l.images.len(),
        Err(e) => {
            warnings.push(e.message);
            0
        }
    };
    for (svc, ok) in [(NETD, networks_r.is_ok()), (VOLUMED, volumes_r.is_ok())] {
        if !ok {
            warnings.push(format!("berth: the {svc} service is unavailable"));
        }
    }
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    Json(json!({
        "ID": berth_kit::paths::instance_suffix(&st.info.roots.run_root),
        "Containers": total,
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": stopped,
        "Images": images,
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "overlayfs"]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Log": ["json-file", "local", "none"]},
        "MemoryLimit": true,
        "SwapLimit": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": true,
        "Debug": berth_kit::telemetry::debug_enabled(),
        "NFd": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
        "NGoroutines": 0,
        "SystemTime": crate::util::rfc3339_nanos(chrono::Utc::now()),
        "LoggingDriver": st.info.log_driver,
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version(),
        "NEventsListener": 0,
        "KernelVersion": kernel_version(),
        "OperatingSystem": os_pretty_name(),
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": ["127.0.0.0/8", "::1/128"], "Mirrors": st.info.registry_mirrors},
        "NCPU": ncpu,
        "MemTotal": meminfo_total_bytes(),
        "DockerRootDir": st.info.roots.data_root.display().to_string(),
        "Name": hostname,
        "Labels": *st.info.labels.read().unwrap_or_else(std::sync::PoisonError::into_inner),
        "ExperimentalBuild": false,
        "ServerVersion": BERTH_VERSION,
        "Runtimes": crate::containers::RUNTIMES.iter().map(|r| (r.to_string(), json!({"path": "berth-shim"}))).collect::<serde_json::Map<_, _>>(),
        "DefaultRuntime": crate::containers::DEFAULT_RUNTIME,
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        // dockerd's warnings each start with "WARNING: " (the CLI prints them as given).
        "Warnings": warnings.iter().map(|w| format!("WARNING: {w}")).collect::<Vec<_>>(),
    }))
}

/// `GET /plugins`: Berth has no plugins, so the empty list is the truth.
pub async fn plugins() -> Json<Value> {
    Json(json!([]))
}

/// `POST /build/prune`: there is no build cache yet, so nothing to delete is the truth.
pub async fn build_prune() -> Json<Value> {
    Json(json!({"CachesDeleted": [], "SpaceReclaimed": 0}))
}
