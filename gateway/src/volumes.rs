//! Volume endpoints (`docker volume create/ls/inspect/rm/prune`), served by volumed.
//! Filters are checked here with Docker's accepted keys and error wording; volumed
//! applies them.

use crate::AppState;
use crate::error::ApiError;
use crate::services::{VOLUMED, call, call_within};
use crate::util::{parse_filters, query_bool};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_proto::volumes;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

type Filters = BTreeMap<String, BTreeSet<String>>;

/// A volume as Docker's API shows it.
pub fn volume_json(v: &volumes::Volume) -> Value {
    json!({
        "Name": v.name,
        "Driver": if v.driver.is_empty() { "local" } else { &v.driver },
        "Mountpoint": v.mountpoint,
        "CreatedAt": v.created_at,
        "Labels": v.labels,
        "Options": v.options,
        "Scope": "local",
    })
}

/// Docker's `filters.Args.Validate`: `invalid filter '<key>'` for a key not accepted.
fn check_keys(f: &Filters, accepted: &[&str]) -> Result<(), ApiError> {
    match f.keys().find(|k| !accepted.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(format!("invalid filter '{k}'"))),
        None => Ok(()),
    }
}

/// Docker's `GetBoolOrDefault`: exactly one of true/1 or false/0.
fn dangling(f: &Filters) -> Result<Option<bool>, ApiError> {
    let Some(vals) = f.get("dangling") else {
        return Ok(None);
    };
    let is_true = vals.contains("true") || vals.contains("1");
    let is_false = vals.contains("false") || vals.contains("0");
    if is_true == is_false {
        let joined: Vec<&str> = vals.iter().map(String::as_str).collect();
        return Err(ApiError::bad_request(format!(
            "invalid filter 'dangling={}'",
            joined.join(",")
        )));
    }
    Ok(Some(is_true))
}

fn values(f: &Filters, key: &str) -> Vec<String> {
    f.get(key).into_iter().flatten().cloned().collect()
}

/// The volumed filter for Docker's `filters` parameter.
fn to_filter(f: &Filters) -> Result<volumes::VolumeFilter, ApiError> {
    Ok(volumes::VolumeFilter {
        names: values(f, "name"),
        drivers: values(f, "driver"),
        labels: values(f, "label"),
        not_labels: values(f, "label!"),
        dangling: dangling(f)?,
    })
}

/// `GET /volumes?filters=`: `dangling`, `name`, `driver`, `label` as Docker accepts.
pub async fn list(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let f = parse_filters(&q)?;
    check_keys(&f, &["dangling", "name", "driver", "label"])?;
    let filter = to_filter(&f)?;
    let mut c = st.services.volumes.clone();
    let list = call(
        VOLUMED,
        c.list_volumes(volumes::ListVolumesRequest {
            filter: Some(filter),
            with_size: false,
        }),
    )
    .await?;
    Ok(Json(json!({
        "Volumes": list.volumes.iter().map(volume_json).collect::<Vec<_>>(),
        "Warnings": [],
    })))
}

pub async fn volume_event(st: &AppState, action: &str, name: &str) {
    let attrs = BTreeMap::from([("driver".to_string(), "local".to_string())]);
    st.events.emit("volume", action, name, attrs).await;
}

/// Docker's `volume mount` (at a container's start) and `volume unmount` (at its end)
/// events, one per volume the container mounts.
pub async fn mount_events(st: &AppState, ev: &berth_proto::containers::ContainerEvent) {
    let mut c = st.services.containers.clone();
    let Ok(ctr) = c
        .get(berth_proto::containers::GetRequest { id: ev.id.clone() })
        .await
    else {
        return;
    };
    let Some(spec) = ctr.into_inner().spec else {
        return;
    };
    let ns: Value = serde_json::from_slice(&spec.network_settings_json).unwrap_or_default();
    let mounts = ns
        .get("mounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let action = if ev.action == "start" {
        "mount"
    } else {
        "unmount"
    };
    for m in mounts.iter().filter(|m| m["Type"] == "volume") {
        let name = m["Name"].as_str().unwrap_or_default();
        let mut attrs = BTreeMap::from([
            ("container".to_string(), ev.id.clone()),
            ("driver".to_string(), "local".to_string()),
        ]);
        if action == "mount" {
            let text = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            attrs.insert("destination".into(), text("Destination"));
            attrs.insert("propagation".into(), text("Propagation"));
            attrs.insert(
                "read/write".into(),
                m["RW"].as_bool().unwrap_or(true).to_string(),
            );
        }
        st.events
            .emit_at(ev.time_unix_nano, "volume", action, name, attrs)
            .await;
    }
}

/// `POST /volumes/create`.
pub async fn create(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "PascalCase")]
    struct Req {
        name: String,
        driver: String,
        driver_opts: Option<HashMap<String, String>>,
        labels: Option<HashMap<String, String>>,
        cluster_volume_spec: Option<Value>,
    }
    let req: Req = if body.is_empty() {
        Req::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?
    };
    if req
        .cluster_volume_spec
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::not_supported("cluster volumes (swarm)"));
    }
    let mut c = st.services.volumes.clone();
    let existed = if req.name.is_empty() {
        false
    } else {
        call(
            VOLUMED,
            c.get_volume(volumes::GetVolumeRequest {
                name: req.name.clone(),
            }),
        )
        .await
        .is_ok()
    };
    let v = call(
        VOLUMED,
        c.create_volume(volumes::CreateVolumeRequest {
            name: req.name,
            driver: req.driver,
            labels: req.labels.unwrap_or_default(),
            options: req.driver_opts.unwrap_or_default(),
        }),
    )
    .await?;
    if !existed {
        volume_event(&st, "create", &v.name).await;
    }
    Ok((StatusCode::CREATED, Json(volume_json(&v))).into_response())
}

/// `GET /volumes/{name}`.
pub async fn inspect(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut c = st.services.volumes.clone();
    let v = call(VOLUMED, c.get_volume(volumes::GetVolumeRequest { name })).await?;
    Ok(Json(volume_json(&v)))
}

/// `DELETE /volumes/{name}?force=`: 409 while a container uses it, even with force.
pub async fn remove(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let mut c = st.services.volumes.clone();
    let force = query_bool(&q, "force");
    let existed = call(
        VOLUMED,
        c.get_volume(volumes::GetVolumeRequest { name: name.clone() }),
    )
    .await
    .is_ok();
    call(
        VOLUMED,
        c.remove_volume(volumes::RemoveVolumeRequest {
            name: name.clone(),
            force,
        }),
    )
    .await?;
    if existed {
        volume_event(&st, "destroy", &name).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /volumes/prune?filters=`: unused anonymous volumes (API 1.42+), every unused
/// one with `all=true`; `label`/`label!` narrow it. Docker's report.
pub async fn prune(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let f = parse_filters(&q)?;
    check_keys(&f, &["label", "label!", "all"])?;
    let all = match f.get("all").map(|v| v.iter().collect::<Vec<_>>()) {
        None => false,
        Some(v) if v.len() > 1 => {
            let joined: Vec<&str> = v.iter().map(|s| s.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "invalid filter 'all=[{}]': only one value is expected",
                joined.join(" ")
            )));
        }
        Some(v) => parse_go_bool(v.first().map(|s| s.as_str()).unwrap_or("")).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid filter 'all': strconv.ParseBool: parsing {:?}: invalid syntax",
                v.first().map(|s| s.as_str()).unwrap_or("")
            ))
        })?,
    };
    let filter = volumes::VolumeFilter {
        labels: values(&f, "label"),
        not_labels: values(&f, "label!"),
        ..Default::default()
    };
    let mut c = st.services.volumes.clone();
    // Measuring and deleting many volumes can take a while.
    let report = call_within(
        VOLUMED,
        Duration::from_secs(300),
        c.prune_volumes(volumes::PruneVolumesRequest {
            filter: Some(filter),
            all,
        }),
    )
    .await?;
    for name in &report.deleted {
        volume_event(&st, "destroy", name).await;
    }
    let attrs = BTreeMap::from([("reclaimed".to_string(), report.space_reclaimed.to_string())]);
    st.events.emit("volume", "prune", "", attrs).await;
    Ok(Json(json!({
        "VolumesDeleted": report.deleted,
        "SpaceReclaimed": report.space_reclaimed,
    })))
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(kv: &[(&str, &str)]) -> Filters {
        let mut f = Filters::new();
        for (k, v) in kv {
            f.entry(k.to_string()).or_default().insert(v.to_string());
        }
        f
    }

    #[test]
    fn list_filters_are_checked_with_dockers_words() {
        let f = filters(&[("dangling", "true"), ("label", "a=b"), ("name", "^x")]);
        assert!(check_keys(&f, &["dangling", "name", "driver", "label"]).is_ok());
        let vf = to_filter(&f).unwrap();
        assert_eq!(vf.dangling, Some(true));
        assert_eq!(vf.labels, vec!["a=b".to_string()]);
        assert_eq!(vf.names, vec!["^x".to_string()]);
        let e = check_keys(&filters(&[("label!", "a")]), &["dangling", "label"]).unwrap_err();
        assert_eq!(e.message, "invalid filter 'label!'");
        let e = to_filter(&filters(&[("dangling", "maybe")])).unwrap_err();
        assert_eq!(e.message, "invalid filter 'dangling=maybe'");
        let e = to_filter(&filters(&[("dangling", "true"), ("dangling", "0")])).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(
            to_filter(&filters(&[("dangling", "0")])).unwrap().dangling,
            Some(false)
        );
    }

    #[test]
    fn go_bools() {
        assert_eq!(parse_go_bool("true"), Some(true));
        assert_eq!(parse_go_bool("0"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
