//! `GET /containers/{id}/stats`: containerd-svc's samples in Docker's stats JSON, each
//! with the previous sample as `precpu_stats` (the CLI's CPU % is the delta between them).

use crate::AppState;
use crate::containers::get_container;
use crate::error::ApiError;
use crate::services::{CONTAINERD, call};
use crate::util::{ZERO_TIME, query_bool, query_bool_or, rfc3339_nanos};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use berth_proto::containers::{ContainerStats, StatsRequest};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// Docker's collection interval: one sample a second.
const INTERVAL: Duration = Duration::from_secs(1);

fn time_text(unix_nano: i64) -> String {
    if unix_nano == 0 {
        ZERO_TIME.to_string()
    } else {
        rfc3339_nanos(chrono::DateTime::from_timestamp_nanos(unix_nano))
    }
}

fn cpu_json(s: &ContainerStats) -> Value {
    let mut usage = json!({
        "total_usage": s.cpu_total_ns,
        "usage_in_kernelmode": s.cpu_kernel_ns,
        "usage_in_usermode": s.cpu_user_ns,
    });
    if !s.percpu_ns.is_empty() {
        usage["percpu_usage"] = json!(s.percpu_ns);
    }
    let mut cpu = json!({
        "cpu_usage": usage,
        "throttling_data": {
            "periods": s.throttling_periods,
            "throttled_periods": s.throttled_periods,
            "throttled_time": s.throttled_ns,
        },
    });
    if s.read_unix_nano != 0 {
        cpu["system_cpu_usage"] = json!(s.system_cpu_ns);
        cpu["online_cpus"] = json!(s.online_cpus);
    }
    cpu
}

/// One stats object as dockerd writes it; `pre` is the previous sample, if any.
pub fn stats_json(
    cur: &ContainerStats,
    pre: Option<&ContainerStats>,
    name: &str,
    id: &str,
) -> Value {
    let empty = ContainerStats::default();
    let pre = pre.unwrap_or(&empty);
    let running = cur.read_unix_nano != 0;
    let blkio: Value = if cur.blkio.is_empty() {
        Value::Null
    } else {
        cur.blkio
            .iter()
            .map(|b| json!({"major": b.major, "minor": b.minor, "op": b.op, "value": b.value}))
            .collect()
    };
    let mut memory = json!({});
    if running {
        memory = json!({
            "usage": cur.memory_usage,
            "stats": cur.memory_stat,
            "limit": cur.memory_limit,
        });
        if cur.cgroup_version == 1 {
            memory["max_usage"] = json!(cur.memory_max_usage);
        }
    }
    let mut pids = json!({});
    if running {
        pids = json!({"current": cur.pids_current});
        if cur.pids_limit > 0 {
            pids["limit"] = json!(cur.pids_limit);
        }
    }
    let mut out = json!({
        "read": time_text(cur.read_unix_nano),
        "preread": time_text(pre.read_unix_nano),
        "pids_stats": pids,
        "blkio_stats": {
            "io_service_bytes_recursive": blkio,
            "io_serviced_recursive": null,
            "io_queue_recursive": null,
            "io_service_time_recursive": null,
            "io_wait_time_recursive": null,
            "io_merged_recursive": null,
            "io_time_recursive": null,
            "sectors_recursive": null,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_json(cur),
        "precpu_stats": cpu_json(pre),
        "memory_stats": memory,
        "name": name,
        "id": id,
    });
    if !cur.networks.is_empty() {
        out["networks"] = cur
            .networks
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    json!({
                        "rx_bytes": n.rx_bytes, "rx_packets": n.rx_packets,
                        "rx_errors": n.rx_errors, "rx_dropped": n.rx_dropped,
                        "tx_bytes": n.tx_bytes, "tx_packets": n.tx_packets,
                        "tx_errors": n.tx_errors, "tx_dropped": n.tx_dropped,
                    }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    out
}

/// `GET /containers/{id}/stats?stream=&one-shot=`.
pub async fn stats(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let stream = query_bool_or(&q, "stream", true);
    let one_shot = query_bool(&q, "one-shot");
    if stream && one_shot {
        return Err(ApiError::bad_request(
            "cannot have stream=true and one-shot=true",
        ));
    }
    let c = get_container(&st, &id).await?;
    let spec = c.spec.unwrap_or_default();
    let (name, id) = (format!("/{}", spec.name), spec.id);
    let client = st.services.containers.clone();
    let sample = move |id: String| {
        let mut client = client.clone();
        async move { call(CONTAINERD, client.stats(StatsRequest { id })).await }
    };
    if !stream {
        let first = sample(id.clone()).await?;
        if one_shot || first.read_unix_nano == 0 {
            return Ok(Json(stats_json(&first, None, &name, &id)).into_response());
        }
        // Two samples a collection interval apart, so precpu_stats is filled.
        tokio::time::sleep(INTERVAL).await;
        let second = sample(id.clone()).await?;
        return Ok(Json(stats_json(&second, Some(&first), &name, &id)).into_response());
    }
    // One object per line every interval until the client goes or the container does.
    let body = futures_util::stream::unfold((None::<ContainerStats>, true), move |(pre, first)| {
        let (sample, id, name) = (sample.clone(), id.clone(), name.clone());
        async move {
            if !first {
                tokio::time::sleep(INTERVAL).await;
            }
            let cur = sample(id.clone()).await.ok()?;
            let mut line = stats_json(&cur, pre.as_ref(), &name, &id).to_string();
            line.push('\n');
            Some((Ok::<_, std::io::Error>(line), (Some(cur), false)))
        }
    });
    Ok(crate::util::json_stream(Body::from_stream(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::containers::NetworkStats;

    #[test]
    fn running_sample_has_docker_fields() {
        let pre = ContainerStats {
            read_unix_nano: 1_700_000_000_000_000_000,
            cpu_total_ns: 100,
            system_cpu_ns: 1000,
            online_cpus: 2,
            ..Default::default()
        };
        let cur = ContainerStats {
            read_unix_nano: 1_700_000_001_000_000_000,
            cgroup_version: 1,
            cpu_total_ns: 600,
            percpu_ns: vec![300, 300],
            system_cpu_ns: 2000,
            online_cpus: 2,
            memory_usage: 4096,
            memory_max_usage: 8192,
            memory_limit: 1 << 30,
            pids_current: 3,
            networks: vec![NetworkStats {
                name: "eth0".into(),
                rx_bytes: 10,
                ..Default::default()
            }],
            ..Default::default()
        };
        let j = stats_json(&cur, Some(&pre), "/web", "abc");
        assert_eq!(j["cpu_stats"]["cpu_usage"]["total_usage"], 600);
        assert_eq!(j["precpu_stats"]["cpu_usage"]["total_usage"], 100);
        assert_eq!(j["precpu_stats"]["system_cpu_usage"], 1000);
        assert_eq!(j["cpu_stats"]["online_cpus"], 2);
        assert_eq!(j["memory_stats"]["max_usage"], 8192);
        assert_eq!(j["pids_stats"]["current"], 3);
        assert_eq!(j["networks"]["eth0"]["rx_bytes"], 10);
        assert_eq!(j["name"], "/web");
        assert!(
            j["preread"]
                .as_str()
                .unwrap()
                .starts_with("2023-11-14T22:13:20")
        );
    }

    #[test]
    fn a_stopped_container_reads_zero() {
        let j = stats_json(&ContainerStats::default(), None, "/x", "id");
        assert_eq!(j["read"], ZERO_TIME);
        assert_eq!(j["memory_stats"], json!({}));
        assert!(j.get("networks").is_none());
        assert!(j["cpu_stats"].get("system_cpu_usage").is_none());
    }
}
