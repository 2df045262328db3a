//! One Berth instance for one test: `target/debug/berthd` with its own data root, exec
//! root, bridge subnet and cgroup parent, driven with the real `docker` CLI, and
//! everything it made taken down when dropped.

use crate::cmd::{self, Output};
use crate::{http, procs};
use anyhow::{Context, Result, bail};
use berth_kit::Roots;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long berthd gets to serve `/_ping` after start (six services, debug builds).
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The deadline for one docker CLI command.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// `target/debug/` (or whichever profile built the running test): the test executable
/// is `target/<profile>/deps/<test>-<hash>`.
pub fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("the test executable has no grandparent directory")
}

/// A binary built by the workspace, e.g. `berthd` or `berth-netd`.
pub fn binary(name: &str) -> Result<PathBuf> {
    let p = target_dir()?.join(name);
    if !p.is_file() {
        bail!(
            "{} is missing: build the binaries first (cargo build --workspace --bins)",
            p.display()
        );
    }
    Ok(p)
}

/// The six service binaries berthd runs.
pub const SERVICE_BINARIES: [&str; 6] = [
    "berth-gateway",
    "berth-imaged",
    "berth-containerd",
    "berth-netd",
    "berth-volumed",
    "berth-logd",
];

/// Every instance runs with a run root of [`RUN_ROOT_LEN`] characters: a real host's exec
/// root may be long, and socket paths under it (`shims/<64-hex id>/shim.sock`, exec
/// consoles) must work whatever its length, as with dockerd.
pub const RUN_ROOT_LEN: usize = 60;

/// `<tmp>/rrrr...` padded to [`RUN_ROOT_LEN`] characters, created.
fn long_run_root(tmp: &Path) -> Result<PathBuf> {
    let base = tmp.as_os_str().len();
    if base + 2 > RUN_ROOT_LEN {
        bail!("temp dir {} is too long to pad", tmp.display());
    }
    let root = tmp.join("r".repeat(RUN_ROOT_LEN - base - 1));
    std::fs::create_dir(&root)?;
    Ok(root)
}

/// A running Berth.
#[derive(Debug)]
pub struct Berth {
    name: String,
    child: Option<Child>,
    data: Option<tempfile::TempDir>,
    exec: Option<tempfile::TempDir>,
    /// Holds the docker CLI config, daemon.json and berthd's log.
    home: Option<tempfile::TempDir>,
    roots: Roots,
    socket: PathBuf,
    octet: u8,
    _subnet_lock: Flock<std::fs::File>,
}

impl Berth {
    /// Starts berthd for the test `name` and waits until the API answers `/_ping`.
    pub fn start(name: &str) -> Result<Self> {
        Self::start_with(name, &[])
    }

    /// As [`Berth::start`], with extra berthd flags.
    pub fn start_with(name: &str, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(name, extra, &[])
    }

    /// As [`Berth::start_with`], with extra environment for berthd (and so every service).
    pub fn start_with_env(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        Self::start_full(name, extra, env, "{}")
    }

    /// As [`Berth::start_with_env`], with `daemon_json` as the configuration file.
    pub fn start_full(
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        daemon_json: &str,
    ) -> Result<Self> {
        let berthd = binary("berthd")?;
        let tmp = |prefix: &str| {
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in("/tmp")
                .context("creating a temp dir")
        };
        let data = tmp("bd")?;
        let exec = tmp("br")?;
        let home = tmp("bh")?;
        let (octet, subnet_lock) = claim_subnet(name)?;
        let run_root = long_run_root(exec.path())?;
        let roots = Roots::new(data.path(), &run_root);
        let socket = roots.docker_socket();
        // Our own daemon.json: the host's /etc/berth/daemon.json must not leak in.
        let config = home.path().join("daemon.json");
        std::fs::write(&config, format!("{daemon_json}\n"))?;
        std::fs::create_dir_all(home.path().join("docker"))?;
        let log = std::fs::File::create(home.path().join("berthd.log"))?;

        let mut c = Command::new(&berthd);
        c.arg("--data-root")
            .arg(data.path())
            .arg("--exec-root")
            .arg(&run_root)
            .arg("--config-file")
            .arg(&config)
            .arg("--bip")
            .arg(format!("172.29.{octet}.1/24"));
        if std::env::var_os("BERTH_E2E_DEBUG").is_some() {
            c.arg("--debug");
        }
        c.args(extra)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = c
            .spawn()
            .with_context(|| format!("starting {}", berthd.display()))?;
        let mut berth = Self {
            name: name.to_string(),
            child: Some(child),
            data: Some(data),
            exec: Some(exec),
            home: Some(home),
            roots,
            socket,
            octet,
            _subnet_lock: subnet_lock,
        };
        berth.wait_ready()?;
        Ok(berth)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let socket = self.socket.clone();
        let mut exited = None;
        let child = self.child.as_mut().context("berthd not started")?;
        let up = cmd::wait_until(READY_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            matches!(http::unix_request(&socket, "GET", "/_ping", None, b""), Ok(r) if r.status == 200)
        });
        if let Some(status) = exited {
            bail!(
                "berthd exited during startup ({status}); its log:\n{}",
                self.log()
            );
        }
        if !up {
            bail!(
                "berthd did not serve /_ping on {} within {}s; its log:\n{}",
                socket.display(),
                READY_TIMEOUT.as_secs(),
                self.log()
            );
        }
        Ok(())
    }

    /// A `docker <args>` command aimed at this Berth, not yet started.
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.docker_config_dir())
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        c
    }

    /// `sh -c script` with the docker CLI aimed at this Berth (for pipes into `docker`).
    pub fn shell(&self, script: &str) -> Output {
        let docker = self.docker_command(&[]);
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        for (k, v) in docker.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        cmd::run(&mut c, DOCKER_TIMEOUT).unwrap_or_else(|e| Output {
            code: -1,
            stdout: String::new(),
            stderr: format!("{e:#}"),
        })
    }

    /// Runs the real docker CLI against this Berth: `docker <args>`.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_within(args, DOCKER_TIMEOUT)
    }

    /// As [`Berth::docker`], killed after `timeout` (then `code` is -1).
    pub fn docker_within(&self, args: &[&str], timeout: Duration) -> Output {
        let mut c = self.docker_command(args);
        match cmd::run(&mut c, timeout) {
            Ok(o) => o,
            Err(e) => Output {
                code: -1,
                stdout: String::new(),
                stderr: format!("{e:#}"),
            },
        }
    }

    /// Runs `docker <args>`, failing with the full output unless it exits 0; returns
    /// stdout.
    pub fn docker_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.docker(args);
        if !out.success() {
            bail!("docker {} failed: {out}", args.join(" "));
        }
        Ok(out.stdout)
    }

    /// `docker inspect -f <format> <target>`, trimmed.
    pub fn inspect(&self, format: &str, target: &str) -> Result<String> {
        Ok(self
            .docker_ok(&["inspect", "-f", format, target])?
            .trim()
            .to_string())
    }

    /// The events `docker events` has stored so far matching `filters` (`key=value`
    /// each), one line each in `format`.
    pub fn stored_events(&self, filters: &[&str], format: &str) -> Result<Vec<String>> {
        let until = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + 1)
        .to_string();
        let mut args = vec![
            "events", "--since", "1", "--until", &until, "--format", format,
        ];
        for f in filters {
            args.extend_from_slice(&["--filter", f]);
        }
        Ok(self.docker_ok(&args)?.lines().map(str::to_string).collect())
    }

    /// How many `action` events (`attach`, `pause`, ...) `docker events` has stored for
    /// container `name` so far.
    pub fn event_count(&self, name: &str, action: &str) -> Result<usize> {
        let (container, event) = (format!("container={name}"), format!("event={action}"));
        Ok(self
            .stored_events(&[&container, &event], "{{.Action}}")?
            .len())
    }

    /// The host pid of a running container's init process.
    pub fn container_pid(&self, container: &str) -> Result<u32> {
        let pid: u32 = self
            .inspect("{{.State.Pid}}", container)?
            .parse()
            .context("State.Pid is not a number")?;
        if pid == 0 {
            bail!("container {container} has no pid (not running)");
        }
        Ok(pid)
    }

    /// The daemon.json berthd was started with (tests rewrite it to test reloads).
    pub fn config_file(&self) -> Result<PathBuf> {
        Ok(self
            .home
            .as_ref()
            .context("berth already stopped")?
            .path()
            .join("daemon.json"))
    }

    /// `GET path` on the API socket; the body when the status is 200.
    pub fn api_get(&self, path: &str) -> Result<String> {
        let r = crate::http::unix_request(self.socket(), "GET", path, None, b"")?;
        if r.status != 200 {
            bail!("GET {path}: {} {}", r.status, r.text());
        }
        Ok(r.text())
    }

    /// The Docker API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// This instance's roots (and so its bridge, nftables table and cgroup parent).
    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    /// The data root.
    pub fn data_root(&self) -> &Path {
        &self.roots.data_root
    }

    /// The exec root.
    pub fn exec_root(&self) -> &Path {
        &self.roots.run_root
    }

    /// The third octet N of this instance's bridge subnet 172.29.N.0/24.
    pub fn subnet_octet(&self) -> u8 {
        self.octet
    }

    /// `172.29.N.` : the prefix every container IP of this instance starts with.
    pub fn ip_prefix(&self) -> String {
        format!("172.29.{}.", self.octet)
    }

    /// berthd's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The pid of the running service binary `name` (e.g. `berth-gateway`), a child of
    /// berthd.
    pub fn service_pid(&self, name: &str) -> Option<u32> {
        procs::child_named(self.pid()?, name)
    }

    /// Kills service `name` (e.g. "berth-containerd") with SIGKILL and waits until
    /// berthd has started a new one and the API answers `docker ps` again.
    pub fn kill9_and_wait(&self, name: &str) -> Result<()> {
        let old = self
            .service_pid(name)
            .with_context(|| format!("{name} is not running"))?;
        kill(Pid::from_raw(old as i32), Signal::SIGKILL)?;
        let back = cmd::wait_until(Duration::from_secs(30), || {
            self.service_pid(name).is_some_and(|p| p != old) && self.docker(&["ps"]).success()
        });
        if !back {
            bail!("{name} did not come back after kill -9");
        }
        Ok(())
    }

    /// berthd's output so far (its own log and every service's).
    pub fn log(&self) -> String {
        self.home
            .as_ref()
            .and_then(|h| std::fs::read_to_string(h.path().join("berthd.log")).ok())
            .unwrap_or_default()
    }

    fn docker_config_dir(&self) -> PathBuf {
        self.home
            .as_ref()
            .map(|h| h.path().join("docker"))
            .unwrap_or_default()
    }

    /// Takes everything down; see the crate docs for the order. Never panics (it runs
    /// in Drop, also while a failed test unwinds).
    fn teardown(&mut self) {
        let mut problems: Vec<String> = Vec::new();

        // 1. Containers, through the API, while Berth still runs (live-restore would
        //    otherwise keep them running after berthd stops).
        if self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        {
            let ids = self.docker(&["ps", "-aq", "--no-trunc"]);
            let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let out = self.docker(&args);
                if !out.success() {
                    problems.push(format!("docker rm -f: {out}"));
                }
            }
        }

        // 2. berthd: SIGTERM stops its services in order; SIGKILL if it hangs.
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let stopped = cmd::wait_until(Duration::from_secs(30), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if !stopped {
                problems.push("berthd ignored SIGTERM for 30s; killed".into());
                let _ = child.kill();
            }
            let _ = child.wait();
        }

        let exec = self.roots.run_root.clone();
        let data = self.roots.data_root.clone();
        let exec_str = exec.to_string_lossy().into_owned();

        // 3. Shims still running for this instance (a container that survived `rm -f`),
        //    then anything left in this instance's cgroups.
        for pid in procs::all_pids() {
            let is_shim =
                procs::exe(pid).is_some_and(|e| e.file_name().is_some_and(|f| f == "berth-shim"));
            if is_shim && procs::cmdline(pid).iter().any(|a| a.contains(&exec_str)) {
                problems.push(format!("berth-shim {pid} was still running"));
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        let cgroup_dirs = cgroup_dirs(&self.roots.cgroup_parent());
        for dir in &cgroup_dirs {
            if let Ok(procs_list) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs_list
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }

        // 4. netd's own cleanup of kernel objects: bridge, veths, netns files, nft table.
        match binary("berth-netd") {
            Ok(netd) => {
                let mut c = Command::new(netd);
                c.arg("--teardown")
                    .arg("--data-root")
                    .arg(&data)
                    .arg("--exec-root")
                    .arg(&exec)
                    .env("NO_COLOR", "1");
                match cmd::run(&mut c, Duration::from_secs(30)) {
                    Ok(o) if o.success() => {}
                    Ok(o) => problems.push(format!("berth-netd --teardown: {o}")),
                    Err(e) => problems.push(format!("berth-netd --teardown: {e:#}")),
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }

        // 5. Mounts under the roots (overlays, netns bind mounts), deepest first.
        let leftover_mounts = unmount_under(&[&data, &exec]);

        // 6. Cgroup directories, deepest first (their processes were killed above and
        //    may take a moment to go).
        for _ in 0..20 {
            let mut left = false;
            for dir in cgroup_dirs.iter().rev() {
                if dir.exists() && std::fs::remove_dir(dir).is_err() {
                    left = true;
                }
            }
            if !left {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        // 7. The temp dirs, unless something is still mounted there: deleting through a
        //    live mount would delete what it shows (a volume, the host's files).
        if leftover_mounts.is_empty() {
            self.data.take();
            self.exec.take();
        } else {
            problems.push(format!(
                "still mounted, temp dirs kept: {}",
                leftover_mounts
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if let Some(d) = self.data.take() {
                let _ = d.keep();
            }
            if let Some(d) = self.exec.take() {
                let _ = d.keep();
            }
        }

        if std::thread::panicking() {
            eprintln!(
                "--- berthd log for test {} (data {}, exec {}) ---\n{}--- end of berthd log ---",
                self.name,
                data.display(),
                exec.display(),
                self.log()
            );
        }
        for p in problems {
            eprintln!("berth-e2e teardown ({}): {p}", self.name);
        }
        self.home.take();
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Picks N for 172.29.N.0/24 from the test name, skipping subnets another test holds
/// (a lock file per N) or the host routes (a leftover bridge).
fn claim_subnet(name: &str) -> Result<(u8, Flock<std::fs::File>)> {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(name.as_bytes());
    let start = u16::from(h[0]) % 200;
    let routed = routed_networks();
    for i in 0..200u16 {
        let octet = ((start + i) % 200 + 30) as u8;
        if routed.contains(&u32::from_ne_bytes([172, 29, octet, 0])) {
            continue;
        }
        let path = format!("/tmp/berth-e2e-net-{octet}.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {path}"))?;
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            return Ok((octet, lock));
        }
    }
    bail!("no free 172.29.N.0/24 subnet for test {name}")
}

/// Destinations of the host's IPv4 routes, as /proc/net/route shows them (the address
/// network-order bytes read as a native integer).
fn routed_networks() -> BTreeSet<u32> {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter_map(|d| u32::from_str_radix(d, 16).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every cgroup directory of the parent `name`, in every hierarchy (v1 controllers, the
/// v2 root), parents before children.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut tops: BTreeSet<PathBuf> = BTreeSet::new();
    let mut candidates = vec![root.join(name)];
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            candidates.push(e.path().join(name));
        }
    }
    for c in candidates {
        if c.is_dir() {
            // Co-mounted v1 controllers appear under several names (cpu -> cpu,cpuacct).
            if let Ok(real) = c.canonicalize() {
                tops.insert(real);
            }
        }
    }
    let mut out = Vec::new();
    for top in tops {
        walk_dirs(&top, &mut out);
    }
    out
}

fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk_dirs(&e.path(), out);
            }
        }
    }
}

/// Lazily unmounts everything mounted at or under `roots` (deepest first, repeated for
/// stacked mounts); returns what is still mounted afterwards.
pub fn unmount_under(roots: &[&Path]) -> Vec<PathBuf> {
    let under = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = procs::mountinfo(Path::new("/proc/self/mountinfo"))
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| roots.iter().any(|r| p.starts_with(r)))
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        v.dedup();
        v
    };
    for _ in 0..5 {
        let mounts = under();
        if mounts.is_empty() {
            break;
        }
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    under()
}
