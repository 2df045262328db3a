//! `docker top`: as dockerd, `ps` runs on the host with the client's arguments and the
//! rows of the container's processes (the pids in its cgroup) are kept. `docker diff`:
//! imaged reads the container's writable layer. `docker export`: imaged tars its
//! filesystem.

use crate::AppState;
use crate::error::ApiError;
use crate::services::{CONTAINERD, IMAGED, call};
use axum::Json;
use axum::extract::{Path, Query, State};
use berth_proto::containers::PidsRequest;
use serde_json::{Value, json};
use std::collections::HashMap;

/// `ps` output split into titles and the rows of `pids`; the last column (the command)
/// keeps its spaces.
pub fn parse_ps(out: &str, pids: &[i32]) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let mut lines = out.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid_at = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| "Couldn't find PID field in ps output".to_string())?;
    let mut rows = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < titles.len() {
            continue;
        }
        let Ok(pid) = fields[pid_at].parse::<i32>() else {
            return Err(format!("Unexpected pid '{}'", fields[pid_at]));
        };
        if !pids.contains(&pid) {
            continue;
        }
        let last = titles.len() - 1;
        let mut row: Vec<String> = fields[..last].iter().map(|f| f.to_string()).collect();
        row.push(fields[last..].join(" "));
        rows.push(row);
    }
    Ok((titles, rows))
}

/// `GET /containers/{id}/top?ps_args=`.
pub async fn top(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let args = q
        .get("ps_args")
        .map(String::as_str)
        .filter(|a| !a.trim().is_empty())
        .unwrap_or("-ef");
    let mut c = st.services.containers.clone();
    let pids = call(CONTAINERD, c.pids(PidsRequest { id })).await?.pids;
    let out = tokio::process::Command::new("ps")
        .args(args.split_whitespace())
        .output()
        .await
        .map_err(|e| ApiError::internal(format!("Error running ps: {e}")))?;
    if !out.status.success() {
        return Err(ApiError::internal(format!(
            "ps: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let (titles, processes) =
        parse_ps(&String::from_utf8_lossy(&out.stdout), &pids).map_err(ApiError::internal)?;
    Ok(Json(json!({"Titles": titles, "Processes": processes})))
}

/// `GET /containers/{id}/changes`.
pub async fn changes(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = crate::containers::get_container(&st, &id).await?;
    let container_id = c.spec.map(|s| s.id).unwrap_or_default();
    let mut i = st.services.images.clone();
    let list = call(
        IMAGED,
        i.changes(berth_proto::images::ChangesRequest { container_id }),
    )
    .await?
    .changes;
    Ok(Json(
        list.iter()
            .map(|c| json!({"Path": c.path, "Kind": c.kind}))
            .collect(),
    ))
}

/// `GET /containers/{id}/export`: the container's filesystem as a tar.
pub async fn export(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let c = crate::containers::get_container(&st, &id).await?;
    let container_id = c.spec.map(|s| s.id).unwrap_or_default();
    let mut i = st.services.images.clone();
    let stream = call(
        IMAGED,
        i.export(berth_proto::images::ExportRequest { container_id }),
    )
    .await?;
    let body = futures_util::stream::unfold(Some(stream), |state| async move {
        let mut s = state?;
        match s.message().await {
            Ok(Some(chunk)) => Some((Ok::<_, std::io::Error>(chunk.data), Some(s))),
            Ok(None) => None,
            // The tar is cut short: the client sees a failed transfer, not a whole file.
            Err(e) => Some((Err(std::io::Error::other(e.message().to_string())), None)),
        }
    });
    let mut resp = axum::body::Body::from_stream(body).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-tar"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_container_rows_and_the_whole_command() {
        let out = "UID          PID    PPID  C STIME TTY          TIME CMD\n\
                   root           1       0  0 08:00 ?        00:00:01 /sbin/init\n\
                   root        4242    4240  0 08:01 ?        00:00:00 sleep 600 --flag\n";
        let (titles, rows) = parse_ps(out, &[4242]).unwrap();
        assert_eq!(titles.len(), 8);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][1], "4242");
        assert_eq!(rows[0][7], "sleep 600 --flag");
        assert!(parse_ps("USER COMMAND\nroot x\n", &[1]).is_err());
    }
}
