//! `docker save` (`GET /images/get?names=`, `GET /images/{name}/get`), `docker load`
//! (`POST /images/load`): tar streams between the client and imaged; `docker commit`.

use crate::AppState;
use crate::error::ApiError;
use crate::services::{CONTAINERD, IMAGED, call};
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_proto::containers as cpb;
use berth_proto::images;
use futures_util::StreamExt;
use serde_json::json;

/// A query's parameters in order: `names` (save) and `changes` (commit, import) repeat,
/// which a map would lose.
pub struct RepeatedQuery(Vec<(String, String)>);

impl RepeatedQuery {
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `key`, or "".
    pub fn get(&self, key: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// Every non-blank value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == key && !v.trim().is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `repo[:tag]` from the `repo` and `tag` parameters; "" without a repo (untagged).
    pub fn repo_tag(&self) -> String {
        let (repo, tag) = (self.get("repo"), self.get("tag"));
        match (repo.is_empty(), tag.is_empty()) {
            (true, _) => String::new(),
            (false, true) => repo,
            (false, false) => format!("{repo}:{tag}"),
        }
    }
}

/// Streams imaged's archive of `names`. Errors before the first byte (an unknown image)
/// are ordinary HTTP errors.
pub async fn save(st: AppState, names: Vec<String>) -> Result<Response, ApiError> {
    if names.is_empty() {
        return Err(ApiError::bad_request("no images to save: give names="));
    }
    let mut client = st.services.images.clone();
    let mut stream = call(
        IMAGED,
        client.save(images::SaveRequest { references: names }),
    )
    .await?;
    let first = match stream.message().await {
        Ok(m) => m,
        Err(s) => return Err(ApiError::from_status(IMAGED, s)),
    };
    let head = futures_util::stream::iter(first.map(|m| Ok::<_, std::io::Error>(m.data)));
    let rest = futures_util::stream::unfold(Some(stream), |state| async move {
        let mut s = state?;
        match s.message().await {
            Ok(Some(m)) => Some((Ok(m.data), Some(s))),
            Ok(None) => None,
            // Cut short: the client's tar reader fails rather than keeping a short copy.
            Err(status) => Some((
                Err(std::io::Error::other(status.message().to_string())),
                None,
            )),
        }
    });
    let mut resp = (StatusCode::OK, Body::from_stream(head.chain(rest))).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(resp)
}

/// Sends the body to imaged and answers Docker's JSON lines (`{"stream":"Loaded image:
/// busybox:latest\n"}`).
pub async fn load(st: AppState, body: Body) -> Result<Response, ApiError> {
    let (chunks, fed) = crate::upload::feed(body, None, |data| images::ArchiveData {
        data: data.to_vec(),
    });
    let mut client = st.services.images.clone();
    let loaded = match crate::upload::call_fed(call(IMAGED, client.load(chunks)), fed).await {
        Ok(l) => l,
        // As dockerd: a bad archive is told in the answer's JSON stream (clients raise
        // it from there: docker-py's ImageLoadError); a service away stays a 503.
        Err(e) if e.status.is_client_error() => {
            return Ok(json_stream_response(crate::images::stream_error_json(
                &e.message,
            )));
        }
        Err(e) => return Err(e),
    };
    let mut out = String::new();
    for line in &loaded.loaded {
        out.push_str(&json!({"stream": format!("{line}\n")}).to_string());
        out.push_str("\r\n");
        let name = line
            .strip_prefix("Loaded image: ")
            .or_else(|| line.strip_prefix("Loaded image ID: "))
            .unwrap_or(line);
        st.events
            .emit("image", "load", name, Default::default())
            .await;
    }
    Ok(json_stream_response(out))
}

fn json_stream_response(body: String) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `docker import` (`POST /images/create?fromSrc=-&repo=&tag=&message=&changes=`): the
/// body is the tarball (with `fromSrc=<URL>`, imaged fetches it); the answer is Docker's
/// JSON line with the new image's ID.
pub async fn import(
    st: AppState,
    raw_query: Option<&str>,
    body: Body,
    source: &str,
) -> Result<Response, ApiError> {
    let q = RepeatedQuery::parse(raw_query);
    let first = images::ImportInput {
        changes: q.all("changes"),
        message: q.get("message"),
        reference: q.repo_tag(),
        data: Vec::new(),
        source: source.to_string(),
    };
    let (input, fed) = crate::upload::feed(body, Some(first), |data| images::ImportInput {
        data: data.to_vec(),
        ..Default::default()
    });
    let mut client = st.services.images.clone();
    let done = crate::upload::call_fed(call(IMAGED, client.import(input)), fed).await?;
    st.events
        .emit("image", "import", &done.id, Default::default())
        .await;
    let mut out = json!({"status": done.id}).to_string();
    out.push_str("\r\n");
    Ok(json_stream_response(out))
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=`: the container's
/// writable layer as a new image (201 `{"Id"}`). The container keeps running: its layer
/// is frozen while it is read unless `pause=0`.
pub async fn commit(
    axum::extract::State(st): axum::extract::State<AppState>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let q = RepeatedQuery::parse(raw.as_deref());
    let container = q.get("container");
    if container.is_empty() {
        return Err(ApiError::bad_request("container is required"));
    }
    let c = crate::containers::get_container(&st, &container).await?;
    // As Docker: the container is frozen while its changes are read (`--pause`, on by
    // default), so the layer is one moment's state.
    let pause = !matches!(q.get("pause").as_str(), "0" | "false" | "False");
    let freeze = pause && c.state == "running";
    let spec = c.spec.unwrap_or_default();
    let reference = q.repo_tag();
    let req = images::CommitRequest {
        container_id: spec.id.clone(),
        container_config_json: spec.config_json.clone(),
        changes: q.all("changes"),
        author: q.get("author"),
        comment: q.get("comment"),
        reference: reference.clone(),
    };
    let mut client = st.services.images.clone();
    let mut containers = st.services.containers.clone();
    let frozen = cpb::PauseRequest {
        id: spec.id.clone(),
    };
    // A container that exits between the look and the freeze has nothing left to
    // freeze: it is committed as it stopped (a 409 there would fail a valid commit).
    let freeze = freeze
        && match call(CONTAINERD, containers.pause(frozen.clone())).await {
            Ok(_) => true,
            Err(e) if e.status == StatusCode::CONFLICT => false,
            Err(e) => return Err(e),
        };
    let done = call(IMAGED, client.commit(req)).await;
    if freeze && let Err(e) = call(CONTAINERD, containers.unpause(frozen)).await {
        tracing::warn!(container = %spec.id, "unpausing after the commit: {}", e.message);
    }
    let done = done?;
    st.events
        .emit(
            "container",
            "commit",
            &spec.id,
            [
                ("comment".to_string(), q.get("comment")),
                ("imageID".to_string(), done.id.clone()),
                ("imageRef".to_string(), reference),
            ]
            .into(),
        )
        .await;
    Ok((StatusCode::CREATED, axum::Json(json!({"Id": done.id}))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_keep_their_order() {
        let q = RepeatedQuery::parse(Some("names=busybox%3Alatest&names=b&other=x&names="));
        assert_eq!(q.all("names"), vec!["busybox:latest", "b"]);
        assert_eq!(q.get("other"), "x");
        assert!(RepeatedQuery::parse(None).all("names").is_empty());
        assert_eq!(
            RepeatedQuery::parse(Some("repo=a%2Fb&tag=v1")).repo_tag(),
            "a/b:v1"
        );
        assert_eq!(RepeatedQuery::parse(Some("repo=a")).repo_tag(), "a");
        assert_eq!(RepeatedQuery::parse(Some("tag=v1")).repo_tag(), "");
    }
}
