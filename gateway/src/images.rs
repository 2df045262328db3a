//! Image endpoints: pull (`POST /images/create`), list, inspect.

use crate::AppState;
use crate::error::ApiError;
use crate::services::{IMAGED, call};
use crate::util::{ZERO_TIME, parse_time};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use berth_proto::images;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// How long a pull may take to produce its first progress message (resolving the
/// manifest); after that the stream has no deadline.
const PULL_FIRST_MESSAGE_DEADLINE: Duration = Duration::from_secs(120);

/// Decodes Docker's `X-Registry-Auth` (URL-safe base64 JSON; lenient about the alphabet
/// and padding, as clients differ). Empty or `{}` means anonymous.
pub fn decode_registry_auth(headers: &HeaderMap) -> Result<images::RegistryAuth, ApiError> {
    let Some(raw) = headers.get("X-Registry-Auth").and_then(|v| v.to_str().ok()) else {
        return Ok(images::RegistryAuth::default());
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(images::RegistryAuth::default());
    }
    let trimmed = raw.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .map_err(|_| ApiError::bad_request("invalid X-Registry-Auth header: not base64"))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid X-Registry-Auth header: {e}")))?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Ok(images::RegistryAuth {
        username: s("username"),
        password: s("password"),
        identity_token: s("identitytoken"),
        registry_token: s("registrytoken"),
    })
}

/// `GET /distribution/{name}/json`: the registry's descriptor for an image and the
/// platforms it serves, asked of the registry (with the client's credentials), nothing
/// pulled.
pub async fn distribution(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let Some(name) = rest.strip_suffix("/json").filter(|n| !n.is_empty()) else {
        return Err(ApiError::not_found(format!(
            "page not found: /distribution/{rest}"
        )));
    };
    let auth = decode_registry_auth(&headers)?;
    let mut client = st.services.images.clone();
    let d = call(
        IMAGED,
        client.distribution(images::DistributionRequest {
            reference: name.to_string(),
            auth: Some(auth),
        }),
    )
    .await?;
    // Docker's platform objects leave empty fields out (clients compare them whole).
    let platforms: Vec<Value> = d
        .platforms
        .iter()
        .map(|p| {
            let mut o = json!({"architecture": p.architecture, "os": p.os});
            if !p.variant.is_empty() {
                o["variant"] = json!(p.variant);
            }
            o
        })
        .collect();
    Ok(Json(json!({
        "Descriptor": {"mediaType": d.media_type, "digest": d.digest, "size": d.size},
        "Platforms": platforms,
    })))
}

/// `POST /auth` (`docker login`): imaged checks the credentials with the registry; the
/// CLI keeps them and sends them with each pull and push.
pub async fn login(
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let req = images::CheckAuthRequest {
        server: s("serveraddress"),
        username: s("username"),
        password: s("password"),
    };
    let mut c = st.services.images.clone();
    call(IMAGED, c.check_auth(req)).await?;
    Ok(Json(
        json!({"Status": "Login Succeeded", "IdentityToken": ""}),
    ))
}

/// `fromImage` + `tag` as the CLI sends them, joined into one reference.
pub fn pull_reference(from_image: &str, tag: &str) -> String {
    if tag.is_empty() {
        return from_image.to_string();
    }
    if tag.starts_with("sha256:") {
        return format!("{from_image}@{tag}");
    }
    // A tag already inside fromImage (after the last '/') wins, as in moby.
    let last = from_image.rsplit('/').next().unwrap_or(from_image);
    if last.contains(':') || from_image.contains('@') {
        from_image.to_string()
    } else {
        format!("{from_image}:{tag}")
    }
}

fn progress_json(p: &images::PullProgress) -> String {
    let mut v = serde_json::Map::new();
    if !p.aux_json.is_empty() {
        // A push's result, as Docker sends it.
        let aux: Value = serde_json::from_str(&p.aux_json).unwrap_or(Value::Null);
        let mut s = json!({"progressDetail": {}, "aux": aux}).to_string();
        s.push_str("\r\n");
        return s;
    }
    v.insert("status".into(), json!(p.status));
    if !p.id.is_empty() {
        v.insert("id".into(), json!(p.id));
    }
    if p.total > 0 || p.current > 0 {
        v.insert(
            "progressDetail".into(),
            json!({"current": p.current, "total": p.total}),
        );
    } else if !p.id.is_empty() {
        v.insert("progressDetail".into(), json!({}));
    }
    let mut s = Value::Object(v).to_string();
    s.push_str("\r\n");
    s
}

/// A stream error as the CLI reads it: it looks only at `errorDetail`.
pub fn stream_error_json(message: &str) -> String {
    let mut s = json!({"errorDetail": {"message": message}, "error": message}).to_string();
    s.push_str("\r\n");
    s
}

/// `POST /images/create?fromImage=&tag=&platform=` (pull), or `?fromSrc=-` (import of
/// the body) or `?fromSrc=<http(s) URL>` (import of what the URL serves).
pub async fn create(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    match q.get("fromSrc").map(String::as_str) {
        Some("-") => return crate::image_archive::import(st, raw.as_deref(), body, "").await,
        // imaged fetches what the URL serves.
        Some(url) if !url.is_empty() => {
            return crate::image_archive::import(st, raw.as_deref(), Body::empty(), url).await;
        }
        _ => {}
    }
    let from_image = q.get("fromImage").cloned().unwrap_or_default();
    if from_image.is_empty() {
        return Err(ApiError::bad_request("fromImage or fromSrc is required"));
    }
    let reference = pull_reference(&from_image, q.get("tag").map(String::as_str).unwrap_or(""));
    let auth = decode_registry_auth(&headers)?;
    let mut client = st.services.images.clone();
    let pulled = reference.clone();
    let req = images::PullRequest {
        reference,
        auth: Some(auth),
        platform: q.get("platform").cloned().unwrap_or_default(),
    };
    let stream = call(IMAGED, client.pull(req)).await?;
    progress_response(st, stream, "pull", pulled).await
}

/// The tag a push's result message names (`aux: {"Tag": ...}`).
fn pushed_tag(m: &images::PullProgress) -> Option<String> {
    let aux: Value = serde_json::from_str(&m.aux_json).ok()?;
    aux.get("Tag")?.as_str().map(str::to_string)
}

/// Streams a pull's or push's progress as Docker's JSON messages, and emits the image
/// event (`action`) once it succeeded.
async fn progress_response(
    st: AppState,
    mut stream: tonic::Streaming<images::PullProgress>,
    action: &'static str,
    reference: String,
) -> Result<Response, ApiError> {
    // An error before anything was written is an ordinary HTTP error (the CLI's 401 retry
    // and exit codes depend on it); later errors go into the stream.
    let first = match tokio::time::timeout(PULL_FIRST_MESSAGE_DEADLINE, stream.message()).await {
        Ok(Ok(m)) => m,
        Ok(Err(status)) => return Err(ApiError::from_status(IMAGED, status)),
        Err(_) => {
            return Err(ApiError::unavailable(
                IMAGED,
                format!("the {action} did not start in time"),
            ));
        }
    };
    // A push says which tags it pushed (`aux`): one event each (`--all-tags` pushes many).
    let pushed: Vec<String> = first.iter().filter_map(pushed_tag).collect();
    let head =
        futures_util::stream::iter(first.map(|m| Ok::<_, std::io::Error>(progress_json(&m))));
    let events = st.events.clone();
    let rest = futures_util::stream::unfold(Some((stream, pushed)), move |state| {
        let events = events.clone();
        let reference = reference.clone();
        async move {
            let (mut s, mut tags) = state?;
            match s.message().await {
                Ok(Some(m)) => {
                    tags.extend(pushed_tag(&m));
                    Some((Ok::<_, std::io::Error>(progress_json(&m)), Some((s, tags))))
                }
                Ok(None) => {
                    let shown = familiar(&reference);
                    let name = match shown.rsplit_once(':') {
                        Some((n, t)) if !t.contains('/') => n,
                        _ => shown,
                    }
                    .to_string();
                    let actors: Vec<String> = if action == "push" && !tags.is_empty() {
                        tags.iter().map(|t| format!("{name}:{t}")).collect()
                    } else {
                        vec![shown.to_string()]
                    };
                    for actor in actors {
                        events
                            .emit(
                                "image",
                                action,
                                &actor,
                                [("name".to_string(), name.clone())].into(),
                            )
                            .await;
                    }
                    None
                }
                Err(status) => {
                    let e = ApiError::from_status(IMAGED, status);
                    Some((Ok(stream_error_json(&e.message)), None))
                }
            }
        }
    });
    let body = Body::from_stream(head.chain(rest));
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// `POST /images/prune?filters=`: images no container uses; only untagged ones unless
/// the filter `dangling=false` (`docker image prune -a`).
async fn prune(st: &AppState, q: &HashMap<String, String>) -> Result<Json<Value>, ApiError> {
    let filters = crate::util::parse_filters(q)?;
    let mut only_dangling = true;
    for (k, vals) in &filters {
        match k.as_str() {
            "dangling" => {
                only_dangling = !vals.iter().any(|v| v == "false" || v == "0");
            }
            "label" | "label!" | "until" => {}
            other => return Err(ApiError::bad_request(format!("invalid filter '{other}'"))),
        }
    }
    let until = crate::util::until_filter(&filters)?;
    let mut images = st.services.images.clone();
    let mut containers = st.services.containers.clone();
    let list = call(
        IMAGED,
        images.list_images(images::ListImagesRequest { all: true }),
    )
    .await?
    .images;
    let used: std::collections::HashSet<String> = call(
        crate::services::CONTAINERD,
        containers.list(berth_proto::containers::ListRequest { all: true }),
    )
    .await?
    .containers
    .into_iter()
    .filter_map(|c| c.spec.map(|s| s.image_id))
    .collect();
    let mut deleted: Vec<Value> = Vec::new();
    let mut reclaimed: i64 = 0;
    for img in list {
        if used.contains(&img.id) || (only_dangling && !img.repo_tags.is_empty()) {
            continue;
        }
        let cfg = parse_config(&img);
        let labels = cfg
            .pointer("/config/Labels")
            .cloned()
            .unwrap_or(Value::Null);
        let labelled = crate::util::labels_pass(&filters, |k, v| match v {
            Some(v) => labels.get(k).and_then(Value::as_str) == Some(v),
            None => labels.get(k).is_some(),
        });
        if !labelled {
            continue;
        }
        if until > 0
            && parse_time(&img.created)
                .and_then(|t| t.timestamp_nanos_opt())
                .unwrap_or(0)
                >= until
        {
            continue;
        }
        // Every tag goes; the last removal deletes the image and frees its layers.
        let refs: Vec<String> = if img.repo_tags.is_empty() {
            vec![img.id.clone()]
        } else {
            img.repo_tags.clone()
        };
        for reference in refs {
            match call(
                IMAGED,
                images.remove_image(images::RemoveImageRequest {
                    reference,
                    force: false,
                }),
            )
            .await
            {
                Ok(r) => {
                    for i in r.items {
                        if i.kind == "Deleted" {
                            reclaimed += img.size;
                        }
                        deleted.push(json!({ i.kind: i.value }));
                    }
                }
                // A container may have started using it meanwhile: it stays.
                Err(e) if e.status == StatusCode::CONFLICT => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Json(
        json!({"ImagesDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}

/// A reference as Docker shows it to people: `docker.io/library/` and `docker.io/`
/// dropped.
pub fn familiar(reference: &str) -> &str {
    reference
        .strip_prefix("docker.io/library/")
        .or_else(|| reference.strip_prefix("docker.io/"))
        .unwrap_or(reference)
}

/// The parts of an image config the API reports.
pub fn parse_config(img: &images::Image) -> Value {
    serde_json::from_slice(&img.config_json).unwrap_or(Value::Null)
}

fn unix_created(img: &images::Image) -> i64 {
    parse_time(&img.created).map(|t| t.timestamp()).unwrap_or(0)
}

/// `GET /images/json`.
pub async fn list(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut client = st.services.images.clone();
    let all = crate::util::query_bool(&q, "all");
    let list = call(
        IMAGED,
        client.list_images(images::ListImagesRequest { all }),
    )
    .await?;
    let filters = crate::util::parse_filters(&q)?;
    let keep = ListFilter::new(&filters, &list.images)?;
    let mut out: Vec<Value> = list
        .images
        .iter()
        .filter(|img| keep.passes(img))
        .map(|img| {
            let mut shown = summary_json(img, -1, -1);
            if let Some((tags, digests)) = keep.matching_references(img) {
                // As dockerd: with a reference filter an image lists only the tags and
                // digests that matched, so `docker images name:tag` shows that one row.
                shown["RepoTags"] = json!(tags);
                shown["RepoDigests"] = json!(digests);
            }
            shown
        })
        .collect();
    out.sort_by_key(|v| std::cmp::Reverse(v["Created"].as_i64().unwrap_or(0)));
    Ok(Json(Value::Array(out)))
}

/// `docker images --filter`: dangling, label/label!, before/since (an image), reference
/// (a glob over `name[:tag]`, `*` not crossing `/`).
struct ListFilter<'a> {
    filters: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    before: Option<i64>,
    since: Option<i64>,
}

impl<'a> ListFilter<'a> {
    fn new(
        filters: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        all: &[images::Image],
    ) -> Result<Self, ApiError> {
        for k in filters.keys() {
            if !matches!(
                k.as_str(),
                "dangling" | "label" | "label!" | "before" | "since" | "reference"
            ) {
                return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
            }
        }
        if let Some(v) = filters.get("dangling").and_then(|v| v.iter().next())
            && !matches!(v.as_str(), "true" | "false" | "1" | "0")
        {
            // Docker's wording.
            return Err(ApiError::bad_request(format!(
                "Invalid filter 'dangling={v}'"
            )));
        }
        // before/since name an image: its creation time bounds the list.
        let created_of = |key: &str| -> Result<Option<i64>, ApiError> {
            let Some(r) = filters.get(key).and_then(|v| v.iter().next()) else {
                return Ok(None);
            };
            let hex = r.trim_start_matches("sha256:");
            all.iter()
                .find(|i| {
                    i.repo_tags.iter().any(|t| t == r || familiar(t) == r)
                        || i.repo_tags.iter().any(|t| t == &format!("{r}:latest"))
                        || (hex.len() >= 4 && i.id.trim_start_matches("sha256:").starts_with(hex))
                })
                .map(|i| Some(unix_created(i)))
                .ok_or_else(|| ApiError::not_found(format!("No such image: {r}")))
        };
        Ok(Self {
            filters,
            before: created_of("before")?,
            since: created_of("since")?,
        })
    }

    fn passes(&self, img: &images::Image) -> bool {
        if let Some(v) = self.filters.get("dangling").and_then(|v| v.iter().next()) {
            let want = matches!(v.as_str(), "true" | "1");
            if want != img.repo_tags.is_empty() {
                return false;
            }
        }
        let created = unix_created(img);
        if self.before.is_some_and(|b| created >= b) || self.since.is_some_and(|s| created <= s) {
            return false;
        }
        if let Some((tags, digests)) = self.matching_references(img)
            && tags.is_empty()
            && digests.is_empty()
        {
            return false;
        }
        let cfg = parse_config(img);
        let labels = cfg.pointer("/config/Labels").cloned().unwrap_or(json!({}));
        crate::util::labels_pass(self.filters, |k, v| match (labels.get(k), v) {
            (Some(have), Some(want)) => have.as_str() == Some(want),
            (Some(_), None) => true,
            (None, _) => false,
        })
    }
}

impl ListFilter<'_> {
    /// The tags and digests of `img` a reference filter matched (None without one).
    fn matching_references(&self, img: &images::Image) -> Option<(Vec<String>, Vec<String>)> {
        let patterns = self.filters.get("reference")?;
        let matching = |refs: &[String]| -> Vec<String> {
            refs.iter()
                .filter(|t| patterns.iter().any(|p| reference_matches(p, t)))
                .cloned()
                .collect()
        };
        Some((matching(&img.repo_tags), matching(&img.repo_digests)))
    }
}

/// Docker's reference filter: the pattern is matched (as a path glob) against the
/// familiar `name:tag`, or against the name alone when it has no tag.
pub fn reference_matches(pattern: &str, repo_tag: &str) -> bool {
    let tag_at = repo_tag.find('@').or_else(|| {
        repo_tag
            .rfind(':')
            .filter(|i| !repo_tag[*i..].contains('/'))
    });
    let name = tag_at.map_or(repo_tag, |i| &repo_tag[..i]);
    let pattern_has_tag = pattern
        .rfind(':')
        .is_some_and(|i| !pattern[i..].contains('/'));
    let subject = if pattern_has_tag { repo_tag } else { name };
    glob_match(pattern.as_bytes(), subject.as_bytes())
}

/// `*` (any run without `/`), `?` (one byte but `/`), anything else literal.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&p[1..], s)
                || (s.first().is_some_and(|c| *c != b'/') && glob_match(p, &s[1..]))
        }
        (Some(b'?'), Some(c)) if *c != b'/' => glob_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&p[1..], &s[1..]),
        _ => false,
    }
}

/// An image as `docker images` and `docker system df` list it (-1: not measured).
pub fn summary_json(img: &images::Image, shared_size: i64, containers: i64) -> Value {
    let cfg = parse_config(img);
    let labels = cfg.pointer("/config/Labels").cloned().unwrap_or(json!({}));
    json!({
        "Id": img.id,
        "ParentId": img.parent,
        "RepoTags": img.repo_tags,
        "RepoDigests": img.repo_digests,
        "Created": unix_created(img),
        "Size": img.size,
        "SharedSize": shared_size,
        "Labels": if labels.is_null() { json!({}) } else { labels },
        "Containers": containers,
    })
}

/// The JSON of `docker image inspect`.
pub fn inspect_json(img: &images::Image) -> Value {
    let cfg = parse_config(img);
    json!({
        "Id": img.id,
        "RepoTags": img.repo_tags,
        "RepoDigests": img.repo_digests,
        "Parent": img.parent,
        "Comment": cfg.get("comment").cloned().unwrap_or(json!("")),
        "Created": if img.created.is_empty() { ZERO_TIME.to_string() } else { img.created.clone() },
        "DockerVersion": cfg.get("docker_version").cloned().unwrap_or(json!("")),
        "Author": cfg.get("author").cloned().unwrap_or(json!("")),
        "Config": cfg.get("config").cloned().unwrap_or(Value::Null),
        "Architecture": img.architecture,
        "Os": img.os,
        "Size": img.size,
        "GraphDriver": {"Name": "overlay2", "Data": null},
        "RootFS": {"Type": "layers", "Layers": img.diff_ids},
        "Metadata": {"LastTagTime": ZERO_TIME},
    })
}

/// `GET /images/{name}/json` (names contain slashes, so the route is a wildcard).
pub async fn get_by_path(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    if rest == "get" {
        let names = crate::image_archive::RepeatedQuery::parse(raw.as_deref()).all("names");
        return crate::image_archive::save(st, names).await;
    }
    if let Some(name) = rest.strip_suffix("/get") {
        return crate::image_archive::save(st, vec![name.to_string()]).await;
    }
    if let Some(name) = rest.strip_suffix("/json") {
        let mut client = st.services.images.clone();
        let img = call(
            IMAGED,
            client.get_image(images::GetImageRequest {
                reference: name.to_string(),
            }),
        )
        .await?;
        return Ok(Json(inspect_json(&img)).into_response());
    }
    if let Some(name) = rest.strip_suffix("/history") {
        let mut client = st.services.images.clone();
        let h = call(
            IMAGED,
            client.history(images::HistoryRequest {
                reference: name.to_string(),
            }),
        )
        .await?;
        let entries: Vec<Value> = h
            .entries
            .into_iter()
            .map(|e| {
                json!({
                    "Id": e.id,
                    "Created": e.created_unix,
                    "CreatedBy": e.created_by,
                    "Tags": if e.tags.is_empty() { Value::Null } else { json!(e.tags) },
                    "Size": e.size,
                    "Comment": e.comment,
                })
            })
            .collect();
        return Ok(Json(entries).into_response());
    }
    if rest == "get" || rest.ends_with("/get") {
        return Err(ApiError::not_supported("docker save"));
    }
    if rest == "search" {
        return Err(ApiError::not_supported("docker search"));
    }
    Err(ApiError::not_found("page not found"))
}

/// `DELETE /images/{name}?force=&noprune=`: `[{"Untagged": ..}, {"Deleted": ..}]`.
pub async fn delete_by_path(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut client = st.services.images.clone();
    let removed = call(
        IMAGED,
        client.remove_image(images::RemoveImageRequest {
            reference: rest,
            force: crate::util::query_bool(&q, "force"),
        }),
    )
    .await?;
    for i in &removed.items {
        let action = if i.kind == "Untagged" {
            "untag"
        } else {
            "delete"
        };
        st.events
            .emit(
                "image",
                action,
                &i.value,
                [("name".to_string(), i.value.clone())].into(),
            )
            .await;
    }
    let items: Vec<Value> = removed
        .items
        .into_iter()
        .map(|i| json!({ i.kind: i.value }))
        .collect();
    Ok(Json(items).into_response())
}

/// `POST /images/{name}/tag|push`, `/images/load`, `/images/prune`.
pub async fn post_by_path(
    State(st): State<AppState>,
    method: Method,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if rest == "prune" {
        return prune(&st, &q).await.map(IntoResponse::into_response);
    }
    if rest == "load" {
        return crate::image_archive::load(st, body).await;
    }
    if let Some(name) = rest.strip_suffix("/push") {
        // No tag: `docker push --all-tags`, every local tag of the repository.
        let tag = q.get("tag").map(String::as_str).unwrap_or("");
        let reference = if tag.is_empty() {
            name.to_string()
        } else {
            format!("{name}:{tag}")
        };
        let req = images::PushRequest {
            reference: reference.clone(),
            auth: Some(decode_registry_auth(&headers)?),
            all_tags: tag.is_empty(),
        };
        let mut client = st.services.images.clone();
        let stream = call(IMAGED, client.push(req)).await?;
        return progress_response(st, stream, "push", reference).await;
    }
    if let Some(source) = rest.strip_suffix("/tag") {
        let repo = q.get("repo").cloned().unwrap_or_default();
        if repo.is_empty() {
            return Err(ApiError::bad_request(
                "repository name must have at least one component",
            ));
        }
        let tag = q.get("tag").filter(|t| !t.is_empty());
        let target = match tag {
            Some(t) => format!("{repo}:{t}"),
            None => repo,
        };
        let mut client = st.services.images.clone();
        call(
            IMAGED,
            client.tag(images::TagRequest {
                source: source.to_string(),
                target: target.clone(),
            }),
        )
        .await?;
        st.events
            .emit(
                "image",
                "tag",
                source,
                [("name".to_string(), familiar(&target).to_string())].into(),
            )
            .await;
        return Ok(StatusCode::CREATED.into_response());
    }
    let what = match rest.rsplit('/').next().unwrap_or("") {
        "push" => "docker push".to_string(),
        _ => format!("{method} /images/{rest}"),
    };
    Err(ApiError::not_supported(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_reference_joins_like_the_cli() {
        assert_eq!(
            pull_reference("docker.io/library/busybox", "latest"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            pull_reference("127.0.0.1:5000/busybox", "v1"),
            "127.0.0.1:5000/busybox:v1"
        );
        assert_eq!(
            pull_reference("127.0.0.1:5000/busybox", ""),
            "127.0.0.1:5000/busybox"
        );
        assert_eq!(
            pull_reference("busybox", "sha256:abc"),
            "busybox@sha256:abc"
        );
    }

    #[test]
    fn registry_auth_decodes_leniently() {
        let mut h = HeaderMap::new();
        let json = r#"{"username":"u","password":"p?>"}"#;
        let enc = base64::engine::general_purpose::URL_SAFE.encode(json);
        h.insert("X-Registry-Auth", HeaderValue::from_str(&enc).unwrap());
        let a = decode_registry_auth(&h).unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p?>"));
        let enc = base64::engine::general_purpose::STANDARD_NO_PAD.encode(json);
        h.insert("X-Registry-Auth", HeaderValue::from_str(&enc).unwrap());
        assert_eq!(decode_registry_auth(&h).unwrap().username, "u");
        h.insert("X-Registry-Auth", HeaderValue::from_static("e30="));
        assert_eq!(
            decode_registry_auth(&h).unwrap(),
            images::RegistryAuth::default()
        );
        h.insert("X-Registry-Auth", HeaderValue::from_static("!!!"));
        assert!(decode_registry_auth(&h).is_err());
    }

    #[test]
    fn reference_filters_glob_like_docker() {
        assert!(reference_matches("busybox", "busybox:latest"));
        assert!(reference_matches("busy*", "busybox:latest"));
        assert!(reference_matches("busybox:lat*", "busybox:latest"));
        assert!(!reference_matches("busybox:v1", "busybox:latest"));
        assert!(reference_matches(
            "*/busybox",
            "127.0.0.1:5000/busybox:latest"
        ));
        assert!(reference_matches(
            "127.0.0.1:5000/*",
            "127.0.0.1:5000/busybox:latest"
        ));
        assert!(!reference_matches("*", "library/busybox:latest"));
        assert!(reference_matches("*/*", "library/busybox:latest"));
    }

    #[test]
    fn progress_messages_are_docker_json_lines() {
        let p = images::PullProgress {
            status: "Downloading".into(),
            id: "abc".into(),
            current: 5,
            total: 10,
            ..Default::default()
        };
        let s = progress_json(&p);
        assert!(s.ends_with("\r\n"));
        let v: Value = serde_json::from_str(s.trim()).unwrap();
        assert_eq!(v["progressDetail"]["total"], 10);
        let aux = images::PullProgress {
            aux_json: r#"{"Tag":"v2","Digest":"sha256:x","Size":9}"#.into(),
            ..Default::default()
        };
        let v: Value = serde_json::from_str(progress_json(&aux).trim()).unwrap();
        assert_eq!(v["aux"]["Tag"], "v2");
        assert!(v.get("status").is_none());
        let e: Value = serde_json::from_str(stream_error_json("boom").trim()).unwrap();
        assert_eq!(e["errorDetail"]["message"], "boom");
    }
}
