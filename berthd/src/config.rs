//! berthd's flags, daemon.json, and how they merge into one [`Settings`].
//!
//! Flags and keys are named as dockerd names them, so a user's habits and an existing
//! daemon.json carry over. Where a key is set both in the file and on the command line,
//! the flag wins (dockerd refuses such a conflict; being lenient costs nothing here).

use berth_kit::paths::{DEFAULT_DATA_ROOT, DEFAULT_RUN_ROOT};
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The daemon.json read when `--config-file` is not given (missing is fine).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/berth/daemon.json";

/// Longest path a unix socket address can hold (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// berthd's command line, named as dockerd's.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "berthd",
    version,
    about = "Berth: a Docker Engine-compatible daemon, run as six restartable services"
)]
pub struct Cli {
    /// Socket to serve the Docker API on (unix://PATH); repeatable.
    #[arg(short = 'H', long = "host", value_name = "ADDR")]
    pub hosts: Vec<String>,
    /// Root of persistent state [default: /var/lib/berth].
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Root of runtime state: sockets, shims, network namespaces [default: /run/berth].
    #[arg(long = "exec-root", alias = "run-root")]
    pub exec_root: Option<PathBuf>,
    /// daemon.json to read [default: /etc/berth/daemon.json, which may be missing].
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// Check the configuration file and exit.
    #[arg(long)]
    pub validate: bool,
    /// Address and prefix of the default bridge (e.g. 172.29.0.1/24).
    #[arg(long, value_name = "CIDR")]
    pub bip: Option<String>,
    /// Name of the default bridge.
    #[arg(short = 'b', long)]
    pub bridge: Option<String>,
    /// Debug logging (passed to every service).
    #[arg(short = 'D', long)]
    pub debug: bool,
    /// Keep containers running while Berth is stopped [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub live_restore: Option<bool>,
    /// What to do instead of running Berth.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// berthd's subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Show each service of the running Berth: state, pid, uptime, restarts, last error.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The daemon.json keys berthd acts on. Every other key dockerd knows is accepted (the
/// services may read it from the same file); an unknown key is an error, as in dockerd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DaemonConfig {
    /// `data-root`.
    pub data_root: Option<PathBuf>,
    /// `exec-root`.
    pub exec_root: Option<PathBuf>,
    /// `hosts`.
    pub hosts: Option<Vec<String>>,
    /// `debug`.
    pub debug: Option<bool>,
    /// `bip`.
    pub bip: Option<String>,
    /// `bridge`.
    pub bridge: Option<String>,
    /// `live-restore`.
    pub live_restore: Option<bool>,
    /// `tracing` (Berth's own key): where every service exports its spans.
    pub tracing: Option<TracingConfig>,
}

/// daemon.json's `tracing` block. Each key becomes the standard OpenTelemetry variable of
/// every service, unless berthd's own environment already sets that variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TracingConfig {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, e.g. `http://127.0.0.1:4317`.
    pub endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or `http/protobuf`.
    pub protocol: Option<String>,
    /// `OTEL_TRACES_SAMPLER`, e.g. `parentbased_traceidratio`.
    pub sampler: Option<String>,
    /// `OTEL_TRACES_SAMPLER_ARG`, e.g. `0.1`.
    pub sampler_arg: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, e.g. `deployment.environment=prod`.
    pub resource_attributes: Option<String>,
}

impl TracingConfig {
    /// The variables to give the services; `present` says whether berthd's environment
    /// already has one (which then wins).
    pub fn env(&self, present: impl Fn(&str) -> bool) -> Vec<(String, String)> {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &self.endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", &self.protocol),
            ("OTEL_TRACES_SAMPLER", &self.sampler),
            ("OTEL_TRACES_SAMPLER_ARG", &self.sampler_arg),
            ("OTEL_RESOURCE_ATTRIBUTES", &self.resource_attributes),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .filter(|(k, _)| !present(k))
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    }
}

/// dockerd's daemon.json keys (Docker 28), so a file written for dockerd validates here.
const KNOWN_KEYS: &[&str] = &[
    "allow-nondistributable-artifacts",
    "api-cors-header",
    "authorization-plugins",
    "bip",
    "bip6",
    "bridge",
    "builder",
    "cdi-spec-dirs",
    "cgroup-parent",
    "containerd",
    "containerd-namespace",
    "containerd-plugin-namespace",
    "cpu-rt-period",
    "cpu-rt-runtime",
    "data-root",
    "debug",
    "default-address-pools",
    "default-cgroupns-mode",
    "default-gateway",
    "default-gateway-v6",
    "default-ipc-mode",
    "default-network-opts",
    "default-runtime",
    "default-shm-size",
    "default-ulimits",
    "dns",
    "dns-opts",
    "dns-search",
    "exec-opts",
    "exec-root",
    "experimental",
    "features",
    "firewall-backend",
    "fixed-cidr",
    "fixed-cidr-v6",
    "group",
    "host-gateway-ip",
    "host-gateway-ips",
    "hosts",
    "http-proxy",
    "https-proxy",
    "icc",
    "init",
    "init-path",
    "insecure-registries",
    "ip",
    "ip-forward",
    "ip-forward-no-drop",
    "ip-masq",
    "ip6tables",
    "iptables",
    "ipv6",
    "labels",
    "live-restore",
    "log-driver",
    "log-format",
    "log-level",
    "log-opts",
    "max-concurrent-downloads",
    "max-concurrent-uploads",
    "max-download-attempts",
    "metrics-addr",
    "min-api-version",
    "mtu",
    "no-new-privileges",
    "no-proxy",
    "node-generic-resources",
    "oom-score-adjust",
    "pidfile",
    "proxies",
    "raw-logs",
    "registry-mirrors",
    "runtimes",
    "seccomp-profile",
    "selinux-enabled",
    "shutdown-timeout",
    "storage-driver",
    "storage-opts",
    "swarm-default-advertise-addr",
    "tls",
    "tracing",
    "tlscacert",
    "tlscert",
    "tlskey",
    "tlsverify",
    "userland-proxy",
    "userland-proxy-path",
    "userns-remap",
];

/// A bad flag, host address or configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("unable to read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not valid JSON, or a key has the wrong type.
    #[error("unable to parse configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde_json's explanation.
        message: String,
    },
    /// The configuration file holds keys dockerd does not know (dockerd's wording).
    #[error(
        "unable to configure the daemon from {path}: the following directives don't match any configuration option: {keys}"
    )]
    UnknownKeys {
        /// The file.
        path: PathBuf,
        /// The unknown keys, comma separated.
        keys: String,
    },
    /// A security setting dockerd would apply and Berth does not implement yet: refused,
    /// never accepted and ignored (a host must not be less protected than it was told).
    #[error(
        "unable to configure the daemon from {path}: {key} ({value}) is not supported by Berth yet; remove it or set it to its default"
    )]
    UnsupportedSecurity {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Its value as given.
        value: String,
    },
    /// `tcp://` asked for: the API gives root on the host, so it is never served in clear.
    #[error(
        "invalid host {0}: TCP is not supported without TLS (tlsverify) yet; use unix:///path/to/docker.sock"
    )]
    TcpWithoutTls(String),
    /// Any other scheme, or a relative or too long socket path.
    #[error("invalid host {addr}: {reason}")]
    BadHost {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// `--bip` is not an IPv4 address with a prefix length.
    #[error("invalid bip {0}: expected an IPv4 address with a prefix length, e.g. 172.29.0.1/24")]
    BadBip(String),
    /// A path setting is empty or relative.
    #[error("{what} must be an absolute path, got {path:?}")]
    RelativePath {
        /// Which setting.
        what: &'static str,
        /// Its value.
        path: PathBuf,
    },
}

/// A configuration file that was found and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedConfig {
    /// Where it was read from (passed on to the services with `--config-file`).
    pub path: PathBuf,
    /// What berthd acts on.
    pub config: DaemonConfig,
}

/// Reads the configuration file named by `--config-file`, or the default one. A missing
/// default file is no error (`Ok(None)`); a missing explicit one is.
pub fn load(cli: &Cli) -> Result<Option<LoadedConfig>, ConfigError> {
    let (path, explicit) = match &cli.config_file {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&path, &text).map(|config| Some(LoadedConfig { path, config })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
        Err(source) => Err(ConfigError::Read { path, source }),
    }
}

/// Parses daemon.json text: a JSON object of known keys, with correct types for the keys
/// berthd acts on.
pub fn parse(path: &Path, text: &str) -> Result<DaemonConfig, ConfigError> {
    let parse_err = |e: serde_json::Error| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(parse_err)?;
    let Some(object) = value.as_object() else {
        return Err(ConfigError::Parse {
            path: path.to_path_buf(),
            message: "the configuration must be a JSON object".to_string(),
        });
    };
    let mut unknown: Vec<&str> = object
        .keys()
        .map(String::as_str)
        .filter(|k| !KNOWN_KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(ConfigError::UnknownKeys {
            path: path.to_path_buf(),
            keys: unknown.join(", "),
        });
    }
    for (key, value) in object {
        if !security_default(key, value) {
            return Err(ConfigError::UnsupportedSecurity {
                path: path.to_path_buf(),
                key: key.clone(),
                value: value.to_string(),
            });
        }
    }
    // As dockerd: a registry setting it could not use stops the daemon from starting.
    berth_kit::registries::validate(&value).map_err(|message| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    })?;
    serde_json::from_value(value).map_err(parse_err)
}

/// False for a security key of dockerd's whose value asks for something Berth does not
/// do yet (user namespaces, a seccomp profile, no inter-container traffic, ...); its
/// default value, and every other key, is fine.
fn security_default(key: &str, value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match key {
        "userns-remap" | "seccomp-profile" => matches!(value, Value::String(s) if s.is_empty()),
        "no-new-privileges" => value == &Value::Bool(false),
        "icc" => value == &Value::Bool(true),
        "ip" => matches!(value, Value::String(s) if s.is_empty() || s == "0.0.0.0"),
        // The API socket's group: Berth's is "docker" when it exists, as dockerd's.
        "group" => matches!(value, Value::String(s) if s.is_empty() || s == "docker"),
        "authorization-plugins" => value.as_array().is_some_and(Vec::is_empty),
        _ => true,
    }
}

/// Everything berthd runs with, after merging flags over daemon.json over defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Root of persistent state.
    pub data_root: PathBuf,
    /// Root of runtime state.
    pub exec_root: PathBuf,
    /// Unix socket paths the gateway serves the Docker API on (at least one).
    pub hosts: Vec<PathBuf>,
    /// Debug logging.
    pub debug: bool,
    /// Default bridge address, validated as IPv4 CIDR.
    pub bip: Option<String>,
    /// Default bridge name.
    pub bridge: Option<String>,
    /// Keep containers running when Berth stops.
    pub live_restore: bool,
    /// The configuration file that exists, passed on to every service.
    pub config_file: Option<PathBuf>,
    /// Environment added to every service (tracing from daemon.json).
    pub service_env: Vec<(String, String)>,
}

impl Settings {
    /// Merges the command line over the configuration file over the defaults.
    pub fn resolve(cli: &Cli, loaded: Option<&LoadedConfig>) -> Result<Self, ConfigError> {
        let empty = DaemonConfig::default();
        let file = loaded.map_or(&empty, |l| &l.config);
        let data_root = cli
            .data_root
            .clone()
            .or_else(|| file.data_root.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_ROOT));
        let exec_root = cli
            .exec_root
            .clone()
            .or_else(|| file.exec_root.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_ROOT));
        require_absolute("data-root", &data_root)?;
        require_absolute("exec-root", &exec_root)?;
        let default_socket = exec_root.join("docker.sock");
        let host_args: &[String] = if !cli.hosts.is_empty() {
            &cli.hosts
        } else {
            file.hosts.as_deref().unwrap_or(&[])
        };
        let mut hosts = Vec::new();
        for addr in host_args {
            let path = parse_host(addr, &default_socket)?;
            if !hosts.contains(&path) {
                hosts.push(path);
            }
        }
        if hosts.is_empty() {
            hosts.push(default_socket);
        }
        let bip = cli.bip.clone().or_else(|| file.bip.clone());
        if let Some(b) = &bip {
            validate_bip(b)?;
        }
        Ok(Self {
            data_root,
            exec_root,
            hosts,
            debug: cli.debug || file.debug.unwrap_or(false),
            bip,
            bridge: cli.bridge.clone().or_else(|| file.bridge.clone()),
            live_restore: cli.live_restore.or(file.live_restore).unwrap_or(true),
            config_file: loaded.map(|l| l.path.clone()),
            service_env: file
                .tracing
                .as_ref()
                .map(|t| t.env(|k| std::env::var_os(k).is_some()))
                .unwrap_or_default(),
        })
    }
}

fn require_absolute(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(ConfigError::RelativePath {
            what,
            path: path.to_path_buf(),
        })
    }
}

/// Turns a `-H` address into the socket path to serve on. `unix://` alone means the
/// default socket, as in dockerd.
pub fn parse_host(addr: &str, default_socket: &Path) -> Result<PathBuf, ConfigError> {
    let bad = |reason: &str| ConfigError::BadHost {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let Some((scheme, rest)) = addr.split_once("://") else {
        return Err(bad("expected unix:///path/to/docker.sock"));
    };
    match scheme {
        "unix" => {
            let path = if rest.is_empty() {
                default_socket.to_path_buf()
            } else {
                PathBuf::from(rest)
            };
            if !path.is_absolute() {
                return Err(bad("the socket path must be absolute"));
            }
            if path.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(bad("the socket path is longer than 107 bytes"));
            }
            Ok(path)
        }
        "tcp" => Err(ConfigError::TcpWithoutTls(addr.to_string())),
        "fd" => Err(bad("socket activation (fd://) is not supported")),
        _ => Err(bad(
            "unsupported scheme; expected unix:///path/to/docker.sock",
        )),
    }
}

fn validate_bip(bip: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::BadBip(bip.to_string());
    let (addr, prefix) = bip.split_once('/').ok_or_else(bad)?;
    addr.parse::<Ipv4Addr>().map_err(|_| bad())?;
    match prefix.parse::<u8>() {
        Ok(p) if p <= 30 => Ok(()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["berthd"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    fn loaded(json: &str) -> LoadedConfig {
        let path = PathBuf::from("/etc/berth/daemon.json");
        LoadedConfig {
            config: parse(&path, json).unwrap(),
            path,
        }
    }

    #[test]
    fn security_keys_berth_does_not_apply_are_refused_not_ignored() {
        let path = PathBuf::from("/etc/berth/daemon.json");
        for bad in [
            r#"{"userns-remap": "default"}"#,
            r#"{"no-new-privileges": true}"#,
            r#"{"seccomp-profile": "/etc/profile.json"}"#,
            r#"{"icc": false}"#,
            r#"{"ip": "127.0.0.1"}"#,
            r#"{"group": "admins"}"#,
            r#"{"authorization-plugins": ["authz"]}"#,
        ] {
            let err = parse(&path, bad).unwrap_err();
            assert!(
                matches!(err, ConfigError::UnsupportedSecurity { .. }),
                "{bad}: {err}"
            );
            assert!(
                err.to_string().contains("not supported by Berth yet"),
                "{err}"
            );
        }
        // Their defaults change nothing and are fine.
        parse(
            &path,
            r#"{"userns-remap": "", "no-new-privileges": false, "icc": true, "ip": "0.0.0.0",
                "group": "docker", "authorization-plugins": [], "seccomp-profile": ""}"#,
        )
        .unwrap();
    }

    #[test]
    fn tracing_block_becomes_the_services_otel_environment() {
        let l = loaded(
            r#"{"tracing": {"endpoint": "http://127.0.0.1:4317", "protocol": "grpc", "sampler-arg": "0.5"}}"#,
        );
        let t = l.config.tracing.clone().unwrap();
        assert_eq!(
            t.env(|_| false),
            vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
                    "http://127.0.0.1:4317".to_string()
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
                ("OTEL_TRACES_SAMPLER_ARG".into(), "0.5".into()),
            ]
        );
        // berthd's own environment wins over the file.
        assert_eq!(t.env(|k| k == "OTEL_EXPORTER_OTLP_ENDPOINT").len(), 2);
        let path = PathBuf::from("/etc/berth/daemon.json");
        assert!(parse(&path, r#"{"tracing": {"endpoit": "x"}}"#).is_err());
    }

    #[test]
    fn defaults_match_the_architecture() {
        let s = Settings::resolve(&cli(&[]), None).unwrap();
        assert_eq!(s.data_root, PathBuf::from("/var/lib/berth"));
        assert_eq!(s.exec_root, PathBuf::from("/run/berth"));
        assert_eq!(s.hosts, vec![PathBuf::from("/run/berth/docker.sock")]);
        assert!(s.live_restore);
        assert!(!s.debug);
        assert_eq!(s.config_file, None);
    }

    #[test]
    fn default_socket_follows_exec_root() {
        let s = Settings::resolve(&cli(&["--exec-root", "/tmp/r"]), None).unwrap();
        assert_eq!(s.hosts, vec![PathBuf::from("/tmp/r/docker.sock")]);
        let s = Settings::resolve(&cli(&["--run-root", "/tmp/q", "-H", "unix://"]), None).unwrap();
        assert_eq!(s.hosts, vec![PathBuf::from("/tmp/q/docker.sock")]);
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file = loaded(
            r#"{"data-root":"/srv/berth","exec-root":"/run/b2","hosts":["unix:///run/b2/api.sock"],
                "debug":true,"bip":"10.9.0.1/24","bridge":"br-file","live-restore":false,
                "log-driver":"json-file"}"#,
        );
        let s = Settings::resolve(&cli(&[]), Some(&file)).unwrap();
        assert_eq!(s.data_root, PathBuf::from("/srv/berth"));
        assert_eq!(s.exec_root, PathBuf::from("/run/b2"));
        assert_eq!(s.hosts, vec![PathBuf::from("/run/b2/api.sock")]);
        assert!(s.debug);
        assert_eq!(s.bip.as_deref(), Some("10.9.0.1/24"));
        assert_eq!(s.bridge.as_deref(), Some("br-file"));
        assert!(!s.live_restore);
        assert_eq!(s.config_file, Some(PathBuf::from("/etc/berth/daemon.json")));

        let s = Settings::resolve(
            &cli(&[
                "--data-root",
                "/d",
                "--exec-root",
                "/r",
                "-H",
                "unix:///r/a.sock",
                "--host=unix:///r/b.sock",
                "--bip",
                "172.29.3.1/24",
                "-b",
                "br-flag",
                "--live-restore=true",
            ]),
            Some(&file),
        )
        .unwrap();
        assert_eq!(s.data_root, PathBuf::from("/d"));
        assert_eq!(s.exec_root, PathBuf::from("/r"));
        assert_eq!(
            s.hosts,
            vec![PathBuf::from("/r/a.sock"), PathBuf::from("/r/b.sock")]
        );
        assert_eq!(s.bip.as_deref(), Some("172.29.3.1/24"));
        assert_eq!(s.bridge.as_deref(), Some("br-flag"));
        assert!(s.live_restore);
    }

    #[test]
    fn live_restore_flag_forms() {
        assert_eq!(cli(&["--live-restore"]).live_restore, Some(true));
        assert_eq!(cli(&["--live-restore=false"]).live_restore, Some(false));
        assert_eq!(cli(&[]).live_restore, None);
    }

    #[test]
    fn tcp_is_refused_with_a_clear_error() {
        let err = Settings::resolve(&cli(&["-H", "tcp://0.0.0.0:2375"]), None).unwrap_err();
        assert!(matches!(err, ConfigError::TcpWithoutTls(_)));
        assert!(
            err.to_string()
                .contains("TCP is not supported without TLS (tlsverify) yet")
        );
    }

    #[test]
    fn bad_hosts_are_refused() {
        let d = Path::new("/run/berth/docker.sock");
        assert!(parse_host("/var/run/docker.sock", d).is_err());
        assert!(parse_host("unix://relative.sock", d).is_err());
        assert!(parse_host("fd://", d).is_err());
        assert!(parse_host("npipe:////./pipe/docker", d).is_err());
        let long = format!("unix:///{}", "x".repeat(120));
        assert!(parse_host(&long, d).is_err());
        assert_eq!(
            parse_host("unix:///var/run/docker.sock", d).unwrap(),
            PathBuf::from("/var/run/docker.sock")
        );
    }

    #[test]
    fn daemon_json_is_checked_like_dockerd() {
        let p = Path::new("/x/daemon.json");
        assert_eq!(parse(p, "{}").unwrap(), DaemonConfig::default());
        let e = parse(p, "{bad").unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        let e = parse(p, "[1]").unwrap_err();
        assert!(e.to_string().contains("JSON object"), "{e}");
        let e = parse(p, r#"{"debug":true,"zz":1,"aa":2}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("the following directives don't match any configuration option: aa, zz"),
            "{e}"
        );
        let e = parse(p, r#"{"debug":"yes"}"#).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        // Keys berthd does not act on but dockerd knows are fine.
        parse(
            p,
            r#"{"log-driver":"local","insecure-registries":["127.0.0.1:5000"]}"#,
        )
        .unwrap();
        // A mirror imaged could not use is refused at start, naming it.
        parse(p, r#"{"registry-mirrors":["http://127.0.0.1:5000/"]}"#).unwrap();
        let e = parse(p, r#"{"registry-mirrors":["mirror.example/path"]}"#).unwrap_err();
        assert!(e.to_string().contains("invalid mirror"), "{e}");
        let e = parse(p, r#"{"max-concurrent-downloads":0}"#).unwrap_err();
        assert!(e.to_string().contains("max-concurrent-downloads"), "{e}");
    }

    #[test]
    fn bip_and_paths_are_validated() {
        assert!(Settings::resolve(&cli(&["--bip", "172.29.1.1"]), None).is_err());
        assert!(Settings::resolve(&cli(&["--bip", "300.1.1.1/24"]), None).is_err());
        assert!(Settings::resolve(&cli(&["--bip", "10.0.0.1/33"]), None).is_err());
        assert!(Settings::resolve(&cli(&["--data-root", "rel"]), None).is_err());
        assert!(Settings::resolve(&cli(&["--bip", "10.0.0.1/16"]), None).is_ok());
    }

    #[test]
    fn missing_default_file_is_fine_but_missing_explicit_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let c = Cli {
            config_file: Some(missing),
            ..Cli::default()
        };
        assert!(matches!(load(&c), Err(ConfigError::Read { .. })));
        let f = dir.path().join("daemon.json");
        std::fs::write(&f, r#"{"debug": true}"#).unwrap();
        let c = Cli {
            config_file: Some(f.clone()),
            ..Cli::default()
        };
        let l = load(&c).unwrap().unwrap();
        assert_eq!(l.path, f);
        assert_eq!(l.config.debug, Some(true));
    }
}
