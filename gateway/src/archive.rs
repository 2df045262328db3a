//! `docker cp`: `HEAD/GET/PUT /containers/{id}/archive?path=`. containerd-svc resolves
//! paths inside the container and does the file work; this module speaks Docker's HTTP:
//! the base64 JSON stat header, tar bodies streamed both ways.

use crate::AppState;
use crate::error::ApiError;
use crate::services::{CONTAINERD, call};
use crate::util::query_bool;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use berth_proto::containers as cpb;
use serde_json::json;
use std::collections::HashMap;

const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

fn path_param(q: &HashMap<String, String>) -> Result<String, ApiError> {
    match q.get("path") {
        Some(p) if !p.is_empty() => Ok(p.clone()),
        // Docker's wording.
        _ => Err(ApiError::bad_request("path cannot be empty")),
    }
}

/// The stat as Docker's header carries it: base64 of `{"name","size","mode","mtime",
/// "linkTarget"}`.
pub fn stat_header(s: &cpb::PathStat) -> HeaderValue {
    let v = json!({
        "name": s.name,
        "size": s.size,
        "mode": s.mode,
        "mtime": s.mtime,
        "linkTarget": s.link_target,
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(v.to_string());
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `HEAD /containers/{id}/archive?path=`: the stat header only.
pub async fn head(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let path = path_param(&q)?;
    let mut c = st.services.containers.clone();
    let stat = call(CONTAINERD, c.archive_stat(cpb::ArchiveRequest { id, path })).await?;
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut().insert(STAT_HEADER, stat_header(&stat));
    Ok(resp)
}

/// `GET /containers/{id}/archive?path=`: a tar of the path.
pub async fn get(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let path = path_param(&q)?;
    let mut c = st.services.containers.clone();
    let mut stream = call(CONTAINERD, c.archive_get(cpb::ArchiveRequest { id, path })).await?;
    // The first message is the stat (or the refusal, as a status).
    let stat = match stream.message().await {
        Ok(Some(cpb::ArchiveChunk {
            stat: Some(stat), ..
        })) => stat,
        Ok(_) => {
            return Err(ApiError::internal(
                "the archive stream began without a stat",
            ));
        }
        Err(s) => return Err(ApiError::from_status(CONTAINERD, s)),
    };
    let body = futures_util::stream::unfold(Some(stream), |state| async move {
        let mut s = state?;
        match s.message().await {
            Ok(Some(chunk)) => Some((Ok::<_, std::io::Error>(chunk.data), Some(s))),
            Ok(None) => None,
            // Mid-stream the status code is gone: cutting the body short makes the
            // client's tar reader fail instead of seeing a silently short copy.
            Err(status) => Some((
                Err(std::io::Error::other(status.message().to_string())),
                None,
            )),
        }
    });
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    h.insert(STAT_HEADER, stat_header(&stat));
    Ok(resp)
}

/// `PUT /containers/{id}/archive?path=&noOverwriteDirNonDir=&copyUIDGID=`: extracts the
/// tar body into the directory `path`.
pub async fn put(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Result<Response, ApiError> {
    let path = path_param(&q)?;
    let first = cpb::ArchivePutInput {
        id,
        path,
        no_overwrite_dir_non_dir: query_bool(&q, "noOverwriteDirNonDir"),
        copy_uid_gid: query_bool(&q, "copyUIDGID"),
        data: Vec::new(),
    };
    let (input, fed) =
        crate::upload::feed(req.into_body(), Some(first), |data| cpb::ArchivePutInput {
            data: data.to_vec(),
            ..Default::default()
        });
    let mut c = st.services.containers.clone();
    crate::upload::call_fed(call(CONTAINERD, c.archive_put(input)), fed).await?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_header_is_base64_json() {
        let h = stat_header(&cpb::PathStat {
            name: "hostname".into(),
            size: 4,
            mode: 0o644,
            mtime: "2026-01-02T03:04:05Z".into(),
            link_target: String::new(),
        });
        let raw = base64::engine::general_purpose::STANDARD
            .decode(h.as_bytes())
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v["name"], "hostname");
        assert_eq!(v["mode"], 0o644);
        assert_eq!(v["linkTarget"], "");
    }
}
