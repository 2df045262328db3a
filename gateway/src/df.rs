//! `docker system df`: what images, containers, volumes and the build cache hold on disk,
//! from imaged (layers once, shared bytes, containers' upper dirs) and volumed (volume
//! bytes, users).

use crate::AppState;
use crate::error::ApiError;
use crate::services::{CONTAINERD, IMAGED, VOLUMED, call};
use axum::Json;
use axum::extract::{RawQuery, State};
use berth_proto::{containers as cpb, images as ipb, volumes as vpb};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Each container's (SizeRw, SizeRootFs): the bytes it wrote, and those plus its image.
pub async fn container_sizes(st: &AppState) -> Result<HashMap<String, (i64, i64)>, ApiError> {
    let mut images = st.services.images.clone();
    let mut images2 = st.services.images.clone();
    let (usage, list) = tokio::try_join!(
        call(
            IMAGED,
            images.disk_usage(ipb::DiskUsageRequest { snapshots: true })
        ),
        call(
            IMAGED,
            images2.list_images(ipb::ListImagesRequest { all: true })
        ),
    )?;
    let image_size: HashMap<String, i64> =
        list.images.into_iter().map(|i| (i.id, i.size)).collect();
    Ok(usage
        .snapshots
        .into_iter()
        .map(|s| {
            let base = image_size.get(&s.image_id).copied().unwrap_or(0);
            (s.container_id, (s.size_rw, s.size_rw.max(0) + base))
        })
        .collect())
}

/// The object types `?type=` may name (all when none is given).
const TYPES: [&str; 4] = ["container", "image", "volume", "build-cache"];

/// `GET /system/df[?type=container&type=image&type=volume&type=build-cache]`.
pub async fn system_df(
    State(st): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut wanted: Vec<String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "type")
        .map(|(_, v)| v.into_owned())
        .collect();
    if let Some(bad) = wanted.iter().find(|t| !TYPES.contains(&t.as_str())) {
        return Err(ApiError::bad_request(format!("unknown object type: {bad}")));
    }
    if wanted.is_empty() {
        wanted = TYPES.iter().map(|t| t.to_string()).collect();
    }
    let want = |t: &str| wanted.iter().any(|w| w == t);
    let mut out = serde_json::Map::new();

    let containers = if want("container") || want("image") {
        let mut c = st.services.containers.clone();
        call(CONTAINERD, c.list(cpb::ListRequest { all: true }))
            .await?
            .containers
    } else {
        Vec::new()
    };
    if want("image") {
        let (mut i1, mut i2) = (st.services.images.clone(), st.services.images.clone());
        let (usage, list) = tokio::try_join!(
            call(
                IMAGED,
                i1.disk_usage(ipb::DiskUsageRequest { snapshots: false })
            ),
            call(IMAGED, i2.list_images(ipb::ListImagesRequest { all: true })),
        )?;
        let shared: HashMap<&str, i64> = usage
            .images
            .iter()
            .map(|u| (u.id.as_str(), u.shared_size))
            .collect();
        let mut users: HashMap<&str, i64> = HashMap::new();
        for c in &containers {
            if let Some(spec) = &c.spec {
                *users.entry(spec.image_id.as_str()).or_default() += 1;
            }
        }
        let images: Vec<Value> = list
            .images
            .iter()
            .map(|img| {
                crate::images::summary_json(
                    img,
                    shared.get(img.id.as_str()).copied().unwrap_or(0),
                    users.get(img.id.as_str()).copied().unwrap_or(0),
                )
            })
            .collect();
        out.insert("LayersSize".into(), json!(usage.layers_size));
        out.insert("Images".into(), Value::Array(images));
    }
    if want("container") {
        let sizes = container_sizes(&st).await?;
        let now = chrono::Utc::now();
        let list: Vec<Value> = containers
            .iter()
            .map(|c| {
                let mut v = crate::containers::summary_json(c, now);
                let id = c.spec.as_ref().map(|s| s.id.as_str()).unwrap_or_default();
                let (rw, root) = sizes.get(id).copied().unwrap_or((0, 0));
                v["SizeRw"] = json!(rw);
                v["SizeRootFs"] = json!(root);
                v
            })
            .collect();
        out.insert("Containers".into(), Value::Array(list));
    }
    if want("volume") {
        let mut v = st.services.volumes.clone();
        let list = call(
            VOLUMED,
            v.list_volumes(vpb::ListVolumesRequest {
                filter: None,
                with_size: true,
            }),
        )
        .await?;
        let vols: Vec<Value> = list
            .volumes
            .iter()
            .map(|vol| {
                let mut j = crate::volumes::volume_json(vol);
                j["UsageData"] = json!({"Size": vol.size, "RefCount": vol.used_by.len()});
                j
            })
            .collect();
        out.insert("Volumes".into(), Value::Array(vols));
    }
    if want("build-cache") {
        // Berth has no builder yet, so there is no build cache: empty is the truth.
        out.insert("BuildCache".into(), json!([]));
    }
    Ok(Json(Value::Object(out)))
}
