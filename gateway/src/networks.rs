//! `docker network ...` and the network parts of containers (NetworkSettings, published
//! ports, resolv.conf for the embedded DNS), over netd.

use crate::AppState;
use crate::containers::get_container;
use crate::error::ApiError;
use crate::services::{NETD, call, call_within};
use crate::util::{ZERO_TIME, parse_filters};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_proto::networks as npb;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// The networks every engine has; they cannot be created, removed or pruned.
pub fn is_predefined(name: &str) -> bool {
    matches!(name, "bridge" | "host" | "none")
}

/// The IPAM object of inspect: as the client gave it at create (dockerd shows it back:
/// null where it sent null), the allocated subnet and gateway filling what it left out.
fn ipam_json(n: &npb::Network, allocated: Value) -> Value {
    let given: Value = serde_json::from_str(&n.ipam_json).unwrap_or(Value::Null);
    let Some(given) = given.as_object() else {
        return json!({"Driver": "default", "Options": {}, "Config": allocated});
    };
    let driver = given
        .get("Driver")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .unwrap_or("default");
    let mut config: Vec<Value> = given
        .get("Config")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Fields given as null are left out, as dockerd's omitempty leaves them.
    for c in &mut config {
        if let Some(o) = c.as_object_mut() {
            o.retain(|_, v| !v.is_null());
        }
    }
    match (config.first_mut(), allocated.get(0)) {
        (Some(first), Some(a)) => {
            for k in ["Subnet", "Gateway"] {
                if first.get(k).is_none() {
                    first[k] = a[k].clone();
                }
            }
        }
        (None, Some(_)) => config = allocated.as_array().cloned().unwrap_or_default(),
        _ => {}
    }
    json!({
        "Driver": driver,
        "Options": given.get("Options").cloned().unwrap_or(Value::Null),
        "Config": config,
    })
}

/// `docker network inspect`'s document. `endpoints` fills `Containers`.
pub fn network_json(n: &npb::Network, endpoints: &[npb::Endpoint]) -> Value {
    let config = if n.subnet.is_empty() {
        json!([])
    } else {
        let mut c = json!({"Subnet": n.subnet, "Gateway": n.gateway});
        if !n.ip_range.is_empty() {
            c["IPRange"] = json!(n.ip_range);
        }
        json!([c])
    };
    let mut options: Map<String, Value> = n
        .options
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if n.name == "bridge" && !n.bridge.is_empty() {
        options.insert("com.docker.network.bridge.name".into(), json!(n.bridge));
    }
    let containers: Map<String, Value> = endpoints
        .iter()
        .filter(|e| e.network_id == n.id)
        .map(|e| {
            (
                e.container_id.clone(),
                json!({
                    "Name": e.container_name,
                    "EndpointID": e.endpoint_id,
                    "MacAddress": e.mac_address,
                    "IPv4Address": if e.ip_address.is_empty() { String::new() } else { format!("{}/{}", e.ip_address, e.prefix_len) },
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": if n.created.is_empty() { ZERO_TIME.to_string() } else { n.created.clone() },
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": ipam_json(n, config),
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": n.labels,
    })
}

fn network_matches(
    n: &npb::Network,
    filters: &BTreeMap<String, BTreeSet<String>>,
    in_use: &BTreeSet<String>,
) -> Result<bool, ApiError> {
    for (key, vals) in filters {
        if vals.is_empty() {
            continue;
        }
        let ok = match key.as_str() {
            "name" => vals.iter().any(|v| n.name.contains(v.as_str())),
            "id" => vals.iter().any(|v| n.id.starts_with(v.as_str())),
            "driver" => vals.contains(&n.driver),
            "scope" => vals.contains("local"),
            "type" => vals.iter().all(|v| match v.as_str() {
                "custom" => !is_predefined(&n.name),
                "builtin" => is_predefined(&n.name),
                _ => false,
            }),
            "label" | "label!" => crate::util::labels_pass(filters, |k, v| match v {
                Some(v) => n.labels.get(k).is_some_and(|x| x == v),
                None => n.labels.contains_key(k),
            }),
            "dangling" => vals.iter().all(|v| match v.as_str() {
                "true" | "1" => !in_use.contains(&n.id) && !is_predefined(&n.name),
                "false" | "0" => in_use.contains(&n.id) || is_predefined(&n.name),
                _ => false,
            }),
            "until" => true,
            other => {
                return Err(ApiError::bad_request(format!("invalid filter '{other}'")));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A network by name, full id or unique id prefix (404 `network x not found`).
async fn network(st: &AppState, name_or_id: String) -> Result<npb::Network, ApiError> {
    let mut c = st.services.networks.clone();
    call(NETD, c.get_network(npb::GetNetworkRequest { name_or_id })).await
}

async fn all_endpoints(st: &AppState) -> Result<Vec<npb::Endpoint>, ApiError> {
    let mut c = st.services.networks.clone();
    Ok(
        call(NETD, c.list_endpoints(npb::ListEndpointsRequest::default()))
            .await?
            .endpoints,
    )
}

/// `GET /networks?filters=`.
pub async fn list(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filters = parse_filters(&q)?;
    let mut c = st.services.networks.clone();
    let list = call(NETD, c.list_networks(npb::ListNetworksRequest {})).await?;
    let eps = all_endpoints(&st).await?;
    let in_use: BTreeSet<String> = eps.iter().map(|e| e.network_id.clone()).collect();
    let mut out = Vec::new();
    for n in &list.networks {
        if network_matches(n, &filters, &in_use)? {
            // `docker network ls` leaves Containers empty, as dockerd does.
            out.push(network_json(n, &[]));
        }
    }
    Ok(Json(Value::Array(out)))
}

/// `GET /networks/{id}`.
pub async fn inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut c = st.services.networks.clone();
    let n = network(&st, id).await?;
    let eps = call(
        NETD,
        c.list_endpoints(npb::ListEndpointsRequest {
            network: n.id.clone(),
            container_id: String::new(),
        }),
    )
    .await?
    .endpoints;
    Ok(Json(network_json(&n, &eps)))
}

/// `POST /networks/create`.
pub async fn create(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    // Every field may come as null (docker-py sends them so).
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "PascalCase")]
    struct IpamConfig {
        subnet: Option<String>,
        #[serde(rename = "IPRange")]
        ip_range: Option<String>,
        gateway: Option<String>,
        auxiliary_addresses: Option<HashMap<String, String>>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "PascalCase")]
    struct Ipam {
        driver: Option<String>,
        config: Option<Vec<IpamConfig>>,
        options: Option<HashMap<String, String>>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "PascalCase")]
    struct Req {
        name: String,
        driver: String,
        internal: bool,
        #[serde(rename = "IPAM")]
        ipam: Option<Ipam>,
        #[serde(rename = "EnableIPv6")]
        enable_ipv6: Option<bool>,
        options: Option<HashMap<String, String>>,
        labels: Option<HashMap<String, String>>,
    }
    let req: Req = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    if req.name.is_empty() {
        return Err(ApiError::bad_request("network name must not be empty"));
    }
    // Kept as given, to be shown back by inspect.
    let ipam_given = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("IPAM")
                .filter(|i| i.is_object())
                .map(Value::to_string)
        })
        .unwrap_or_default();
    if req.enable_ipv6 == Some(true) {
        return Err(ApiError::not_supported("IPv6 networks (--ipv6)"));
    }
    let ipam = req.ipam.unwrap_or_default();
    let ipam_driver = ipam.driver.unwrap_or_default();
    if !matches!(ipam_driver.as_str(), "" | "default") {
        return Err(ApiError::not_supported(format!(
            "the {ipam_driver} IPAM driver"
        )));
    }
    if ipam.options.is_some_and(|o| !o.is_empty()) {
        return Err(ApiError::not_supported("IPAM driver options"));
    }
    let configs = ipam.config.unwrap_or_default();
    if configs.len() > 1 {
        return Err(ApiError::not_supported("more than one subnet per network"));
    }
    let cfg = configs.into_iter().next().unwrap_or_default();
    let subnet = cfg.subnet.unwrap_or_default();
    if subnet.contains(':') {
        return Err(ApiError::not_supported("IPv6 subnets"));
    }
    for aux in cfg.auxiliary_addresses.unwrap_or_default().values() {
        if aux.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(ApiError::bad_request(format!(
                "invalid auxiliary address {aux:?}"
            )));
        }
    }
    let mut c = st.services.networks.clone();
    let n = call(
        NETD,
        c.create_network(npb::CreateNetworkRequest {
            name: req.name,
            driver: req.driver,
            subnet,
            gateway: cfg.gateway.unwrap_or_default(),
            ip_range: cfg.ip_range.unwrap_or_default(),
            internal: req.internal,
            labels: req.labels.unwrap_or_default(),
            options: req.options.unwrap_or_default(),
            ipam_json: ipam_given,
        }),
    )
    .await?;
    network_event(&st, "create", &n.id, &n.name, &[]).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": n.id, "Warning": ""})),
    )
        .into_response())
}

/// `DELETE /networks/{id}`.
pub async fn remove(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut c = st.services.networks.clone();
    let n = network(&st, id).await?;
    call(
        NETD,
        c.remove_network(npb::RemoveNetworkRequest {
            name_or_id: n.id.clone(),
        }),
    )
    .await?;
    network_event(&st, "destroy", &n.id, &n.name, &[]).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn network_event(st: &AppState, action: &str, id: &str, name: &str, extra: &[(&str, &str)]) {
    st.events
        .emit("network", action, id, network_attributes(name, extra))
        .await;
}

fn network_attributes(name: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    // Docker's driver names: the predefined host and none networks are not bridges.
    let driver = match name {
        "host" => "host",
        "none" => "null",
        _ => "bridge",
    };
    let mut attrs: BTreeMap<String, String> = [
        ("name".to_string(), name.to_string()),
        ("type".to_string(), driver.to_string()),
    ]
    .into();
    for (k, v) in extra {
        attrs.insert(k.to_string(), v.to_string());
    }
    attrs
}

/// A network `connect` event when a container starts and `disconnect` when it dies, for
/// each network it is on, as dockerd emits them (it joins endpoints at start and leaves
/// them at stop). The networks are netd's live endpoints, or those recorded at create
/// when netd has none left (an auto-removed container, netd away).
pub async fn lifecycle_events(st: &AppState, ev: &berth_proto::containers::ContainerEvent) {
    let action = match ev.action.as_str() {
        "start" => "connect",
        "die" => "disconnect",
        _ => return,
    };
    let mut nets: Vec<(String, String)> = live_endpoints(st, &ev.id)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.network_id, e.network_name))
        .collect();
    if nets.is_empty() {
        let mut c = st.services.containers.clone();
        let spec = c
            .get(berth_proto::containers::GetRequest { id: ev.id.clone() })
            .await
            .ok()
            .and_then(|r| r.into_inner().spec);
        let stored: Value = spec
            .map(|s| serde_json::from_slice(&s.network_settings_json).unwrap_or_default())
            .unwrap_or_default();
        if let Some(m) = stored
            .pointer("/settings/Networks")
            .and_then(Value::as_object)
        {
            for (name, n) in m {
                let id = n["NetworkID"].as_str().unwrap_or_default();
                if !id.is_empty() {
                    nets.push((id.to_string(), name.clone()));
                }
            }
        }
    }
    for (id, name) in nets {
        let attrs = network_attributes(&name, &[("container", &ev.id)]);
        st.events
            .emit_at(ev.time_unix_nano, "network", action, &id, attrs)
            .await;
    }
}

/// `POST /networks/prune?filters=`: every custom network no container uses.
pub async fn prune(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filters = parse_filters(&q)?;
    for k in filters.keys() {
        if !matches!(k.as_str(), "label" | "label!" | "until") {
            return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
        }
    }
    let mut c = st.services.networks.clone();
    let list = call(NETD, c.list_networks(npb::ListNetworksRequest {})).await?;
    let eps = all_endpoints(&st).await?;
    let in_use: BTreeSet<String> = eps.iter().map(|e| e.network_id.clone()).collect();
    let mut deleted = Vec::new();
    for n in &list.networks {
        if is_predefined(&n.name)
            || in_use.contains(&n.id)
            || !network_matches(n, &filters, &in_use)?
        {
            continue;
        }
        // A container may have joined since the listing: netd refuses then, and the
        // network is simply kept.
        match call(
            NETD,
            c.remove_network(npb::RemoveNetworkRequest {
                name_or_id: n.id.clone(),
            }),
        )
        .await
        {
            Ok(_) => {
                network_event(&st, "destroy", &n.id, &n.name, &[]).await;
                deleted.push(n.name.clone());
            }
            Err(e) if e.status == StatusCode::FORBIDDEN => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Json(json!({"NetworksDeleted": deleted})))
}

/// What a container asks of one network (`EndpointsConfig` entries, `--network-alias`,
/// `--ip`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSettings {
    pub aliases: Vec<String>,
    pub ipv4_address: String,
    pub mac_address: String,
    /// The object as given, shown back in inspect ('' when there was none).
    pub given: String,
}

/// Parses one `EndpointSettings` object of the API.
pub fn endpoint_settings(v: Option<&Value>) -> EndpointSettings {
    let Some(v) = v else {
        return EndpointSettings::default();
    };
    let aliases = v
        .get("Aliases")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let ipv4_address = v
        .pointer("/IPAMConfig/IPv4Address")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mac_address = v
        .get("MacAddress")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    EndpointSettings {
        aliases,
        ipv4_address,
        mac_address,
        given: if v.is_object() {
            v.to_string()
        } else {
            String::new()
        },
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConnectReq {
    container: String,
    #[serde(default)]
    endpoint_config: Option<Value>,
    #[serde(default)]
    force: bool,
}

/// `POST /networks/{id}/connect`.
pub async fn connect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let req: ConnectReq = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let ctr = get_container(&st, &req.container).await?;
    let spec = ctr.spec.unwrap_or_default();
    let settings = endpoint_settings(req.endpoint_config.as_ref());
    let n = network(&st, id.clone()).await?;
    let now = live_endpoints(&st, &spec.id).await.unwrap_or_default();
    let ports = republished_ports(&spec, &n, &now)?;
    if now.iter().any(|e| e.network_id == n.id) {
        // dockerd's answer to a second connect.
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "endpoint with name {} already exists in network {}",
                spec.name, n.name
            ),
        ));
    }
    let mut c = st.services.networks.clone();
    let ep = call_within(
        NETD,
        Duration::from_secs(30),
        c.create_endpoint(npb::CreateEndpointRequest {
            container_id: spec.id.clone(),
            network: id,
            container_name: spec.name,
            aliases: settings.aliases,
            ipv4_address: settings.ipv4_address,
            ports,
            dns_servers: Vec::new(),
            mac_address: settings.mac_address,
            settings_json: settings.given,
        }),
    )
    .await?;
    network_event(
        &st,
        "connect",
        &ep.network_id,
        &ep.network_name,
        &[("container", &spec.id)],
    )
    .await;
    Ok(StatusCode::OK)
}

/// `POST /networks/{id}/disconnect`.
pub async fn disconnect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let req: ConnectReq = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let _ = req.force;
    let ctr = get_container(&st, &req.container).await?;
    let spec = ctr.spec.unwrap_or_default();
    let mut c = st.services.networks.clone();
    let n = network(&st, id).await?;
    if !is_connected(&st, &spec.id, &n.id).await {
        // dockerd's wording (an untyped error there: 500).
        return Err(ApiError::internal(format!(
            "container {} is not connected to network {}",
            spec.id, n.name
        )));
    }
    call(
        NETD,
        c.remove_endpoint(npb::RemoveEndpointRequest {
            container_id: spec.id.clone(),
            network: n.id.clone(),
        }),
    )
    .await?;
    network_event(
        &st,
        "disconnect",
        &n.id,
        &n.name,
        &[("container", &spec.id)],
    )
    .await;
    Ok(StatusCode::OK)
}

/// The container's published ports (`-p`, `-P`) for an endpoint it connects to a bridge
/// network while no endpoint of it publishes them: as dockerd re-programs them on the
/// sandbox's new gateway endpoint (compose disconnects and reconnects a service's network
/// to set its aliases; its ports must survive that).
fn republished_ports(
    spec: &berth_proto::containers::ContainerSpec,
    net: &npb::Network,
    now: &[npb::Endpoint],
) -> Result<Vec<npb::PortBinding>, ApiError> {
    if net.driver != "bridge" || now.iter().any(|e| !e.ports.is_empty()) {
        return Ok(Vec::new());
    }
    let hc = crate::containers::json_bytes(&spec.host_config_json);
    if matches!(
        hc.get("NetworkMode").and_then(Value::as_str),
        Some("host" | "none")
    ) {
        return Ok(Vec::new());
    }
    let exposed =
        crate::containers::exposed_of(&crate::containers::json_bytes(&spec.network_settings_json));
    let publish_all = hc
        .get("PublishAllPorts")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    port_bindings(hc.get("PortBindings"), publish_all, &exposed)
}

/// Whether netd has an endpoint of `container_id` on network `network_id`.
async fn is_connected(st: &AppState, container_id: &str, network_id: &str) -> bool {
    live_endpoints(st, container_id)
        .await
        .is_some_and(|eps| eps.iter().any(|e| e.network_id == network_id))
}

/// The container's endpoints now, or None when netd cannot say (callers fall back to
/// what was recorded at create).
pub async fn live_endpoints(st: &AppState, container_id: &str) -> Option<Vec<npb::Endpoint>> {
    let mut c = st.services.networks.clone();
    call_within(
        NETD,
        Duration::from_secs(2),
        c.list_endpoints(npb::ListEndpointsRequest {
            network: String::new(),
            container_id: container_id.to_string(),
        }),
    )
    .await
    .ok()
    .map(|r| {
        let mut eps = r.endpoints;
        eps.sort_by_key(|e| interface_order(&e.interface_name));
        eps
    })
}

fn interface_order(ifname: &str) -> u32 {
    ifname
        .strip_prefix("eth")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Docker's `Ports` map: `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`, with
/// exposed but unpublished ports as null.
pub fn ports_map(endpoints: &[npb::Endpoint], exposed: &[String]) -> Value {
    let mut m: BTreeMap<String, Value> = BTreeMap::new();
    for e in exposed {
        m.insert(e.clone(), Value::Null);
    }
    for p in endpoints.iter().flat_map(|e| &e.ports) {
        let key = format!("{}/{}", p.container_port, p.protocol);
        let host_ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &p.host_ip
        };
        let entry = m.entry(key).or_insert(Value::Null);
        if entry.is_null() {
            *entry = json!([]);
        }
        if let Some(a) = entry.as_array_mut() {
            a.push(json!({"HostIp": host_ip, "HostPort": p.host_port.to_string()}));
        }
    }
    Value::Object(m.into_iter().collect())
}

/// `docker ps`'s `Ports` list.
pub fn ports_summary(endpoints: &[npb::Endpoint]) -> Value {
    Value::Array(
        endpoints
            .iter()
            .flat_map(|e| &e.ports)
            .map(|p| {
                json!({
                    "IP": if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip },
                    "PrivatePort": p.container_port,
                    "PublicPort": p.host_port,
                    "Type": p.protocol,
                })
            })
            .collect(),
    )
}

/// Docker's `NetworkSettings` for a container's endpoints (eth0 first).
pub fn network_settings(
    endpoints: &[npb::Endpoint],
    network_mode: &str,
    exposed: &[String],
) -> Value {
    let mut networks = Map::new();
    for ep in endpoints {
        // What the client gave is shown as given (null where it gave nothing), as dockerd.
        let given: Value = serde_json::from_str(&ep.settings_json).unwrap_or(Value::Null);
        let as_given = |k: &str| given.get(k).cloned().unwrap_or(Value::Null);
        networks.insert(
            ep.network_name.clone(),
            json!({
                "IPAMConfig": as_given("IPAMConfig"), "Links": as_given("Links"),
                "Aliases": if ep.aliases.is_empty() { Value::Null } else { json!(ep.aliases) },
                "MacAddress": ep.mac_address,
                "DriverOpts": as_given("DriverOpts"), "GwPriority": as_given("GwPriority").as_i64().unwrap_or(0), "NetworkID": ep.network_id, "EndpointID": ep.endpoint_id,
                "Gateway": ep.gateway, "IPAddress": ep.ip_address, "IPPrefixLen": ep.prefix_len,
                "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "DNSNames": if ep.dns_names.is_empty() { Value::Null } else { json!(ep.dns_names) },
            }),
        );
    }
    if endpoints.is_empty() && !network_mode.is_empty() && !network_mode.starts_with("container:") {
        networks.insert(
            network_mode.to_string(),
            json!({"NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "",
                "IPPrefixLen": 0, "MacAddress": "", "Aliases": null, "DNSNames": null}),
        );
    }
    // The top-level address fields describe the default bridge only (deprecated API).
    let default = endpoints.iter().find(|e| e.network_name == "bridge");
    let field = |f: fn(&npb::Endpoint) -> Value, zero: Value| default.map(f).unwrap_or(zero);
    let sandbox = endpoints
        .iter()
        .find(|e| !e.netns_path.is_empty())
        .map(|e| (e.container_id.clone(), e.netns_path.clone()))
        .unwrap_or_default();
    json!({
        "Bridge": "",
        "SandboxID": sandbox.0,
        "SandboxKey": sandbox.1,
        "Ports": ports_map(endpoints, exposed),
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null,
        "EndpointID": field(|e| json!(e.endpoint_id), json!("")),
        "Gateway": field(|e| json!(e.gateway), json!("")),
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": field(|e| json!(e.ip_address), json!("")),
        "IPPrefixLen": field(|e| json!(e.prefix_len), json!(0)),
        "IPv6Gateway": "",
        "MacAddress": field(|e| json!(e.mac_address), json!("")),
        "Networks": networks,
    })
}

/// Parses `HostConfig.PortBindings` (`{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`)
/// and, with `publish_all`, every exposed port to a random host port (`-P`).
pub fn port_bindings(
    bindings: Option<&Value>,
    publish_all: bool,
    exposed: &[String],
) -> Result<Vec<npb::PortBinding>, ApiError> {
    let mut out: Vec<npb::PortBinding> = Vec::new();
    let mut seen = BTreeSet::new();
    if let Some(m) = bindings.and_then(Value::as_object) {
        for (key, list) in m {
            let (port, proto) = parse_port_key(key)?;
            seen.insert((port, proto.clone()));
            let items: Vec<&Value> = match list {
                Value::Array(a) if !a.is_empty() => a.iter().collect(),
                _ => vec![&Value::Null],
            };
            for item in items {
                let host_ip = item
                    .get("HostIp")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let host_port = item
                    .get("HostPort")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if host_ip.contains(':') {
                    // IPv6 bindings come with every `-p` of a dual-stack CLI default;
                    // Berth publishes on IPv4 only.
                    continue;
                }
                if host_port.contains('-') {
                    return Err(ApiError::not_supported("host port ranges in -p"));
                }
                let host_port: u32 = if host_port.is_empty() {
                    0
                } else {
                    host_port
                        .parse()
                        .ok()
                        .filter(|p| *p <= 65535)
                        .ok_or_else(|| {
                            ApiError::bad_request(format!("invalid hostPort: {host_port}"))
                        })?
                };
                out.push(npb::PortBinding {
                    protocol: proto.clone(),
                    container_port: u32::from(port),
                    host_ip: host_ip.to_string(),
                    host_port,
                });
            }
        }
    }
    if publish_all {
        for key in exposed {
            let (port, proto) = parse_port_key(key)?;
            if seen.insert((port, proto.clone())) {
                out.push(npb::PortBinding {
                    protocol: proto,
                    container_port: u32::from(port),
                    host_ip: String::new(),
                    host_port: 0,
                });
            }
        }
    }
    Ok(out)
}

/// `80/tcp` -> (80, "tcp"); a bare `80` is tcp.
pub fn parse_port_key(key: &str) -> Result<(u16, String), ApiError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(ApiError::bad_request(format!("invalid proto: {proto}")));
    }
    if port.contains('-') {
        return Err(ApiError::not_supported("port ranges in -p/--expose"));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid containerPort: {port}")))?;
    Ok((port, proto))
}

/// The container's `/etc/resolv.conf`, as Docker writes it: on user-defined networks
/// the embedded server (127.0.0.11) with `ndots:0`, its own `--dns` going upstream; on
/// the default bridge `--dns` or the host's servers without loopback ones.
pub fn resolv_conf(
    host: &str,
    embedded_dns: bool,
    dns: &[String],
    search: &[String],
    options: &[String],
) -> String {
    let host_lines = |key: &str| -> Vec<String> {
        host.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(key)).then(|| w.map(str::to_string).collect::<Vec<_>>())
            })
            .flatten()
            .collect()
    };
    let mut out = String::new();
    let servers: Vec<String> = if embedded_dns {
        vec!["127.0.0.11".into()]
    } else if !dns.is_empty() {
        dns.to_vec()
    } else {
        host_lines("nameserver")
            .into_iter()
            .filter(|a| !(a.starts_with("127.") || a == "::1"))
            .collect()
    };
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    let search = if search.is_empty() {
        host_lines("search")
    } else {
        search.iter().filter(|s| *s != ".").cloned().collect()
    };
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    let mut opts = if options.is_empty() {
        host_lines("options")
    } else {
        options.to_vec()
    };
    if embedded_dns && !opts.iter().any(|o| o.starts_with("ndots:")) {
        opts.push("ndots:0".into());
    }
    if !opts.is_empty() {
        out.push_str(&format!("options {}\n", opts.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(net: &str, ip: &str, ports: Vec<npb::PortBinding>) -> npb::Endpoint {
        npb::Endpoint {
            container_id: "c1".into(),
            network_id: format!("id-{net}"),
            network_name: net.into(),
            ip_address: ip.into(),
            prefix_len: 16,
            gateway: "172.18.0.1".into(),
            netns_path: "/run/x/netns/c1".into(),
            ports,
            interface_name: "eth0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn port_bindings_parse_like_the_cli_sends_them() {
        let b = json!({"80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
                       "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]});
        let mut got = port_bindings(Some(&b), true, &["80/tcp".into(), "443/tcp".into()]).unwrap();
        got.sort_by_key(|p| p.container_port);
        assert_eq!(got.len(), 3);
        assert_eq!(
            (
                got[0].container_port,
                got[0].protocol.as_str(),
                got[0].host_ip.as_str(),
                got[0].host_port
            ),
            (53, "udp", "127.0.0.1", 0)
        );
        assert_eq!((got[1].container_port, got[1].host_port), (80, 8080));
        assert_eq!((got[2].container_port, got[2].host_port), (443, 0));
        assert!(port_bindings(Some(&json!({"80/icmp": []})), false, &[]).is_err());
        assert!(
            port_bindings(
                Some(&json!({"80/tcp": [{"HostPort": "99999"}]})),
                false,
                &[]
            )
            .is_err()
        );
        assert!(port_bindings(Some(&json!({"x/tcp": []})), false, &[]).is_err());
    }

    #[test]
    fn settings_and_ports_are_dockers_shapes() {
        let p = npb::PortBinding {
            protocol: "tcp".into(),
            container_port: 80,
            host_ip: String::new(),
            host_port: 32768,
        };
        let eps = vec![ep("bridge", "172.18.0.2", vec![p])];
        let s = network_settings(&eps, "bridge", &["80/tcp".into(), "81/tcp".into()]);
        assert_eq!(s["IPAddress"], "172.18.0.2");
        assert_eq!(
            s["Ports"]["80/tcp"],
            json!([{"HostIp": "0.0.0.0", "HostPort": "32768"}])
        );
        assert_eq!(s["Ports"]["81/tcp"], Value::Null);
        assert_eq!(s["Networks"]["bridge"]["IPAddress"], "172.18.0.2");
        assert_eq!(ports_summary(&eps)[0]["PublicPort"], 32768);
        let s = network_settings(&[ep("mynet", "10.1.0.2", vec![])], "mynet", &[]);
        assert_eq!(s["IPAddress"], "");
        assert_eq!(s["Networks"]["mynet"]["IPAddress"], "10.1.0.2");
        let s = network_settings(&[], "none", &[]);
        assert!(s["Networks"].get("none").is_some());
    }

    #[test]
    fn resolv_conf_follows_docker() {
        let host =
            "nameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch corp.example\noptions edns0\n";
        assert_eq!(
            resolv_conf(host, false, &[], &[], &[]),
            "nameserver 192.0.2.1\nsearch corp.example\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf(host, true, &["10.0.0.1".into()], &[], &[]),
            "nameserver 127.0.0.11\nsearch corp.example\noptions edns0 ndots:0\n"
        );
        assert_eq!(
            resolv_conf(
                host,
                false,
                &["10.0.0.1".into()],
                &["a.b".into()],
                &["ndots:2".into()]
            ),
            "nameserver 10.0.0.1\nsearch a.b\noptions ndots:2\n"
        );
    }

    #[test]
    fn filters_select_networks() {
        let n = npb::Network {
            id: "abc".into(),
            name: "front".into(),
            driver: "bridge".into(),
            labels: [("tier".to_string(), "web".to_string())].into(),
            ..Default::default()
        };
        let used = BTreeSet::new();
        let f =
            |k: &str, v: &str| BTreeMap::from([(k.to_string(), BTreeSet::from([v.to_string()]))]);
        assert!(network_matches(&n, &f("name", "fro"), &used).unwrap());
        assert!(network_matches(&n, &f("label", "tier=web"), &used).unwrap());
        assert!(!network_matches(&n, &f("label", "tier=db"), &used).unwrap());
        assert!(network_matches(&n, &f("type", "custom"), &used).unwrap());
        assert!(network_matches(&n, &f("dangling", "true"), &used).unwrap());
        assert!(network_matches(&n, &f("bogus", "x"), &used).is_err());
    }
}
