//! A container's mounts, parsed, checked and merged as Docker does (moby's
//! `volume/mounts` Linux parser, `registerMountPoints` and the anonymous volumes of
//! `createContainerVolumesOS`): `--volumes-from` first, then `-v` (`Binds`) and `--mount`
//! (`HostConfig.Mounts`) over them, `--tmpfs` (`HostConfig.Tmpfs`), and an anonymous
//! volume for every `Volumes` path of the image and the request that nothing else
//! covers. Error texts are Docker's, since the CLI prints them as they are.
//!
//! Volumes are attached by volumed (which creates, mounts and fills them); this module
//! then turns everything into the container's mounts and the `Mounts` that inspect shows.

use crate::AppState;
use crate::error::ApiError;
use berth_proto::{containers as cpb, volumes as vpb};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What is mounted at a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A volume (anonymous when `name` is empty), attached by volumed.
    Volume {
        name: String,
        /// Docker's `nocopy`: no copy of the image's content into an empty volume.
        no_copy: bool,
        /// `--mount volume-label=`, for a volume this creates.
        labels: BTreeMap<String, String>,
        /// `--mount volume-opt=`, for a volume this creates.
        driver_options: BTreeMap<String, String>,
    },
    /// A host path.
    Bind {
        source: String,
        propagation: String,
        /// Create a missing source directory (`-v` does, as Docker; `--mount` with
        /// `bind-create-src`).
        create_source: bool,
        /// `rro`: read-only all the way down (`ro-force-recursive`).
        recursive_ro: bool,
    },
    /// A tmpfs with its mount options (Docker's defaults merged in).
    Tmpfs {
        options: Vec<String>,
        /// From `--mount`: shown in inspect's `Mounts` (a `--tmpfs` is not, in Docker).
        shown: bool,
    },
}

/// One mount point of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// Clean absolute path in the container.
    pub destination: String,
    pub read_only: bool,
    /// Inspect's `Mode`: the `-v` mode string (`z` for a named `-v` volume).
    pub mode: String,
    pub kind: Kind,
}

fn invalid_spec(raw: &str) -> String {
    format!("invalid volume specification: '{raw}'")
}

/// Go's `path.Clean` for absolute and relative slash paths.
pub fn clean_path(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !abs {
                    out.push("..");
                }
            }
            x => out.push(x),
        }
    }
    let joined = out.join("/");
    match (abs, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

const RW_MODES: [&str; 5] = ["rw", "ro", "ro-non-recursive", "ro-force-recursive", "rro"];
const LABEL_MODES: [&str; 2] = ["z", "Z"];
const PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];
const CONSISTENCY: [&str; 3] = ["consistent", "cached", "delegated"];

/// moby's `linuxValidMountMode`: known words, at most one of each kind.
fn valid_mode(mode: &str) -> bool {
    if mode.is_empty() {
        return true;
    }
    let mut counts = [0usize; 5];
    for o in mode.split(',') {
        let kind = if RW_MODES.contains(&o) {
            0
        } else if LABEL_MODES.contains(&o) {
            1
        } else if PROPAGATIONS.contains(&o) {
            2
        } else if o == "nocopy" {
            3
        } else if CONSISTENCY.contains(&o) {
            4
        } else {
            return false;
        };
        counts[kind] += 1;
    }
    counts.iter().all(|c| *c <= 1)
}

fn mode_words(mode: &str) -> impl Iterator<Item = &str> {
    mode.split(',').filter(|w| !w.is_empty())
}

/// Destination rules of `validateMountConfigImpl`.
fn check_target(target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("field Target must not be empty".into());
    }
    if clean_path(target) == "/" {
        return Err("invalid specification: destination can't be '/'".into());
    }
    if !target.starts_with('/') {
        return Err(format!(
            "invalid mount path: '{target}' mount path must be absolute"
        ));
    }
    Ok(())
}

/// Propagation other than private needs the source's mount to be shared or a slave,
/// and the container's root propagation to follow; Berth does not set that up yet.
fn check_propagation(p: &str) -> Result<(), ApiError> {
    match p {
        "" | "private" | "rprivate" => Ok(()),
        other => Err(ApiError::not_supported(format!(
            "mount propagation \"{other}\""
        ))),
    }
}

/// Parses one `-v` / `Binds` entry as moby's `ParseMountRaw`: `dst` (anonymous volume),
/// `src:dst` or `src:dst:mode`; `src` an absolute host path or a volume name.
pub fn parse_bind(raw: &str) -> Result<MountPoint, ApiError> {
    let bad = |m: String| ApiError::bad_request(m);
    let arr: Vec<&str> = raw.splitn(4, ':').collect();
    if arr[0].is_empty() {
        return Err(bad(invalid_spec(raw)));
    }
    let (source, target, mode) = match arr.as_slice() {
        [t] => ("", *t, ""),
        [s, t] => {
            // `/foo:rw`: a destination and a mode is not a volume.
            if valid_mode(t) {
                return Err(bad(invalid_spec(raw)));
            }
            (*s, *t, "")
        }
        [s, t, m] => (*s, *t, *m),
        _ => return Err(bad(invalid_spec(raw))),
    };
    if !valid_mode(mode) {
        return Err(bad(format!("invalid mode: {mode}")));
    }
    if let Err(e) = check_target(target) {
        let kind = if source.starts_with('/') {
            "bind"
        } else {
            "volume"
        };
        return Err(bad(format!(
            "{}: invalid mount config for type \"{kind}\": {e}",
            invalid_spec(raw)
        )));
    }
    let words: Vec<&str> = mode_words(mode).collect();
    let read_only = words
        .iter()
        .any(|w| matches!(*w, "ro" | "ro-non-recursive" | "ro-force-recursive" | "rro"));
    let propagation = words
        .iter()
        .find(|w| PROPAGATIONS.contains(w))
        .copied()
        .unwrap_or("rprivate");
    check_propagation(propagation)?;
    let destination = clean_path(target);
    let kind = if source.starts_with('/') {
        Kind::Bind {
            source: clean_path(source),
            propagation: propagation.to_string(),
            create_source: true,
            recursive_ro: words
                .iter()
                .any(|w| matches!(*w, "ro-force-recursive" | "rro")),
        }
    } else {
        Kind::Volume {
            name: source.to_string(),
            no_copy: words.contains(&"nocopy"),
            labels: BTreeMap::new(),
            driver_options: BTreeMap::new(),
        }
    };
    // Docker's `setBindModeIfNull`: a local volume from `-v` shows mode "z".
    let mode = if mode.is_empty() && matches!(kind, Kind::Volume { .. }) {
        "z".to_string()
    } else {
        mode.to_string()
    };
    Ok(MountPoint {
        destination,
        read_only,
        mode,
        kind,
    })
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn present(v: Option<&Value>) -> bool {
    v.is_some_and(|v| !v.is_null())
}

/// `TmpfsOptions` as moby's `ConvertTmpfsOptions`: `ro`, `mode=<octal>`, `size=<n><k|m|g>`
/// and the `exec`/`noexec` flags.
fn tmpfs_data(opts: Option<&Value>, read_only: bool) -> Result<Vec<String>, String> {
    let mut raw: Vec<String> = Vec::new();
    if read_only {
        raw.push("ro".into());
    }
    let Some(o) = opts.filter(|v| !v.is_null()) else {
        return Ok(raw);
    };
    if let Some(mode) = o.get("Mode").and_then(Value::as_u64).filter(|m| *m != 0) {
        raw.push(format!("mode={mode:o}"));
    }
    if let Some(size) = o
        .get("SizeBytes")
        .and_then(Value::as_i64)
        .filter(|s| *s != 0)
    {
        let mut out = format!("size={size}");
        for (suffix, div) in [("g", 1i64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
            if size % div == 0 {
                out = format!("size={}{suffix}", size / div);
                break;
            }
        }
        raw.push(out);
    }
    for opt in o
        .get("Options")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let parts: Vec<&str> = opt
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if parts.is_empty() || parts.len() > 2 {
            return Err("invalid option array length".into());
        }
        if !matches!(parts[0], "exec" | "noexec") {
            return Err(format!("invalid option: {}", parts[0]));
        }
        raw.push(parts.join("="));
    }
    Ok(raw)
}

/// Flags moby's `MergeTmpfsOptions` knows; the key groups words that cancel each other.
fn tmpfs_flag_key(word: &str) -> Option<&'static str> {
    Some(match word {
        "ro" | "rw" => "ro",
        "suid" | "nosuid" => "suid",
        "dev" | "nodev" => "dev",
        "exec" | "noexec" => "exec",
        "sync" | "async" => "sync",
        "dirsync" => "dirsync",
        "remount" => "remount",
        "mand" | "nomand" => "mand",
        "atime" | "noatime" => "atime",
        "diratime" | "nodiratime" => "diratime",
        "relatime" | "norelatime" => "relatime",
        "strictatime" | "nostrictatime" => "strictatime",
        "bind" | "rbind" | "unbindable" | "runbindable" | "private" | "rprivate" | "shared"
        | "rshared" | "slave" | "rslave" => "propagation",
        _ => return None,
    })
}

/// Docker's tmpfs options: `noexec,nosuid,nodev` first, then the user's, merged as
/// moby's `MergeTmpfsOptions` (the last word of a kind wins; data keys limited to
/// size, mode, uid, gid, nr_inodes, nr_blocks, mpol). Propagation words are dropped:
/// a tmpfs is private in the container anyway.
pub fn merge_tmpfs_options(user: &[String]) -> Result<Vec<String>, ApiError> {
    let all: Vec<String> = ["noexec", "nosuid", "nodev"]
        .iter()
        .map(|s| s.to_string())
        .chain(user.iter().filter(|w| !w.is_empty()).cloned())
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for word in all.iter().rev() {
        if word == "defaults" {
            continue;
        }
        if let Some(key) = tmpfs_flag_key(word) {
            if seen.insert(format!("flag:{key}")) && key != "propagation" {
                out.push(word.clone());
            }
            continue;
        }
        let key = word.split_once('=').map(|(k, _)| k).unwrap_or(word);
        if !matches!(
            key,
            "size" | "mode" | "uid" | "gid" | "nr_inodes" | "nr_blocks" | "mpol"
        ) {
            return Err(ApiError::bad_request(format!(
                "invalid tmpfs option \"{key}\""
            )));
        }
        if seen.insert(format!("data:{key}")) {
            out.push(word.clone());
        }
    }
    out.reverse();
    Ok(out)
}

/// Parses one `HostConfig.Mounts` entry (`--mount`) as moby's `ParseMountSpec`.
pub fn parse_mount(m: &Value) -> Result<MountPoint, ApiError> {
    let typ = m.get("Type").and_then(Value::as_str).unwrap_or("");
    let source = m.get("Source").and_then(Value::as_str).unwrap_or("");
    let target = m.get("Target").and_then(Value::as_str).unwrap_or("");
    let read_only = m.get("ReadOnly").and_then(Value::as_bool).unwrap_or(false);
    let bind_opts = m.get("BindOptions").filter(|v| !v.is_null());
    let vol_opts = m.get("VolumeOptions").filter(|v| !v.is_null());
    let tmpfs_opts = m.get("TmpfsOptions").filter(|v| !v.is_null());
    let err =
        |e: String| ApiError::bad_request(format!("invalid mount config for type \"{typ}\": {e}"));
    let extra = |field: &str| err(format!("field {field} must not be specified"));
    check_target(target).map_err(err)?;
    let destination = clean_path(target);
    let kind = match typ {
        "bind" => {
            if source.is_empty() {
                return Err(err("field Source must not be empty".into()));
            }
            if vol_opts.is_some() {
                return Err(extra("VolumeOptions"));
            }
            if present(m.get("TmpfsOptions")) {
                return Err(extra("TmpfsOptions"));
            }
            let flag = |k: &str| {
                bind_opts
                    .and_then(|b| b.get(k))
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            };
            let propagation = bind_opts
                .and_then(|b| b.get("Propagation"))
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .unwrap_or("rprivate");
            if !PROPAGATIONS.contains(&propagation) {
                return Err(err(format!("invalid propagation mode: {propagation}")));
            }
            if !source.starts_with('/') {
                return Err(err(format!(
                    "invalid mount path: '{source}' mount path must be absolute"
                )));
            }
            let create_source = flag("CreateMountpoint");
            if !create_source && !std::path::Path::new(source).exists() {
                return Err(err(format!("bind source path does not exist: {source}")));
            }
            check_propagation(propagation)?;
            if flag("NonRecursive") {
                return Err(ApiError::not_supported(
                    "non-recursive bind mounts (bind-recursive=disabled)",
                ));
            }
            let (ro_non_rec, ro_force) =
                (flag("ReadOnlyNonRecursive"), flag("ReadOnlyForceRecursive"));
            if !read_only && ro_non_rec {
                return Err(ApiError::bad_request(
                    "mount options conflict: !ReadOnly && BindOptions.ReadOnlyNonRecursive",
                ));
            }
            if !read_only && ro_force {
                return Err(ApiError::bad_request(
                    "mount options conflict: !ReadOnly && BindOptions.ReadOnlyForceRecursive",
                ));
            }
            if ro_non_rec && ro_force {
                return Err(ApiError::bad_request(
                    "mount options conflict: ReadOnlyNonRecursive && BindOptions.ReadOnlyForceRecursive",
                ));
            }
            Kind::Bind {
                source: clean_path(source),
                propagation: propagation.to_string(),
                create_source,
                recursive_ro: ro_force,
            }
        }
        "volume" => {
            if bind_opts.is_some() {
                return Err(extra("BindOptions"));
            }
            if present(m.get("TmpfsOptions")) {
                return Err(extra("TmpfsOptions"));
            }
            let anonymous = source.is_empty();
            let subpath = vol_opts
                .and_then(|v| v.get("Subpath"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if !subpath.is_empty() {
                if anonymous {
                    return Err(err(
                        "must not set Subpath when using anonymous volumes".into()
                    ));
                }
                return Err(ApiError::not_supported("volume subpaths (volume-subpath)"));
            }
            if read_only && anonymous {
                return Err(err(
                    "must not set ReadOnly mode when using anonymous volumes".into(),
                ));
            }
            let driver = vol_opts
                .and_then(|v| v.pointer("/DriverConfig/Name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if !driver.is_empty() && driver != "local" {
                return Err(ApiError::bad_request(format!(
                    "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
                )));
            }
            Kind::Volume {
                name: source.to_string(),
                no_copy: vol_opts
                    .and_then(|v| v.get("NoCopy"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                labels: string_map(vol_opts.and_then(|v| v.get("Labels"))),
                driver_options: string_map(
                    vol_opts.and_then(|v| v.pointer("/DriverConfig/Options")),
                ),
            }
        }
        "tmpfs" => {
            if bind_opts.is_some() {
                return Err(extra("BindOptions"));
            }
            if vol_opts.is_some() {
                return Err(extra("VolumeOptions"));
            }
            if !source.is_empty() {
                return Err(extra("Source"));
            }
            let data = tmpfs_data(tmpfs_opts, read_only).map_err(err)?;
            Kind::Tmpfs {
                options: merge_tmpfs_options(&data)?,
                shown: true,
            }
        }
        "image" => return Err(ApiError::not_supported("image mounts (--mount type=image)")),
        _ => return Err(err("mount type unknown".into())),
    };
    let mode = if matches!(kind, Kind::Volume { .. }) {
        "z".to_string()
    } else {
        String::new()
    };
    Ok(MountPoint {
        destination,
        read_only,
        mode,
        kind,
    })
}

/// moby's `ParseVolumesFrom`: `container[:ro|rw]`; returns (container, read-write).
pub fn parse_volumes_from(spec: &str) -> Result<(String, bool), ApiError> {
    if spec.is_empty() {
        return Err(ApiError::bad_request(
            "volumes-from specification cannot be an empty string",
        ));
    }
    let (id, mode) = spec.split_once(':').unwrap_or((spec, ""));
    if mode.is_empty() {
        return Ok((id.to_string(), true));
    }
    let words: Vec<&str> = mode_words(mode).collect();
    if !valid_mode(mode)
        || words
            .iter()
            .any(|w| PROPAGATIONS.contains(w) || *w == "nocopy")
    {
        return Err(ApiError::bad_request(format!("invalid mode: {mode}")));
    }
    Ok((id.to_string(), !words.contains(&"ro")))
}

/// The mount points of an existing container, from what its create stored (the
/// `Mounts` inspect shows): the source of `--volumes-from`.
fn stored_mounts(c: &cpb::Container, rw: bool) -> Vec<MountPoint> {
    let spec = c.spec.clone().unwrap_or_default();
    let ns: Value = serde_json::from_slice(&spec.network_settings_json).unwrap_or(Value::Null);
    let s = |m: &Value, k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    ns.get("mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let writable = m.get("RW").and_then(Value::as_bool).unwrap_or(true);
            let kind = match s(m, "Type").as_str() {
                // Docker copies no data into volumes taken from another container.
                "volume" => Kind::Volume {
                    name: s(m, "Name"),
                    no_copy: true,
                    labels: BTreeMap::new(),
                    driver_options: BTreeMap::new(),
                },
                "bind" => Kind::Bind {
                    source: s(m, "Source"),
                    propagation: Some(s(m, "Propagation"))
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "rprivate".into()),
                    create_source: false,
                    recursive_ro: false,
                },
                // A tmpfs belongs to its container; there is nothing to share.
                _ => return None,
            };
            Some(MountPoint {
                destination: s(m, "Destination"),
                read_only: !(writable && rw),
                mode: String::new(),
                kind,
            })
        })
        .collect()
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn duplicate(dst: &str) -> ApiError {
    ApiError::bad_request(format!("Duplicate mount point: {dst}"))
}

/// Every mount point of a container being created, by destination.
#[derive(Debug, Default)]
pub struct Plan {
    points: BTreeMap<String, MountPoint>,
}

impl Plan {
    /// Parses and checks the request's mounts without looking anything up: `Binds`,
    /// `Mounts`, `Tmpfs`, and `Volumes` (the request's and `image_volumes`, the image
    /// config's). `volumes_from` are the mount points taken from other containers.
    pub fn from_parts(
        host_config: &Value,
        volumes_from: Vec<MountPoint>,
        volumes: &[String],
    ) -> Result<Self, ApiError> {
        let driver = host_config
            .get("VolumeDriver")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut points: BTreeMap<String, MountPoint> = BTreeMap::new();
        for mp in volumes_from {
            points.insert(mp.destination.clone(), mp);
        }
        let tmpfs: BTreeMap<String, String> = string_map(host_config.get("Tmpfs"));
        let mut tmpfs_points = Vec::new();
        for (dest, data) in &tmpfs {
            check_target(dest).map_err(ApiError::bad_request)?;
            let user: Vec<String> = data.split(',').map(str::to_string).collect();
            tmpfs_points.push(MountPoint {
                destination: clean_path(dest),
                read_only: false,
                mode: String::new(),
                kind: Kind::Tmpfs {
                    options: merge_tmpfs_options(&user)?,
                    shown: false,
                },
            });
        }
        let mut taken: std::collections::BTreeSet<String> =
            tmpfs_points.iter().map(|t| t.destination.clone()).collect();
        for raw in string_list(host_config.get("Binds")) {
            let mp = parse_bind(&raw)?;
            if !taken.insert(mp.destination.clone()) {
                return Err(duplicate(&mp.destination));
            }
            points.insert(mp.destination.clone(), mp);
        }
        for m in host_config
            .get("Mounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mp = parse_mount(m)?;
            if !taken.insert(mp.destination.clone()) {
                let target = m.get("Target").and_then(Value::as_str).unwrap_or("");
                return Err(duplicate(target));
            }
            points.insert(mp.destination.clone(), mp);
        }
        for t in tmpfs_points {
            points.insert(t.destination.clone(), t);
        }
        for v in volumes {
            let dest = clean_path(v);
            if !dest.starts_with('/') || dest == "/" {
                return Err(ApiError::bad_request(format!(
                    "{}: invalid mount config for type \"volume\": {}",
                    invalid_spec(v),
                    check_target(v).err().unwrap_or_default()
                )));
            }
            // Not an error: the image may declare a path the user mounts something on.
            points.entry(dest.clone()).or_insert(MountPoint {
                destination: dest,
                read_only: false,
                mode: String::new(),
                kind: Kind::Volume {
                    name: String::new(),
                    no_copy: false,
                    labels: BTreeMap::new(),
                    driver_options: BTreeMap::new(),
                },
            });
        }
        // dockerd looks the driver up only for a volume it has to create: a container
        // with none is created with the name recorded.
        let makes_volumes = points
            .values()
            .any(|p| matches!(p.kind, Kind::Volume { .. }));
        if makes_volumes && !driver.is_empty() && driver != "local" {
            return Err(ApiError::bad_request(format!(
                "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
            )));
        }
        Ok(Self { points })
    }

    /// The mounts of the create request `req` (with its `HostConfig`) over the image
    /// config `image_config`, `--volumes-from` looked up in containerd-svc.
    pub async fn build(
        st: &AppState,
        req: &Value,
        host_config: &Value,
        image_config: &Value,
    ) -> Result<Self, ApiError> {
        let mut from = Vec::new();
        for spec in string_list(host_config.get("VolumesFrom")) {
            let (id, rw) = parse_volumes_from(&spec)?;
            // Docker: a missing container is a bad parameter here, not a 404 (which
            // would also make the CLI pull the image again).
            let c = crate::containers::get_container(st, &id)
                .await
                .map_err(|e| match e.status.as_u16() {
                    404 => ApiError::bad_request(e.message),
                    _ => e,
                })?;
            from.extend(stored_mounts(&c, rw));
        }
        let mut volumes: Vec<String> = Vec::new();
        for src in [image_config.get("Volumes"), req.get("Volumes")] {
            if let Some(m) = src.and_then(Value::as_object) {
                volumes.extend(m.keys().cloned());
            }
        }
        Self::from_parts(host_config, from, &volumes)
    }

    /// The mount points, by destination.
    pub fn points(&self) -> impl Iterator<Item = &MountPoint> {
        self.points.values()
    }

    /// What volumed must attach, in destination order.
    pub fn volume_requests(&self) -> Vec<vpb::VolumeMountRequest> {
        self.points
            .values()
            .filter_map(|mp| match &mp.kind {
                Kind::Volume {
                    name,
                    no_copy,
                    labels,
                    driver_options,
                } => Some(vpb::VolumeMountRequest {
                    name: name.clone(),
                    destination: mp.destination.clone(),
                    read_only: mp.read_only,
                    no_copy: *no_copy,
                    labels: labels.clone().into_iter().collect(),
                    driver_options: driver_options.clone().into_iter().collect(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The container's mounts (parents before children, as Docker sorts them, so a
    /// mount on /data never hides one on /data/x) and inspect's `Mounts`, given what
    /// volumed attached. Creates the missing source directories of `-v` binds, as
    /// Docker does.
    pub fn container_mounts(
        &self,
        attached: &[vpb::VolumeMount],
    ) -> Result<(Vec<cpb::Mount>, Vec<Value>), ApiError> {
        let by_dest: BTreeMap<&str, &vpb::VolumeMount> = attached
            .iter()
            .map(|m| (m.destination.as_str(), m))
            .collect();
        let mut mounts = Vec::new();
        let mut shown = Vec::new();
        for mp in self.points.values() {
            let ro = if mp.read_only {
                vec!["ro".to_string()]
            } else {
                vec![]
            };
            match &mp.kind {
                Kind::Volume { .. } => {
                    let v = by_dest.get(mp.destination.as_str()).ok_or_else(|| {
                        ApiError::internal(format!(
                            "volumed attached no volume at {}",
                            mp.destination
                        ))
                    })?;
                    mounts.push(cpb::Mount {
                        source: v.source.clone(),
                        destination: mp.destination.clone(),
                        r#type: "bind".into(),
                        options: ro,
                    });
                    shown.push(json!({"Type": "volume", "Name": v.name, "Source": v.source,
                        "Destination": mp.destination, "Driver": "local", "Mode": mp.mode,
                        "RW": !mp.read_only, "Propagation": ""}));
                }
                Kind::Bind {
                    source,
                    propagation,
                    create_source,
                    recursive_ro,
                } => {
                    let path = std::path::Path::new(source);
                    if *create_source && !path.exists() {
                        std::fs::create_dir_all(path).map_err(|e| {
                            ApiError::bad_request(format!(
                                "error while creating mount source path '{source}': {e}"
                            ))
                        })?;
                    } else if !path.exists() {
                        return Err(ApiError::bad_request(format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {source}"
                        )));
                    }
                    let mut options = ro;
                    if *recursive_ro {
                        options.push("rro".into());
                    }
                    if propagation == "private" {
                        options.push("private".into());
                    }
                    mounts.push(cpb::Mount {
                        source: source.clone(),
                        destination: mp.destination.clone(),
                        r#type: "bind".into(),
                        options,
                    });
                    shown.push(json!({"Type": "bind", "Source": source,
                        "Destination": mp.destination, "Mode": mp.mode,
                        "RW": !mp.read_only, "Propagation": propagation}));
                }
                Kind::Tmpfs { options, shown: s } => {
                    mounts.push(cpb::Mount {
                        source: "tmpfs".into(),
                        destination: mp.destination.clone(),
                        r#type: "tmpfs".into(),
                        options: options.clone(),
                    });
                    if *s {
                        shown.push(json!({"Type": "tmpfs", "Source": "",
                            "Destination": mp.destination, "Mode": "",
                            "RW": !mp.read_only, "Propagation": ""}));
                    }
                }
            }
        }
        mounts.sort_by_key(|m| m.destination.matches('/').count());
        Ok((mounts, shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(name: &str) -> Kind {
        Kind::Volume {
            name: name.into(),
            no_copy: false,
            labels: BTreeMap::new(),
            driver_options: BTreeMap::new(),
        }
    }

    #[test]
    fn paths_clean_like_go() {
        assert_eq!(clean_path("/data/"), "/data");
        assert_eq!(clean_path("//a/./b/../c"), "/a/c");
        assert_eq!(clean_path("/.."), "/");
        assert_eq!(clean_path("rel/x/.."), "rel");
    }

    #[test]
    fn binds_parse_like_docker() {
        let mp = parse_bind("data:/data:ro").unwrap();
        assert_eq!(mp.kind, vol("data"));
        assert!(mp.read_only);
        assert_eq!(mp.mode, "ro");
        let mp = parse_bind("data:/data/").unwrap();
        assert_eq!(mp.destination, "/data");
        assert_eq!(mp.mode, "z");
        assert!(!mp.read_only);
        let mp = parse_bind("/srv:/srv:z").unwrap();
        assert_eq!(
            mp.kind,
            Kind::Bind {
                source: "/srv".into(),
                propagation: "rprivate".into(),
                create_source: true,
                recursive_ro: false
            }
        );
        assert_eq!(mp.mode, "z");
        // A lone path: an anonymous volume.
        let mp = parse_bind("/cache").unwrap();
        assert_eq!(mp.kind, vol(""));
        let mp = parse_bind("v:/x:nocopy,ro").unwrap();
        assert!(matches!(mp.kind, Kind::Volume { no_copy: true, .. }));
        assert!(parse_bind("/h:/x:rro").is_ok_and(|m| matches!(
            m.kind,
            Kind::Bind {
                recursive_ro: true,
                ..
            }
        )));

        let msg = |s: &str| parse_bind(s).unwrap_err().message;
        assert_eq!(
            msg("data:rel"),
            "invalid volume specification: 'data:rel': invalid mount config for type \"volume\": invalid mount path: 'rel' mount path must be absolute"
        );
        assert_eq!(msg("a:/b:bogus"), "invalid mode: bogus");
        assert_eq!(msg("a:/b:ro,rw"), "invalid mode: ro,rw");
        assert_eq!(msg("/foo:rw"), "invalid volume specification: '/foo:rw'");
        assert_eq!(msg(":/x"), "invalid volume specification: ':/x'");
        assert_eq!(
            msg("a:/b:ro:x"),
            "invalid volume specification: 'a:/b:ro:x'"
        );
        assert_eq!(
            msg("/h:/"),
            "invalid volume specification: '/h:/': invalid mount config for type \"bind\": invalid specification: destination can't be '/'"
        );
        let e = parse_bind("/h:/x:rshared").unwrap_err();
        assert_eq!(e.status, 501);
    }

    #[test]
    fn mounts_parse_and_check_like_docker() {
        let m = |v: Value| parse_mount(&v);
        let mp = m(
            json!({"Type": "volume", "Source": "v", "Target": "/d", "ReadOnly": true,
            "VolumeOptions": {"NoCopy": true, "Labels": {"a": "b"},
            "DriverConfig": {"Options": {"type": "tmpfs", "device": "tmpfs"}}}}),
        )
        .unwrap();
        assert!(mp.read_only);
        assert_eq!(mp.mode, "z");
        match mp.kind {
            Kind::Volume {
                name,
                no_copy,
                labels,
                driver_options,
            } => {
                assert_eq!(name, "v");
                assert!(no_copy);
                assert_eq!(labels.get("a").map(String::as_str), Some("b"));
                assert_eq!(driver_options.len(), 2);
            }
            k => panic!("{k:?}"),
        }
        let mp = m(json!({"Type": "tmpfs", "Target": "/t",
            "TmpfsOptions": {"SizeBytes": 67108864, "Mode": 0o1770}}))
        .unwrap();
        assert_eq!(
            mp.kind,
            Kind::Tmpfs {
                options: vec![
                    "noexec".into(),
                    "nosuid".into(),
                    "nodev".into(),
                    "mode=1770".into(),
                    "size=64m".into()
                ],
                shown: true
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().to_str().unwrap();
        let mp =
            m(json!({"Type": "bind", "Source": src, "Target": "/b", "ReadOnly": true})).unwrap();
        assert!(mp.read_only);
        assert_eq!(mp.mode, "");

        let msg = |v: Value| m(v).unwrap_err().message;
        assert_eq!(
            msg(json!({"Type": "bind", "Source": "/nonexistent/berth", "Target": "/b"})),
            "invalid mount config for type \"bind\": bind source path does not exist: /nonexistent/berth"
        );
        assert_eq!(
            msg(json!({"Type": "bind", "Target": "/b"})),
            "invalid mount config for type \"bind\": field Source must not be empty"
        );
        assert_eq!(
            msg(json!({"Type": "volume", "Source": "v"})),
            "invalid mount config for type \"volume\": field Target must not be empty"
        );
        assert_eq!(
            msg(json!({"Type": "tmpfs", "Source": "x", "Target": "/t"})),
            "invalid mount config for type \"tmpfs\": field Source must not be specified"
        );
        assert_eq!(
            msg(json!({"Type": "volume", "Target": "/t", "ReadOnly": true})),
            "invalid mount config for type \"volume\": must not set ReadOnly mode when using anonymous volumes"
        );
        assert_eq!(
            msg(json!({"Type": "volume", "Source": "v", "Target": "/t", "BindOptions": {}})),
            "invalid mount config for type \"volume\": field BindOptions must not be specified"
        );
        assert_eq!(
            msg(json!({"Type": "nfs", "Target": "/t"})),
            "invalid mount config for type \"nfs\": mount type unknown"
        );
        assert_eq!(
            msg(
                json!({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"Options": [["uid", "1"]]}})
            ),
            "invalid mount config for type \"tmpfs\": invalid option: uid"
        );
        assert_eq!(
            m(json!({"Type": "volume", "Source": "v", "Target": "/t",
                "VolumeOptions": {"Subpath": "x"}}))
            .unwrap_err()
            .status,
            501
        );
    }

    #[test]
    fn tmpfs_options_merge_like_moby() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            merge_tmpfs_options(&s(&["size=64m", "exec"])).unwrap(),
            s(&["nosuid", "nodev", "size=64m", "exec"])
        );
        assert_eq!(
            merge_tmpfs_options(&s(&["size=1m", "size=2m", "rprivate"])).unwrap(),
            s(&["noexec", "nosuid", "nodev", "size=2m"])
        );
        assert_eq!(
            merge_tmpfs_options(&s(&["bogus=1"])).unwrap_err().message,
            "invalid tmpfs option \"bogus\""
        );
    }

    #[test]
    fn volumes_from_specs() {
        assert_eq!(parse_volumes_from("c").unwrap(), ("c".into(), true));
        assert_eq!(parse_volumes_from("c:ro").unwrap(), ("c".into(), false));
        assert_eq!(parse_volumes_from("c:rw").unwrap(), ("c".into(), true));
        assert_eq!(
            parse_volumes_from("c:shared").unwrap_err().message,
            "invalid mode: shared"
        );
        assert_eq!(
            parse_volumes_from("c:nocopy").unwrap_err().message,
            "invalid mode: nocopy"
        );
        assert!(parse_volumes_from("").is_err());
    }

    #[test]
    fn plan_merges_in_dockers_order() {
        let from = vec![
            MountPoint {
                destination: "/shared".into(),
                read_only: true,
                mode: String::new(),
                kind: vol("theirs"),
            },
            MountPoint {
                destination: "/over".into(),
                read_only: false,
                mode: String::new(),
                kind: vol("old"),
            },
        ];
        let hc = json!({
            "Binds": ["mine:/over", "/host:/h:ro"],
            "Mounts": [{"Type": "tmpfs", "Target": "/scratch"}],
            "Tmpfs": {"/run": "size=64m"},
        });
        let p = Plan::from_parts(
            &hc,
            from,
            &["/over".into(), "/image-data".into(), "/run".into()],
        )
        .unwrap();
        let dests: Vec<&str> = p.points().map(|m| m.destination.as_str()).collect();
        assert_eq!(
            dests,
            vec!["/h", "/image-data", "/over", "/run", "/scratch", "/shared"]
        );
        let reqs = p.volume_requests();
        let names: Vec<(&str, &str)> = reqs
            .iter()
            .map(|r| (r.destination.as_str(), r.name.as_str()))
            .collect();
        // -v overrides --volumes-from; the image's /over is covered; /image-data is new.
        assert_eq!(
            names,
            vec![
                ("/image-data", ""),
                ("/over", "mine"),
                ("/shared", "theirs")
            ]
        );
        assert!(reqs[2].read_only);

        // Duplicates are refused with Docker's words.
        let dup = |hc: Value| Plan::from_parts(&hc, vec![], &[]).unwrap_err().message;
        assert_eq!(
            dup(json!({"Binds": ["a:/x", "b:/x/"]})),
            "Duplicate mount point: /x"
        );
        assert_eq!(
            dup(json!({"Binds": ["a:/run"], "Tmpfs": {"/run": ""}})),
            "Duplicate mount point: /run"
        );
        assert_eq!(
            dup(
                json!({"Binds": ["a:/x"], "Mounts": [{"Type": "volume", "Source": "b", "Target": "/x"}]})
            ),
            "Duplicate mount point: /x"
        );
        assert_eq!(
            dup(json!({"VolumeDriver": "flocker", "Binds": ["/x"]})),
            "error looking up volume plugin flocker: plugin \"flocker\" not found"
        );
    }

    #[test]
    fn container_mounts_are_sorted_parents_first_and_shown_as_docker() {
        let hc = json!({
            "Binds": ["data:/data/sub", "top:/data"],
            "Tmpfs": {"/run": ""},
            "Mounts": [{"Type": "tmpfs", "Target": "/t"}],
        });
        let p = Plan::from_parts(&hc, vec![], &[]).unwrap();
        let attached: Vec<vpb::VolumeMount> = p
            .volume_requests()
            .into_iter()
            .map(|r| vpb::VolumeMount {
                name: r.name.clone(),
                source: format!("/vols/{}/_data", r.name),
                destination: r.destination,
                read_only: r.read_only,
                anonymous: false,
                created: false,
            })
            .collect();
        let (mounts, shown) = p.container_mounts(&attached).unwrap();
        let dests: Vec<&str> = mounts.iter().map(|m| m.destination.as_str()).collect();
        assert_eq!(dests, vec!["/data", "/run", "/t", "/data/sub"]);
        assert_eq!(mounts[1].r#type, "tmpfs");
        // --tmpfs is not in inspect's Mounts; --mount type=tmpfs is.
        assert_eq!(shown.len(), 3);
        assert!(
            shown
                .iter()
                .any(|m| m["Type"] == "tmpfs" && m["Destination"] == "/t")
        );
        let v = shown.iter().find(|m| m["Name"] == "top").unwrap();
        assert_eq!(v["Mode"], "z");
        assert_eq!(v["Source"], "/vols/top/_data");
        // A volume volumed did not attach is an internal error, not a silent skip.
        assert!(p.container_mounts(&attached[..1]).is_err());
    }
}
