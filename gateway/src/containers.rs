//! Container endpoints. Create and remove span services: create reserves a snapshot,
//! volumes, a network endpoint and a log, then records the container; any failure undoes
//! the earlier steps in reverse, so a failed `docker run` leaves nothing behind.

use crate::AppState;
use crate::error::ApiError;
use crate::images::parse_config;
use crate::services::{CONTAINERD, IMAGED, LOGD, NETD, Services, VOLUMED, call, call_within};
use crate::util::{ZERO_TIME, human_duration, parse_filters, parse_time, query_bool};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_proto::{containers as cpb, images as ipb, logs as lpb, networks as npb, volumes as vpb};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// HostConfig.RestartPolicy checked as dockerd does: (name, maximum retry count).
fn restart_policy(host_config: &Value, auto_remove: bool) -> Result<(String, i32), ApiError> {
    let policy = host_config.get("RestartPolicy");
    let name = policy
        .and_then(|p| p.get("Name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let max = policy
        .and_then(|p| p.get("MaximumRetryCount"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let bad = |m: &str| {
        Err(ApiError::bad_request(format!(
            "invalid restart policy: {m}"
        )))
    };
    match name {
        "" | "no" | "always" | "unless-stopped" if max != 0 => {
            return bad("maximum retry count can only be used with 'on-failure'");
        }
        "" | "no" | "always" | "unless-stopped" | "on-failure" => {}
        other => {
            return bad(&format!(
                "unknown policy '{other}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
            ));
        }
    }
    if max < 0 {
        return bad("maximum retry count cannot be negative");
    }
    if auto_remove && !matches!(name, "" | "no") {
        return Err(ApiError::bad_request(
            "can't create 'AutoRemove' container with restart policy",
        ));
    }
    Ok((name.to_string(), i32::try_from(max).unwrap_or(i32::MAX)))
}

/// Docker's rule for container names (`daemon/names`), without the leading "/".
pub fn valid_container_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    let rest: Vec<char> = chars.collect();
    !rest.is_empty()
        && rest
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Merges `KEY=VALUE` lists: later entries replace earlier ones with the same key.
pub fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in base.iter().chain(overrides) {
        let key = e.split_once('=').map(|(k, _)| k).unwrap_or(e);
        if let Some(slot) = out
            .iter_mut()
            .find(|x| x.split_once('=').map(|(k, _)| k).unwrap_or(x) == key)
        {
            *slot = e.clone();
        } else {
            out.push(e.clone());
        }
    }
    out
}

/// Entrypoint and Cmd after Docker's merge of request and image: a request entrypoint
/// drops the image's Cmd; a request Cmd replaces the image's.
pub fn effective_command(
    req_entrypoint: Option<Vec<String>>,
    req_cmd: Option<Vec<String>>,
    img_entrypoint: Option<Vec<String>>,
    img_cmd: Option<Vec<String>>,
) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let entrypoint_overridden = req_entrypoint.is_some();
    let entrypoint = match req_entrypoint {
        Some(e) if e.len() == 1 && e[0].is_empty() => None,
        Some(e) => Some(e),
        None => img_entrypoint,
    };
    let cmd = match req_cmd {
        Some(c) if !c.is_empty() => Some(c),
        _ if entrypoint_overridden => None,
        _ => img_cmd,
    };
    (entrypoint, cmd)
}

/// What was reserved so far during create, to undo in reverse on failure.
enum Reserved {
    Snapshot,
    Volumes,
    Endpoint,
    Log,
}

async fn undo(services: &Services, id: &str, reserved: Vec<Reserved>) {
    let mut s = services.clone();
    for step in reserved.into_iter().rev() {
        let cid = id.to_string();
        let res = match step {
            Reserved::Log => call(
                LOGD,
                s.logs.remove(lpb::RemoveRequest { container_id: cid }),
            )
            .await
            .map(|_| ()),
            Reserved::Endpoint => call(
                NETD,
                s.networks.remove_endpoint(npb::RemoveEndpointRequest {
                    container_id: cid,
                    network: String::new(),
                }),
            )
            .await
            .map(|_| ()),
            Reserved::Volumes => call(
                VOLUMED,
                s.volumes.detach_container(vpb::DetachContainerRequest {
                    container_id: cid,
                    remove_anonymous: true,
                }),
            )
            .await
            .map(|_| ()),
            Reserved::Snapshot => call(
                IMAGED,
                s.images
                    .remove_snapshot(ipb::RemoveSnapshotRequest { container_id: cid }),
            )
            .await
            .map(|_| ()),
        };
        if let Err(e) = res {
            tracing::warn!(container = %id, "undoing a failed create: {e}");
        }
    }
}

fn hosts_file(ip: &str, hostname: &str, extra: &[(String, String)]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (name, addr) in extra {
        s.push_str(&format!("{addr}\t{name}\n"));
    }
    if !ip.is_empty() {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s
}

/// A legacy link (`--link name:alias` on the default bridge), resolved at create.
struct LegacyLink {
    alias: String,
    target_name: String,
    ip: String,
    env: Vec<String>,
    /// Exposed ports of the linked container, sorted: (port, protocol).
    ports: Vec<(u16, String)>,
}

impl LegacyLink {
    /// Docker's link variables: `<ALIAS>_NAME`, `<ALIAS>_ENV_<KEY>` for the linked
    /// container's environment (but HOME and PATH), and `<ALIAS>_PORT...` for its ports.
    fn env_vars(&self, linking_name: &str) -> Vec<String> {
        let prefix = self.alias.to_uppercase().replace('-', "_");
        let mut out = vec![format!("{prefix}_NAME=/{linking_name}/{}", self.alias)];
        for kv in &self.env {
            if let Some((k, v)) = kv.split_once('=')
                && k != "HOME"
                && k != "PATH"
            {
                out.push(format!("{prefix}_ENV_{k}={v}"));
            }
        }
        if let Some((port, proto)) = self.ports.first() {
            out.push(format!("{prefix}_PORT={proto}://{}:{port}", self.ip));
        }
        for (port, proto) in &self.ports {
            let p = format!("{prefix}_PORT_{port}_{}", proto.to_uppercase());
            out.push(format!("{p}={proto}://{}:{port}", self.ip));
            out.push(format!("{p}_ADDR={}", self.ip));
            out.push(format!("{p}_PORT={port}"));
            out.push(format!("{p}_PROTO={proto}"));
        }
        out
    }
}

/// Resolves `HostConfig.Links` (`name:alias`) on the default bridge: each linked
/// container must run there (dockerd's words when not).
async fn legacy_links(st: &AppState, links: &[Value]) -> Result<Vec<LegacyLink>, ApiError> {
    let mut out = Vec::new();
    for l in links.iter().filter_map(Value::as_str) {
        let (target, alias) = l.split_once(':').unwrap_or((l, l));
        let target = target.trim_start_matches('/');
        let alias = alias.rsplit('/').next().unwrap_or(alias).to_string();
        let c = get_container(st, target).await?;
        let spec = spec_of(&c);
        if c.state != "running" {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "Cannot link to a non running container: /{} AS /{alias}",
                    spec.name
                ),
            ));
        }
        let ip = crate::networks::live_endpoints(st, &spec.id)
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|e| e.network_name == "bridge")
            .map(|e| e.ip_address)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Cannot link to /{}, as it does not belong to the default network",
                    spec.name
                ))
            })?;
        let mut ports: Vec<(u16, String)> = exposed_of(&json_bytes(&spec.network_settings_json))
            .iter()
            .filter_map(|p| {
                let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                Some((port.parse().ok()?, proto.to_string()))
            })
            .collect();
        ports.sort();
        out.push(LegacyLink {
            alias,
            target_name: spec.name.clone(),
            ip,
            // Its Config.Env: the variables of its own links are not passed on.
            env: string_list(json_bytes(&spec.config_json).get("Env")).unwrap_or_default(),
            ports,
        });
    }
    Ok(out)
}

/// `--add-host name:ip` entries; `host-gateway` is the address of the container's
/// gateway (the host, as seen from the container).
fn extra_hosts(list: &[String], gateway: &str) -> Result<Vec<(String, String)>, ApiError> {
    list.iter()
        .map(|h| {
            let (name, addr) = h
                .split_once(':')
                .filter(|(n, a)| !n.is_empty() && !a.is_empty())
                .ok_or_else(|| ApiError::bad_request(format!("invalid extra host: {h}")))?;
            let addr = if addr == "host-gateway" {
                if gateway.is_empty() {
                    return Err(ApiError::bad_request(
                        "unable to derive the IP value for host-gateway: the container has no gateway",
                    ));
                }
                gateway.to_string()
            } else {
                addr.parse::<std::net::IpAddr>()
                    .map_err(|_| ApiError::bad_request(format!("invalid IP address in add-host: \"{addr}\"")))?
                    .to_string()
            };
            Ok((name.to_string(), addr))
        })
        .collect()
}

/// The ports an image and the request expose (`80/tcp`), sorted.
fn exposed_ports(image: &Value, req: &Value) -> Result<Vec<String>, ApiError> {
    let mut out = std::collections::BTreeSet::new();
    for src in [image.get("ExposedPorts"), req.get("ExposedPorts")] {
        if let Some(m) = src.and_then(Value::as_object) {
            for k in m.keys() {
                let (port, proto) = crate::networks::parse_port_key(k)?;
                out.insert(format!("{port}/{proto}"));
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// `POST /containers/create?name=`.
pub async fn create(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let _creating = st.create_lock.clone().read_owned().await;
    let req: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    if !req.is_object() {
        return Err(ApiError::bad_request("invalid JSON: expected an object"));
    }
    let name = q
        .get("name")
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default();
    if !name.is_empty() && !valid_container_name(&name) {
        return Err(ApiError::bad_request(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    let image_ref = str_field(&req, "Image").to_string();
    if image_ref.is_empty() {
        return Err(ApiError::bad_request(
            "Config cannot be empty in order to create a container",
        ));
    }
    let flag = |k: &str| req.get(k).and_then(Value::as_bool).unwrap_or(false);
    let (tty, open_stdin, stdin_once) = (flag("Tty"), flag("OpenStdin"), flag("StdinOnce"));
    let host_config = req.get("HostConfig").cloned().unwrap_or(json!({}));
    let mut network_mode = str_field(&host_config, "NetworkMode").to_string();
    if network_mode.is_empty() || network_mode == "default" {
        network_mode = "bridge".into();
    }
    let links = host_config
        .get("Links")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .cloned();
    let user_network = !matches!(network_mode.as_str(), "bridge" | "host" | "none")
        && !network_mode.starts_with("container:");
    // Legacy links on the default bridge: the linked containers' addresses in
    // /etc/hosts and their environment and ports as variables, fixed at create.
    let legacy_links = match &links {
        Some(l) if network_mode == "bridge" => legacy_links(&st, l).await?,
        Some(_) if !user_network => {
            return Err(ApiError::bad_request(
                "conflicting options: links and the network mode",
            ));
        }
        _ => Vec::new(),
    };
    let mut endpoints_config = req
        .pointer("/NetworkingConfig/EndpointsConfig")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(links) = links.filter(|_| user_network) {
        // As dockerd: on a user-defined network a link is an alias the linking
        // container alone resolves, kept in its endpoint's settings.
        let ep = endpoints_config
            .entry(network_mode.clone())
            .or_insert_with(|| json!({}));
        if let Some(o) = ep.as_object_mut() {
            let given = o
                .get("Links")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut all = given;
            for l in links {
                if !all.contains(&l) {
                    all.push(l);
                }
            }
            o.insert("Links".into(), Value::Array(all));
        }
    }
    // Further networks (API 1.44+ sends every --network here); the primary one first.
    let extra_networks: Vec<String> = endpoints_config
        .keys()
        .filter(|k| **k != network_mode && !(network_mode == "bridge" && *k == "default"))
        .cloned()
        .collect();
    let dns_servers = string_list(host_config.get("Dns")).unwrap_or_default();
    let dns_search = string_list(host_config.get("DnsSearch")).unwrap_or_default();
    let dns_options = string_list(host_config.get("DnsOptions")).unwrap_or_default();
    let extra_hosts_req = string_list(host_config.get("ExtraHosts")).unwrap_or_default();
    let auto_remove = host_config
        .get("AutoRemove")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (restart_policy, restart_max_retries) = restart_policy(&host_config, auto_remove)?;
    let runtime = match str_field(&host_config, "Runtime") {
        "" => DEFAULT_RUNTIME,
        r if RUNTIMES.contains(&r) => r,
        // dockerd's wording.
        r => {
            return Err(ApiError::bad_request(format!(
                "unknown or invalid runtime name: {r}"
            )));
        }
    };
    let requested_driver = host_config
        .pointer("/LogConfig/Type")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let log_driver = requested_driver.unwrap_or(&st.info.log_driver).to_string();
    // --log-opt without --log-driver adds to the daemon's default driver; the daemon's
    // log-opts apply only to its own default driver.
    let mut log_opts: HashMap<String, String> = host_config
        .pointer("/LogConfig/Config")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    if log_opts.is_empty() && requested_driver.is_none_or(|d| d == st.info.log_driver) {
        log_opts = st.info.log_opts.clone();
    }
    match log_driver.as_str() {
        "json-file" | "local" | "none" => {}
        // Drivers dockerd ships that Berth has not built.
        "syslog" | "journald" | "gelf" | "fluentd" | "awslogs" | "splunk" | "etwlogs"
        | "gcplogs" | "logentries" => {
            return Err(ApiError::not_supported(format!(
                "the {log_driver} logging driver"
            )));
        }
        // dockerd's wording for a name no driver has (clients match on it).
        _ => {
            return Err(ApiError::bad_request(format!(
                "logger: no log driver named '{log_driver}' is registered"
            )));
        }
    }
    let mut s = st.services.clone();
    if !name.is_empty() {
        match call(
            CONTAINERD,
            s.containers.get(cpb::GetRequest { id: name.clone() }),
        )
        .await
        {
            Ok(c) if c.spec.as_ref().is_some_and(|sp| sp.name == name) => {
                let holder = c.spec.map(|sp| sp.id).unwrap_or_default();
                return Err(ApiError::conflict(format!(
                    "Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". You have to remove (or rename) that container to be able to reuse that name."
                )));
            }
            Ok(_) => {}
            Err(e) if e.status == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    let image = call(
        IMAGED,
        s.images.get_image(ipb::GetImageRequest {
            reference: image_ref.clone(),
        }),
    )
    .await?;
    let img_cfg = parse_config(&image);
    let img_c = img_cfg.get("config").cloned().unwrap_or(json!({}));
    let mount_plan = crate::mounts::Plan::build(&st, &req, &host_config, &img_c).await?;
    let exposed = exposed_ports(&img_c, &req)?;
    let publish_all = host_config
        .get("PublishAllPorts")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ports =
        crate::networks::port_bindings(host_config.get("PortBindings"), publish_all, &exposed)?;
    // `--network container:<name|id>`: join that container's namespace, with its
    // hostname, /etc/hosts and resolv.conf; nothing of its own to configure.
    let joined: Option<cpb::ContainerSpec> = match network_mode.strip_prefix("container:") {
        Some(target) => {
            let conflict = |what: &str| {
                Err(ApiError::bad_request(format!(
                    "conflicting options: {what} and the network mode"
                )))
            };
            if !ports.is_empty() {
                return conflict("port publishing");
            }
            if !str_field(&req, "Hostname").is_empty() {
                return conflict("hostname");
            }
            if !dns_servers.is_empty() {
                return conflict("dns");
            }
            if !extra_hosts_req.is_empty() {
                return conflict("custom host-to-IP mapping");
            }
            let target = get_container(&st, target).await?.spec.unwrap_or_default();
            if target.netns_path.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "cannot join the network namespace of container {}: it uses the host's",
                    target.id
                )));
            }
            network_mode = format!("container:{}", target.id);
            Some(target)
        }
        None => None,
    };
    let mut warnings: Vec<String> = Vec::new();
    if !ports.is_empty() && matches!(network_mode.as_str(), "host" | "none") {
        // Docker discards them in these modes and says so.
        warnings.push(format!(
            "Published ports are discarded when using {network_mode} network mode"
        ));
    }

    let (entrypoint, cmd) = effective_command(
        string_list(req.get("Entrypoint")),
        string_list(req.get("Cmd")),
        string_list(img_c.get("Entrypoint")),
        string_list(img_c.get("Cmd")),
    );
    let args: Vec<String> = entrypoint
        .iter()
        .flatten()
        .chain(cmd.iter().flatten())
        .cloned()
        .collect();
    if args.is_empty() {
        return Err(ApiError::bad_request("No command specified"));
    }
    let env = merge_env(
        &string_list(img_c.get("Env")).unwrap_or_default(),
        &string_list(req.get("Env")).unwrap_or_default(),
    );
    let working_dir = Some(str_field(&req, "WorkingDir"))
        .filter(|s| !s.is_empty())
        .unwrap_or(str_field(&img_c, "WorkingDir"))
        .to_string();
    let user = Some(str_field(&req, "User"))
        .filter(|s| !s.is_empty())
        .unwrap_or(str_field(&img_c, "User"))
        .to_string();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for src in [img_c.get("Labels"), req.get("Labels")] {
        if let Some(m) = src.and_then(Value::as_object) {
            for (k, v) in m {
                labels.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
    }
    let id = crate::util::new_id();
    let shares_host_names = network_mode == "host"
        || host_config.get("UTSMode").and_then(Value::as_str) == Some("host");
    let hostname = match &joined {
        Some(t) => t.hostname.clone(),
        None => match Some(str_field(&req, "Hostname")).filter(|s| !s.is_empty()) {
            Some(h) => h.to_string(),
            // Docker gives a container on the host's network (or UTS namespace) the
            // host's name.
            None if shares_host_names => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| id[..12].to_string()),
            None => id[..12].to_string(),
        },
    };
    let stop_signal = Some(str_field(&req, "StopSignal"))
        .filter(|s| !s.is_empty())
        .unwrap_or(str_field(&img_c, "StopSignal"))
        .to_string();

    // Reserve resources in order; undo in reverse on any failure.
    let mut reserved = Vec::new();
    let result = async {
        let snap = call(
            IMAGED,
            s.images.prepare_snapshot(ipb::PrepareSnapshotRequest {
                container_id: id.clone(),
                image_id: image.id.clone(),
            }),
        )
        .await?;
        reserved.push(Reserved::Snapshot);
        // Copying image content into new volumes can take a while.
        let attached = call_within(
            VOLUMED,
            Duration::from_secs(120),
            s.volumes.attach_container(vpb::AttachContainerRequest {
                container_id: id.clone(),
                mounts: mount_plan.volume_requests(),
                rootfs_path: snap.rootfs_path.clone(),
            }),
        )
        .await?;
        reserved.push(Reserved::Volumes);
        for m in attached.mounts.iter().filter(|m| m.created) {
            crate::volumes::volume_event(&st, "create", &m.name).await;
        }
        // The CLI files the default network's settings under "default".
        let mut primary = crate::networks::endpoint_settings(
            endpoints_config
                .get(&network_mode)
                .or_else(|| endpoints_config.get(str_field(&host_config, "NetworkMode")))
                .or_else(|| {
                    endpoints_config
                        .get("default")
                        .filter(|_| network_mode == "bridge")
                }),
        );
        // Before API 1.44 the MAC address came in Config (docker-py still sends it there).
        if primary.mac_address.is_empty() {
            primary.mac_address = str_field(&req, "MacAddress").to_string();
        }
        // The primary network first (it gets eth0, the default route and the published
        // ports), then the others the request names.
        let mut endpoints = Vec::new();
        let wanted: Vec<(
            String,
            crate::networks::EndpointSettings,
            Vec<npb::PortBinding>,
        )> = if joined.is_some() {
            Vec::new()
        } else {
            let primary_ports = if matches!(network_mode.as_str(), "host" | "none") {
                Vec::new()
            } else {
                ports.clone()
            };
            std::iter::once((network_mode.clone(), primary, primary_ports))
                .chain(extra_networks.iter().map(|net| {
                    (
                        net.clone(),
                        crate::networks::endpoint_settings(endpoints_config.get(net)),
                        Vec::new(),
                    )
                }))
                .collect()
        };
        for (network, settings, ports) in wanted {
            let ep = call_within(
                NETD,
                Duration::from_secs(30),
                s.networks.create_endpoint(npb::CreateEndpointRequest {
                    container_id: id.clone(),
                    network,
                    container_name: name.clone(),
                    aliases: settings.aliases,
                    ipv4_address: settings.ipv4_address,
                    ports,
                    dns_servers: dns_servers.clone(),
                    mac_address: settings.mac_address,
                    settings_json: settings.given,
                }),
            )
            .await?;
            if endpoints.is_empty() {
                reserved.push(Reserved::Endpoint);
            }
            endpoints.push(ep);
        }
        let endpoint = match &joined {
            Some(target) => npb::Endpoint {
                netns_path: target.netns_path.clone(),
                ..Default::default()
            },
            None => endpoints.first().cloned().unwrap_or_default(),
        };
        call(
            LOGD,
            s.logs.open(lpb::OpenRequest {
                container_id: id.clone(),
                driver: log_driver.clone(),
                options: log_opts.clone(),
            }),
        )
        .await?;
        reserved.push(Reserved::Log);

        let (mounts, mounts_json) = mount_plan.container_mounts(&attached.mounts)?;

        let host_net = network_mode == "host";
        let shown: Vec<npb::Endpoint> = if host_net {
            Vec::new()
        } else {
            endpoints.clone()
        };
        let embedded_dns = endpoints.iter().any(|e| !e.dns_names.is_empty());
        let mut extra_hosts = extra_hosts(&extra_hosts_req, &endpoint.gateway)?;
        let shown_name = if name.is_empty() { &id[..12] } else { name.as_str() };
        let mut link_env = Vec::new();
        for l in &legacy_links {
            extra_hosts.push((format!("{} {}", l.alias, l.target_name), l.ip.clone()));
            link_env.extend(l.env_vars(shown_name));
        }
        // The links' variables go to the process only (dockerd's Config.Env leaves them
        // out), first: the container's own override them.
        let process_env = merge_env(&link_env, &env);
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let config_json = json!({
            "Hostname": hostname,
            "Domainname": str_field(&req, "Domainname"),
            "User": user,
            "AttachStdin": req.get("AttachStdin").and_then(Value::as_bool).unwrap_or(false),
            "AttachStdout": req.get("AttachStdout").and_then(Value::as_bool).unwrap_or(false),
            "AttachStderr": req.get("AttachStderr").and_then(Value::as_bool).unwrap_or(false),
            "Tty": tty,
            "OpenStdin": open_stdin,
            "StdinOnce": stdin_once,
            "Env": env,
            "Cmd": cmd,
            "Image": image_ref,
            "Volumes": req.get("Volumes").cloned().unwrap_or(Value::Null),
            "ExposedPorts": if exposed.is_empty() { Value::Null } else {
                Value::Object(exposed.iter().map(|p| (p.clone(), json!({}))).collect())
            },
            "WorkingDir": working_dir,
            "Entrypoint": entrypoint,
            "OnBuild": null,
            "Labels": labels,
            "StopSignal": if stop_signal.is_empty() { Value::Null } else { json!(stop_signal) },
            "StopTimeout": req.get("StopTimeout").cloned().unwrap_or(Value::Null),
            "Healthcheck": checked_healthcheck(merge_healthcheck(req.get("Healthcheck"), img_c.get("Healthcheck")))?,
        });
        let mut hc = host_config.clone();
        if let Some(o) = hc.as_object_mut() {
            o.insert("NetworkMode".into(), json!(network_mode));
            o.insert(
                "LogConfig".into(),
                json!({"Type": log_driver, "Config": log_opts}),
            );
            o.insert("Runtime".into(), json!(runtime));
            if !legacy_links.is_empty() {
                // Docker's form: "/linked:/linking/alias".
                let shown: Vec<String> = legacy_links
                    .iter()
                    .map(|l| format!("/{}:/{}/{}", l.target_name, shown_name, l.alias))
                    .collect();
                o.insert("Links".into(), json!(shown));
            }
        }
        let spec = cpb::ContainerSpec {
            id: id.clone(),
            name: name.clone(),
            image_ref: image_ref.clone(),
            image_id: image.id.clone(),
            args,
            env: process_env,
            working_dir: working_dir.clone(),
            user: user.clone(),
            hostname: hostname.clone(),
            tty,
            open_stdin,
            rootfs_path: snap.rootfs_path.clone(),
            netns_path: endpoint.netns_path.clone(),
            mounts,
            labels: labels.clone().into_iter().collect(),
            auto_remove,
            config_json: config_json.to_string().into_bytes(),
            host_config_json: hc.to_string().into_bytes(),
            network_settings_json: json!({
                "settings": crate::networks::network_settings(&shown, &network_mode, &exposed),
                "mounts": mounts_json,
                "exposed": exposed,
            })
            .to_string()
            .into_bytes(),
            hosts_file: if let Some(t) = &joined {
                t.hosts_file.clone()
            } else if host_net {
                String::new()
            } else {
                hosts_file(&endpoint.ip_address, &hostname, &extra_hosts)
            },
            resolv_conf: if let Some(t) = &joined {
                t.resolv_conf.clone()
            } else if host_net {
                host_resolv
            } else {
                crate::networks::resolv_conf(
                    &host_resolv,
                    embedded_dns,
                    &dns_servers,
                    &dns_search,
                    &dns_options,
                )
            },
            memory_bytes: host_config
                .get("Memory")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            pids_limit: host_config
                .get("PidsLimit")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .max(0),
            stop_signal,
            stop_timeout: req
                .get("StopTimeout")
                .and_then(Value::as_i64)
                .map(|t| t as i32)
                .unwrap_or(-1),
            log_driver,
            restart_policy,
            restart_max_retries,
        };
        call(
            CONTAINERD,
            s.containers.create(cpb::CreateRequest { spec: Some(spec) }),
        )
        .await
    }
    .await;
    match result {
        Ok(_) => Ok((
            StatusCode::CREATED,
            Json(json!({"Id": id, "Warnings": warnings})),
        )
            .into_response()),
        Err(e) => {
            undo(&st.services, &id, reserved).await;
            Err(e)
        }
    }
}

/// Looks a container up by id, id prefix or name; 404 `No such container: x`.
pub async fn get_container(st: &AppState, id: &str) -> Result<cpb::Container, ApiError> {
    let mut c = st.services.containers.clone();
    call(CONTAINERD, c.get(cpb::GetRequest { id: id.to_string() })).await
}

fn spec_of(c: &cpb::Container) -> cpb::ContainerSpec {
    c.spec.clone().unwrap_or_default()
}

pub fn json_bytes(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

/// Docker's `Status` text for `docker ps`.
/// The container's `State.Health` (None without a healthcheck).
fn health_of(c: &cpb::Container) -> Option<Value> {
    if c.health_json.is_empty() {
        return None;
    }
    serde_json::from_str(&c.health_json).ok()
}

/// A container's health status for ps and filters: "starting", "healthy", "unhealthy",
/// or "none".
fn health_status(c: &cpb::Container) -> String {
    health_of(c)
        .and_then(|h| h.get("Status").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "none".into())
}

/// Docker's merge of the user's healthcheck over the image's: no healthcheck, or an empty
/// test, takes the image's; zero durations and retries take the image's values.
pub fn merge_healthcheck(user: Option<&Value>, image: Option<&Value>) -> Value {
    let (user, image) = (
        user.filter(|v| v.is_object()),
        image.filter(|v| v.is_object()),
    );
    let Some(user) = user else {
        return image.cloned().unwrap_or(Value::Null);
    };
    let mut out = user.clone();
    if let (Some(o), Some(img)) = (out.as_object_mut(), image) {
        let empty_test = o
            .get("Test")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if empty_test && let Some(t) = img.get("Test") {
            o.insert("Test".into(), t.clone());
        }
        for k in [
            "Interval",
            "Timeout",
            "StartPeriod",
            "StartInterval",
            "Retries",
        ] {
            let zero = o.get(k).and_then(Value::as_i64).unwrap_or(0) == 0;
            if zero && let Some(v) = img.get(k) {
                o.insert(k.into(), v.clone());
            }
        }
    }
    out
}

/// dockerd's limits on a healthcheck's durations (nanoseconds): 0 means the default,
/// anything else must be at least 1 ms; retries cannot be negative.
fn checked_healthcheck(h: Value) -> Result<Value, ApiError> {
    for k in ["Interval", "Timeout", "StartPeriod", "StartInterval"] {
        let v = h.get(k).and_then(Value::as_i64).unwrap_or(0);
        if v != 0 && v < 1_000_000 {
            // Docker's wording.
            return Err(ApiError::bad_request(format!(
                "{k} in Healthcheck cannot be less than 1ms"
            )));
        }
    }
    if h.get("Retries").and_then(Value::as_i64).unwrap_or(0) < 0 {
        return Err(ApiError::bad_request(
            "Retries in Healthcheck cannot be negative",
        ));
    }
    Ok(h)
}

pub fn status_text(c: &cpb::Container, now: chrono::DateTime<chrono::Utc>) -> String {
    match c.state.as_str() {
        "running" => {
            let since = parse_time(&c.started_at)
                .map(|t| now - t)
                .unwrap_or_default();
            match health_status(c).as_str() {
                "none" => format!("Up {}", human_duration(since)),
                "starting" => format!("Up {} (health: starting)", human_duration(since)),
                h => format!("Up {} ({h})", human_duration(since)),
            }
        }
        "paused" => {
            let since = parse_time(&c.started_at)
                .map(|t| now - t)
                .unwrap_or_default();
            format!("Up {} (Paused)", human_duration(since))
        }
        "exited" => match parse_time(&c.finished_at) {
            Some(t) => format!("Exited ({}) {} ago", c.exit_code, human_duration(now - t)),
            None => format!("Exited ({})", c.exit_code),
        },
        "created" => "Created".into(),
        "removing" => "Removal In Progress".into(),
        "dead" => "Dead".into(),
        "restarting" => match parse_time(&c.finished_at) {
            Some(t) => format!(
                "Restarting ({}) {} ago",
                c.exit_code,
                human_duration(now - t)
            ),
            None => format!("Restarting ({})", c.exit_code),
        },
        other => other.to_string(),
    }
}

fn command_text(args: &[String]) -> String {
    args.join(" ")
}

pub fn summary_json(c: &cpb::Container, now: chrono::DateTime<chrono::Utc>) -> Value {
    let spec = spec_of(c);
    let hc = json_bytes(&spec.host_config_json);
    let ns = json_bytes(&spec.network_settings_json);
    json!({
        "Id": spec.id,
        "Names": [format!("/{}", spec.name)],
        "Image": spec.image_ref,
        "ImageID": spec.image_id,
        "Command": command_text(&spec.args),
        "Created": parse_time(&c.created).map(|t| t.timestamp()).unwrap_or(0),
        "Ports": ports_of_settings(ns.pointer("/settings/Ports")),
        "Labels": spec.labels,
        "State": c.state,
        "Status": status_text(c, now),
        "HostConfig": {"NetworkMode": hc.get("NetworkMode").cloned().unwrap_or(json!("bridge"))},
        "NetworkSettings": {"Networks": ns.pointer("/settings/Networks").cloned().unwrap_or(json!({}))},
        "Mounts": ns.get("mounts").cloned().unwrap_or(json!([])),
    })
}

/// `docker ps`'s Ports list from a stored `Ports` map (published ports are fixed at create).
fn ports_of_settings(ports: Option<&Value>) -> Value {
    let mut out = Vec::new();
    for (key, bindings) in ports.and_then(Value::as_object).into_iter().flatten() {
        let Ok((port, proto)) = crate::networks::parse_port_key(key) else {
            continue;
        };
        match bindings.as_array() {
            Some(list) => {
                for b in list {
                    out.push(json!({
                        "IP": b.get("HostIp").cloned().unwrap_or(json!("0.0.0.0")),
                        "PrivatePort": port,
                        "PublicPort": b.get("HostPort").and_then(Value::as_str).and_then(|p| p.parse::<u16>().ok()).unwrap_or(0),
                        "Type": proto,
                    }));
                }
            }
            None => out.push(json!({"PrivatePort": port, "Type": proto})),
        }
    }
    Value::Array(out)
}

fn matches_filters(
    c: &cpb::Container,
    filters: &BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Result<bool, ApiError> {
    let spec = spec_of(c);
    for (key, vals) in filters {
        if vals.is_empty() {
            continue;
        }
        let ok = match key.as_str() {
            "id" => vals.iter().any(|v| spec.id.starts_with(v.as_str())),
            "name" => vals
                .iter()
                .any(|v| spec.name.contains(v.trim_start_matches('/'))),
            "status" => {
                for v in vals {
                    if !matches!(
                        v.as_str(),
                        "created"
                            | "restarting"
                            | "running"
                            | "removing"
                            | "paused"
                            | "exited"
                            | "dead"
                    ) {
                        return Err(ApiError::bad_request(format!(
                            "invalid filter 'status={v}'"
                        )));
                    }
                }
                vals.contains(&c.state)
            }
            "label" => vals.iter().all(|v| match v.split_once('=') {
                Some((k, val)) => spec.labels.get(k).is_some_and(|x| x == val),
                None => spec.labels.contains_key(v),
            }),
            "exited" => {
                c.state == "exited"
                    && vals
                        .iter()
                        .any(|v| v.parse::<i32>().ok() == Some(c.exit_code))
            }
            "ancestor" => vals
                .iter()
                .any(|v| spec.image_ref == *v || spec.image_id.contains(v.as_str())),
            "health" => {
                for v in vals {
                    if !matches!(v.as_str(), "starting" | "healthy" | "unhealthy" | "none") {
                        // Docker's wording.
                        return Err(ApiError::bad_request(format!(
                            "Unrecognised filter value for health: {v}"
                        )));
                    }
                }
                vals.contains(&health_status(c))
            }
            other => return Err(ApiError::bad_request(format!("invalid filter '{other}'"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `POST /containers/prune?filters=`: every stopped container (exited, created, dead).
pub async fn prune(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filters = parse_filters(&q)?;
    if let Some(k) = filters
        .keys()
        .find(|k| !matches!(k.as_str(), "label" | "label!" | "until"))
    {
        return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
    }
    let until = crate::util::until_filter(&filters)?;
    let mut c = st.services.containers.clone();
    let list = call(CONTAINERD, c.list(cpb::ListRequest { all: true }))
        .await?
        .containers;
    // Measured before removal: the space reclaimed is what the removed ones wrote.
    let sizes = crate::df::container_sizes(&st).await?;
    let mut reclaimed = 0i64;
    let mut deleted = Vec::new();
    for ctr in list {
        if !matches!(ctr.state.as_str(), "exited" | "created" | "dead") {
            continue;
        }
        let spec = spec_of(&ctr);
        let labelled = crate::util::labels_pass(&filters, |k, v| match v {
            Some(v) => spec.labels.get(k).is_some_and(|x| x == v),
            None => spec.labels.contains_key(k),
        });
        if !labelled {
            continue;
        }
        let created = parse_time(&ctr.created)
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(0);
        if until > 0 && created >= until {
            continue;
        }
        match remove_container(&st, &spec.id, false, false).await {
            Ok(()) => {
                reclaimed += sizes.get(&spec.id).map_or(0, |s| s.0.max(0));
                deleted.push(spec.id.clone());
            }
            // Started again meanwhile: it stays.
            Err(e) if e.status == StatusCode::CONFLICT => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Json(
        json!({"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}

/// `GET /containers/json?all=&limit=&filters=`.
pub async fn list(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filters = parse_filters(&q)?;
    let limit: i64 = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(-1);
    let all = query_bool(&q, "all")
        || limit > 0
        || filters.contains_key("status")
        || filters.contains_key("exited");
    let mut c = st.services.containers.clone();
    let mut list = call(CONTAINERD, c.list(cpb::ListRequest { all }))
        .await?
        .containers;
    list.sort_by(|a, b| b.created.cmp(&a.created));
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for ctr in &list {
        if matches_filters(ctr, &filters)? {
            out.push(summary_json(ctr, now));
        }
    }
    if limit > 0 {
        out.truncate(limit as usize);
    }
    if query_bool(&q, "size") {
        // `docker ps -s`: what each container wrote, and that plus its image.
        let sizes = crate::df::container_sizes(&st).await?;
        for c in &mut out {
            let id = c["Id"].as_str().unwrap_or_default().to_string();
            let (rw, root) = sizes.get(&id).copied().unwrap_or((0, 0));
            c["SizeRw"] = json!(rw);
            c["SizeRootFs"] = json!(root);
        }
    }
    Ok(Json(Value::Array(out)))
}

/// The JSON of `docker inspect <container>`.
pub fn inspect_json(c: &cpb::Container, log_path: &str) -> Value {
    let spec = spec_of(c);
    let ns = json_bytes(&spec.network_settings_json);
    let time_or_zero = |s: &str| {
        if s.is_empty() {
            ZERO_TIME.to_string()
        } else {
            s.to_string()
        }
    };
    let mut out = json!({
        "Id": spec.id,
        "Created": c.created,
        "Path": spec.args.first().cloned().unwrap_or_default(),
        "Args": spec.args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": c.state,
            "Running": c.state == "running" || c.state == "paused",
            "Paused": c.state == "paused",
            "Restarting": c.state == "restarting",
            "OOMKilled": c.oom_killed,
            "Dead": c.state == "dead",
            "Pid": if c.state == "running" || c.state == "paused" { c.pid } else { 0 },
            "ExitCode": c.exit_code,
            "Error": c.error,
            "StartedAt": time_or_zero(&c.started_at),
            "FinishedAt": time_or_zero(&c.finished_at),
        },
        "Image": spec.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": log_path,
        "Name": format!("/{}", spec.name),
        "RestartCount": c.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": json_bytes(&spec.host_config_json),
        "GraphDriver": {"Name": "overlay2", "Data": {"MergedDir": spec.rootfs_path}},
        "Mounts": ns.get("mounts").cloned().unwrap_or(json!([])),
        "Config": json_bytes(&spec.config_json),
        "NetworkSettings": ns.get("settings").cloned().unwrap_or(Value::Null),
    });
    // Docker leaves Health out (not null) when there is no healthcheck.
    if let (Some(h), Some(state)) = (
        health_of(c),
        out.get_mut("State").and_then(Value::as_object_mut),
    ) {
        state.insert("Health".into(), h);
    }
    out
}

/// `GET /containers/{id}/json`.
pub async fn inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    api: Option<axum::Extension<crate::RequestedApi>>,
) -> Result<Json<Value>, ApiError> {
    let c = get_container(&st, &id).await?;
    let spec = spec_of(&c);
    let log_path = if spec.log_driver == "json-file" {
        st.info
            .roots
            .service_dir("logd")
            .join("containers")
            .join(&spec.id)
            .join(format!("{}-json.log", spec.id))
            .display()
            .to_string()
    } else {
        String::new()
    };
    let mut doc = inspect_json(&c, &log_path);
    let stored = json_bytes(&spec.network_settings_json);
    let mode = json_bytes(&spec.host_config_json)
        .get("NetworkMode")
        .and_then(Value::as_str)
        .unwrap_or("bridge")
        .to_string();
    if mode != "host"
        && let Some(eps) = crate::networks::live_endpoints(&st, &spec.id).await
    {
        doc["NetworkSettings"] =
            crate::networks::network_settings(&eps, &mode, &exposed_of(&stored));
    }
    if api.is_some_and(|a| a.0.0 < (1, 45)) {
        // Before API 1.45 dockerd listed the container's short ID among the aliases of
        // its endpoints on user-defined networks (clients of that era expect it).
        let short = &spec.id[..spec.id.len().min(12)];
        if let Some(nets) = doc
            .pointer_mut("/NetworkSettings/Networks")
            .and_then(Value::as_object_mut)
        {
            for (name, ep) in nets.iter_mut() {
                if crate::networks::is_predefined(name) || ep["NetworkID"] == "" {
                    continue;
                }
                let mut aliases: Vec<Value> = ep["Aliases"].as_array().cloned().unwrap_or_default();
                if !aliases.iter().any(|a| a == short) {
                    aliases.push(json!(short));
                }
                ep["Aliases"] = json!(aliases);
            }
        }
    }
    Ok(Json(doc))
}

pub fn exposed_of(network_settings_json: &Value) -> Vec<String> {
    network_settings_json
        .get("exposed")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /containers/{id}/start`: 204, or 304 when already running.
pub async fn start(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = get_container(&st, &id).await?;
    let spec = spec_of(&c);
    let mut client = st.services.containers.clone();
    match call_within(
        CONTAINERD,
        Duration::from_secs(60),
        client.start(cpb::StartRequest {
            id: spec.id.clone(),
        }),
    )
    .await
    {
        Ok(r) if r.already_running => Ok(StatusCode::NOT_MODIFIED.into_response()),
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => {
            // Docker removes an auto-remove container whose start failed.
            if spec.auto_remove {
                let st2 = st.clone();
                tokio::spawn(async move {
                    if let Err(e) = remove_container(&st2, &spec.id, true, true).await {
                        tracing::warn!(container = %spec.id, "auto-remove after failed start: {e}");
                    }
                });
            }
            Err(e)
        }
    }
}

fn stop_timeout_param(q: &HashMap<String, String>) -> Result<i32, ApiError> {
    match q.get("t").or_else(|| q.get("timeout")) {
        None => Ok(-1),
        Some(t) if t.is_empty() => Ok(-1),
        Some(t) => t
            .parse::<i32>()
            .map_err(|_| ApiError::bad_request(format!("invalid timeout: {t}"))),
    }
}

fn stop_deadline(timeout: i32) -> Duration {
    Duration::from_secs(timeout.max(10) as u64 + 15)
}

/// `POST /containers/{id}/stop?t=&signal=`: 204, or 304 when already stopped.
pub async fn stop(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let c = get_container(&st, &id).await?;
    let timeout = stop_timeout_param(&q)?;
    let mut client = st.services.containers.clone();
    let r = call_within(
        CONTAINERD,
        stop_deadline(timeout),
        client.stop(cpb::StopRequest {
            id: spec_of(&c).id,
            timeout_seconds: timeout,
            signal: q.get("signal").cloned().unwrap_or_default(),
        }),
    )
    .await?;
    if !r.already_stopped {
        container_event(&st, &c, "stop", &[]).await;
    }
    Ok(if r.already_stopped {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::NO_CONTENT
    }
    .into_response())
}

/// Emits a container event from the gateway (the ones containerd-svc does not see).
pub async fn container_event(
    st: &AppState,
    c: &cpb::Container,
    action: &str,
    extra: &[(&str, &str)],
) {
    let spec = spec_of(c);
    let mut attrs = crate::events::container_attributes(&spec.name, &spec.image_ref, &spec.labels);
    for (k, v) in extra {
        attrs.insert(k.to_string(), v.to_string());
    }
    st.events.emit("container", action, &spec.id, attrs).await;
}

/// `POST /containers/{id}/rename?name=`: containerd-svc renames (and emits the event),
/// then netd's DNS answers to the new name.
pub async fn rename(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let name = q.get("name").map(String::as_str).unwrap_or("");
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "Neither old nor new names may be empty",
        ));
    }
    // As dockerd: an unknown container is reported before a bad new name.
    let current = spec_of(&get_container(&st, &id).await?);
    let (id, old_name) = (current.id, current.name);
    if !valid_container_name(name.trim_start_matches('/')) {
        return Err(ApiError::bad_request(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    let mut c = st.services.containers.clone();
    let renamed = call(
        CONTAINERD,
        c.rename(cpb::RenameRequest {
            id,
            name: name.to_string(),
        }),
    )
    .await?;
    let spec = spec_of(&renamed);
    let mut n = st.services.networks.clone();
    let dns = call(
        NETD,
        n.rename_container(npb::RenameContainerRequest {
            container_id: spec.id.clone(),
            name: spec.name,
        }),
    )
    .await;
    if let Err(e) = dns {
        // The DNS still answers to the old name: so does the container again.
        let undo = c.rename(cpb::RenameRequest {
            id: spec.id,
            name: old_name,
        });
        if let Err(u) = call(CONTAINERD, undo).await {
            tracing::warn!("undoing a rename: {}", u.message);
        }
        return Err(e);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/update`: new resource limits or restart policy.
pub async fn update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    if req.get("RestartPolicy").is_some() {
        restart_policy(&req, false)?;
    }
    let c = get_container(&st, &id).await?;
    let mut client = st.services.containers.clone();
    let out = call(
        CONTAINERD,
        client.update(cpb::UpdateRequest {
            id: spec_of(&c).id,
            host_config_json: body.to_vec(),
        }),
    )
    .await?;
    container_event(&st, &c, "update", &[]).await;
    Ok(Json(json!({"Warnings": out.warnings})))
}

/// `POST /containers/{id}/pause` and `/unpause` (events come from containerd-svc).
pub async fn pause(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut c = st.services.containers.clone();
    call(CONTAINERD, c.pause(cpb::PauseRequest { id })).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unpause(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut c = st.services.containers.clone();
    call(CONTAINERD, c.unpause(cpb::PauseRequest { id })).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/restart?t=`.
pub async fn restart(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let c = get_container(&st, &id).await?;
    let id = spec_of(&c).id;
    let timeout = stop_timeout_param(&q)?;
    let mut client = st.services.containers.clone();
    call_within(
        CONTAINERD,
        stop_deadline(timeout),
        client.stop(cpb::StopRequest {
            id: id.clone(),
            timeout_seconds: timeout,
            signal: q.get("signal").cloned().unwrap_or_default(),
        }),
    )
    .await?;
    call_within(
        CONTAINERD,
        Duration::from_secs(60),
        client.start(cpb::StartRequest { id }),
    )
    .await?;
    container_event(&st, &c, "restart", &[]).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The OCI runtimes `docker info` lists and `--runtime` accepts. Clients expect Docker's
/// default, `runc`: here it names berth-shim, which runs containers with youki's
/// libcontainer (an OCI runtime).
pub const RUNTIMES: [&str; 2] = ["runc", "berth-shim"];
/// The runtime of a container created without `--runtime`.
pub const DEFAULT_RUNTIME: &str = "runc";

/// `POST /containers/{id}/kill?signal=`.
pub async fn kill(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let c = get_container(&st, &id).await?;
    let mut client = st.services.containers.clone();
    let signal = q.get("signal").cloned().unwrap_or_default();
    call(
        CONTAINERD,
        client.kill(cpb::KillRequest {
            id: spec_of(&c).id,
            signal: signal.clone(),
        }),
    )
    .await?;
    let shown = if signal.is_empty() {
        "SIGKILL".to_string()
    } else {
        signal
    };
    container_event(&st, &c, "kill", &[("signal", &shown)]).await;
    let sigkill = matches!(
        shown.to_ascii_uppercase().trim_start_matches("SIG"),
        "KILL" | "9"
    );
    if sigkill {
        // As dockerd: a SIGKILL answers once the container is no longer running (a
        // `rm` right after `kill` must not find it running), waiting at most 10 s.
        let wait = client.wait(cpb::WaitRequest {
            id: spec_of(&c).id,
            condition: "not-running".into(),
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/wait?condition=`. The status line and headers go out at once
/// (the CLI sends `start` only after they arrive); the body follows when the condition
/// holds. A containerd-svc restart in between is ridden out by asking again.
pub async fn wait(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let condition = q
        .get("condition")
        .cloned()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "not-running".into());
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad_request(format!(
            "invalid condition: \"{condition}\""
        )));
    }
    let c = get_container(&st, &id).await?;
    let full_id = spec_of(&c).id;
    let mut client = st.services.containers.clone();
    let removing = st.removing.clone();
    let fut = async move {
        let mut cond = condition;
        let mut last_code = c.exit_code;
        loop {
            let req = cpb::WaitRequest {
                id: full_id.clone(),
                condition: cond.clone(),
            };
            match client.wait(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if cond == "removed" {
                        removing.finished(&full_id).await;
                    }
                    let err = if r.error.is_empty() {
                        Value::Null
                    } else {
                        json!({"Message": r.error})
                    };
                    return Ok::<_, std::io::Error>(
                        json!({"StatusCode": r.exit_code, "Error": err}).to_string() + "\n",
                    );
                }
                Err(s) if s.code() == tonic::Code::NotFound && cond == "removed" => {
                    removing.finished(&full_id).await;
                    return Ok(json!({"StatusCode": last_code, "Error": null}).to_string() + "\n");
                }
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                    ) =>
                {
                    // The exit may happen while we reconnect: from now on, any stopped
                    // state satisfies a next-exit wait.
                    if cond == "next-exit" {
                        cond = "not-running".into();
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if let Ok(c) = client
                        .get(cpb::GetRequest {
                            id: full_id.clone(),
                        })
                        .await
                    {
                        last_code = c.into_inner().exit_code;
                    }
                }
                Err(s) => {
                    let e = ApiError::from_status(CONTAINERD, s);
                    return Ok(json!({"StatusCode": -1, "Error": {"Message": e.message}})
                        .to_string()
                        + "\n");
                }
            }
        }
    };
    let mut resp = Response::new(Body::from_stream(futures_util::stream::once(fut)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// The container ids whose removal this gateway has under way, and a signal at the end
/// of each (a `wait --condition=removed` answers the moment the last one ends).
#[derive(Default)]
pub struct Removals {
    under_way: std::sync::Mutex<HashMap<String, usize>>,
    ended: tokio::sync::Notify,
}

impl Removals {
    fn under_way(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.under_way
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits (at most a minute) until no removal of `id` is under way.
    async fn finished(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the check: an end between the two is not missed.
            ended.as_mut().enable();
            if !self.under_way().contains_key(id) {
                return;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return;
            }
        }
    }
}

/// Marks a container id as being removed for as long as it lives.
struct RemovalInProgress {
    removals: std::sync::Arc<Removals>,
    id: String,
}

impl RemovalInProgress {
    fn begin(st: &AppState, id: &str) -> Self {
        *st.removing.under_way().entry(id.to_string()).or_default() += 1;
        Self {
            removals: st.removing.clone(),
            id: id.to_string(),
        }
    }
}

impl Drop for RemovalInProgress {
    fn drop(&mut self) {
        {
            let mut m = self.removals.under_way();
            if let Some(n) = m.get_mut(&self.id) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.id);
                }
            }
        }
        self.removals.ended.notify_waiters();
    }
}

/// Removes a container and releases what the other services hold for it. Shared by
/// `DELETE /containers/{id}` and the auto-remove reaper.
pub async fn remove_container(
    st: &AppState,
    id: &str,
    force: bool,
    remove_volumes: bool,
) -> Result<(), ApiError> {
    let _removing = RemovalInProgress::begin(st, id);
    let mut s = st.services.clone();
    let removed = call_within(
        CONTAINERD,
        Duration::from_secs(40),
        s.containers.remove(cpb::RemoveRequest {
            id: id.to_string(),
            force,
        }),
    )
    .await?;
    let full_id = removed
        .container
        .and_then(|c| c.spec)
        .map(|sp| sp.id)
        .unwrap_or_else(|| id.to_string());
    let _removing_full = RemovalInProgress::begin(st, &full_id);
    // The four releases are independent of one another: done side by side, each to the
    // end (one failing does not stop the others; the orphan sweep retries what is left).
    let (mut nets, mut images, mut logs, mut volumes) = (
        s.networks.clone(),
        s.images.clone(),
        s.logs.clone(),
        s.volumes.clone(),
    );
    let (net, image, log, volume) = tokio::join!(
        call(
            NETD,
            nets.remove_endpoint(npb::RemoveEndpointRequest {
                container_id: full_id.clone(),
                network: String::new(),
            }),
        ),
        call(
            IMAGED,
            images.remove_snapshot(ipb::RemoveSnapshotRequest {
                container_id: full_id.clone(),
            }),
        ),
        call(
            LOGD,
            logs.remove(lpb::RemoveRequest {
                container_id: full_id.clone(),
            }),
        ),
        call(
            VOLUMED,
            volumes.detach_container(vpb::DetachContainerRequest {
                container_id: full_id.clone(),
                remove_anonymous: remove_volumes,
            }),
        ),
    );
    net?;
    image?;
    log?;
    volume?;
    Ok(())
}

/// `DELETE /containers/{id}?force=&v=&link=`.
pub async fn remove(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    if query_bool(&q, "link") {
        return Err(ApiError::not_supported("removing links (docker rm --link)"));
    }
    let c = get_container(&st, &id).await?;
    let spec = spec_of(&c);
    let force = query_bool(&q, "force");
    // Docker's wording per state (containerd-svc checks again under its lock).
    let refusal = match c.state.as_str() {
        "running" | "restarting" => Some(format!(
            "container is {}: stop the container before removing or force remove",
            c.state
        )),
        "paused" => Some("container is paused and must be unpaused first".to_string()),
        _ => None,
    };
    if let Some(why) = refusal.filter(|_| !force) {
        return Err(ApiError::conflict(format!(
            "cannot remove container \"/{}\": {why}",
            spec.name
        )));
    }
    remove_container(&st, &spec.id, force, query_bool(&q, "v")).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_docker_rules() {
        assert!(valid_container_name("web"));
        assert!(valid_container_name("a1_b.c-d"));
        assert!(!valid_container_name("w"));
        assert!(!valid_container_name("_web"));
        assert!(!valid_container_name("we b"));
        assert!(!valid_container_name(""));
    }

    #[test]
    fn env_overrides_by_key() {
        let e = merge_env(
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
        );
        assert_eq!(e, vec!["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn command_merge_matches_docker() {
        let v = |s: &[&str]| Some(s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        // Request cmd replaces image cmd.
        assert_eq!(
            effective_command(None, v(&["echo"]), None, v(&["sh"])),
            (None, v(&["echo"]))
        );
        // No request cmd: image cmd.
        assert_eq!(
            effective_command(None, None, None, v(&["sh"])),
            (None, v(&["sh"]))
        );
        // Request entrypoint drops the image cmd.
        assert_eq!(
            effective_command(v(&["ls"]), None, v(&["x"]), v(&["sh"])),
            (v(&["ls"]), None)
        );
        // Empty string entrypoint resets it.
        assert_eq!(
            effective_command(v(&[""]), v(&["a"]), v(&["x"]), None),
            (None, v(&["a"]))
        );
    }

    #[test]
    fn healthchecks_merge_over_the_images() {
        let image = json!({"Test": ["CMD", "img-probe"], "Interval": 5, "Retries": 7});
        assert_eq!(merge_healthcheck(None, Some(&image)), image);
        let user = json!({"Test": ["CMD-SHELL", "mine"], "Interval": 0, "Timeout": 9});
        let m = merge_healthcheck(Some(&user), Some(&image));
        assert_eq!(m["Test"], json!(["CMD-SHELL", "mine"]));
        assert_eq!(
            (m["Interval"].clone(), m["Timeout"].clone()),
            (json!(5), json!(9))
        );
        assert_eq!(m["Retries"], 7);
        // Only durations: the test comes from the image.
        let m = merge_healthcheck(Some(&json!({"Interval": 3})), Some(&image));
        assert_eq!(m["Test"], json!(["CMD", "img-probe"]));
        assert_eq!(m["Interval"], 3);
        // --no-healthcheck wins over the image's.
        let none = json!({"Test": ["NONE"]});
        assert_eq!(
            merge_healthcheck(Some(&none), Some(&image))["Test"],
            json!(["NONE"])
        );
        assert_eq!(merge_healthcheck(None, None), Value::Null);
    }

    #[test]
    fn status_text_matches_docker() {
        let now = chrono::Utc::now();
        let mut c = cpb::Container {
            state: "created".into(),
            ..Default::default()
        };
        assert_eq!(status_text(&c, now), "Created");
        c.state = "running".into();
        c.started_at = crate::util::rfc3339_nanos(now - chrono::Duration::seconds(5));
        assert_eq!(status_text(&c, now), "Up 5 seconds");
        c.state = "exited".into();
        c.exit_code = 3;
        c.finished_at = crate::util::rfc3339_nanos(now - chrono::Duration::seconds(180));
        assert_eq!(status_text(&c, now), "Exited (3) 3 minutes ago");
    }

    #[test]
    fn hosts_file_names_the_container_and_extra_hosts() {
        let extra = extra_hosts(
            &["db:10.0.0.5".into(), "gw:host-gateway".into()],
            "172.29.0.1",
        )
        .unwrap();
        let h = hosts_file("172.29.0.2", "abc", &extra);
        assert!(h.contains("127.0.0.1\tlocalhost"));
        assert!(h.contains("10.0.0.5\tdb\n"));
        assert!(h.contains("172.29.0.1\tgw\n"));
        assert!(h.ends_with("172.29.0.2\tabc\n"));
        assert!(extra_hosts(&["nocolon".into()], "").is_err());
        assert!(extra_hosts(&["x:notanip".into()], "").is_err());
        assert!(extra_hosts(&["x:host-gateway".into()], "").is_err());
    }
}
