//! The daemon-wide commands with the real CLI: `docker system df` (-v), `docker ps -s`,
//! the space `docker container prune` reports, `docker stats` (one shot and streamed),
//! `docker info`'s counts and settings, `berthd --validate`, SIGHUP reload.

use berth_e2e::{Berth, Format, berth_with_busybox, registry_with_busybox, step};
use serde_json::Value;

/// `docker system df --format '{{json .}}'`: one object per type, by its Type.
fn df_rows(berth: &Berth) -> Vec<Value> {
    berth
        .docker_ok(&["system", "df", "--format", "{{json .}}"])
        .expect("docker system df")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

fn row<'a>(rows: &'a [Value], kind: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["Type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} row in {rows:?}"))
}

#[test]
fn docker_system_df() {
    let (registry, image, img) = registry_with_busybox().unwrap();
    let berth = Berth::start("system").unwrap();
    berth.docker_ok(&["pull", &img]).unwrap();
    // A second image with the same layer: both share every byte.
    let twin = image.relabel(serde_json::json!({"twin": "1"})).unwrap();
    let (twin_ref, _) = twin.push(&registry, "twin:latest", Format::Oci).unwrap();
    berth.docker_ok(&["pull", &twin_ref]).unwrap();

    step!("an empty daemon but for images: layers counted once, nothing active");
    let rows = df_rows(&berth);
    let images = row(&rows, "Images");
    assert_eq!(images["TotalCount"], "2", "{rows:?}");
    assert_eq!(images["Active"], "0", "{rows:?}");
    assert_eq!(row(&rows, "Containers")["TotalCount"], "0");
    assert_eq!(row(&rows, "Local Volumes")["TotalCount"], "0");
    assert_eq!(row(&rows, "Build Cache")["TotalCount"], "0");
    // Exact figures through the API the CLI reads (its table rounds them).
    let df: Value = serde_json::from_str(&berth.api_get("/system/df").unwrap()).unwrap();
    let layer = image.layer_size as i64;
    let sizes: Vec<i64> = df["Images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["Size"].as_i64().unwrap())
        .collect();
    assert!(sizes.iter().all(|s| *s == sizes[0]), "{df}");
    assert_eq!(df["LayersSize"].as_i64().unwrap(), sizes[0], "{df}");
    for i in df["Images"].as_array().unwrap() {
        assert_eq!(i["SharedSize"], i["Size"], "{df}");
    }
    assert!(
        sizes[0] > layer / 2,
        "layer tar {layer}, unpacked {}",
        sizes[0]
    );

    step!("a container's writes and a volume's bytes are measured");
    berth
        .docker_ok(&[
            "run",
            "--name",
            "writer",
            "-v",
            "data:/data",
            &img,
            "sh",
            "-c",
            "dd if=/dev/zero of=/root/rw bs=1000 count=50 2>/dev/null && \
             dd if=/dev/zero of=/data/v bs=1000 count=100 2>/dev/null",
        ])
        .unwrap();
    berth
        .docker_ok(&["run", "-d", "--name", "idle", &twin_ref, "sleep", "600"])
        .unwrap();
    let df: Value = serde_json::from_str(&berth.api_get("/system/df").unwrap()).unwrap();
    let writer = df["Containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Names"][0] == "/writer")
        .unwrap();
    assert_eq!(writer["SizeRw"].as_i64().unwrap(), 50_000, "{writer}");
    assert_eq!(
        writer["SizeRootFs"].as_i64().unwrap(),
        50_000 + sizes[0],
        "{writer}"
    );
    let vol = &df["Volumes"][0];
    assert_eq!(vol["Name"], "data");
    assert_eq!(vol["UsageData"]["Size"].as_i64().unwrap(), 100_000, "{vol}");
    assert_eq!(vol["UsageData"]["RefCount"].as_i64().unwrap(), 1, "{vol}");
    let used: Vec<i64> = df["Images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["Containers"].as_i64().unwrap())
        .collect();
    assert_eq!(used.iter().sum::<i64>(), 2, "{df}");
    assert!(
        used.iter().all(|n| *n == 1),
        "one container per image: {df}"
    );
    let rows = df_rows(&berth);
    assert_eq!(row(&rows, "Images")["Active"], "2", "{rows:?}");
    assert_eq!(row(&rows, "Containers")["TotalCount"], "2", "{rows:?}");
    assert_eq!(row(&rows, "Containers")["Active"], "1", "{rows:?}");
    assert_eq!(row(&rows, "Containers")["Size"], "50kB", "{rows:?}");
    assert_eq!(row(&rows, "Local Volumes")["Size"], "100kB", "{rows:?}");

    step!("docker system df -v lists each object");
    let v = berth.docker_ok(&["system", "df", "-v"]).unwrap();
    assert!(v.contains("Images space usage:"), "{v}");
    assert!(v.contains("data") && v.contains("100kB"), "{v}");
    assert!(v.contains("writer") && v.contains("50kB"), "{v}");

    step!("docker ps -s shows the writable and virtual sizes");
    let size = berth
        .docker_ok(&[
            "ps",
            "-a",
            "-s",
            "--filter",
            "name=writer",
            "--format",
            "{{.Size}}",
        ])
        .unwrap();
    assert!(size.starts_with("50kB (virtual "), "{size}");

    step!("container prune reports the space it reclaimed");
    let out = berth.docker_ok(&["container", "prune", "-f"]).unwrap();
    assert!(out.contains("Total reclaimed space: 50kB"), "{out}");
    let rows = df_rows(&berth);
    assert_eq!(row(&rows, "Containers")["TotalCount"], "1", "{rows:?}");
}

/// Reads the first `n` lines of a streamed `GET path` over the API socket.
fn stream_lines(berth: &Berth, path: &str, n: usize) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(berth.socket()).expect("API socket");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("read timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n").expect("sending the request");
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    let mut line = String::new();
    while out.len() < n {
        line.clear();
        let read = r.read_line(&mut line).expect("reading the stream");
        assert!(read > 0, "stream ended early");
        // Chunk sizes and headers are not JSON objects.
        if line.starts_with('{') {
            out.push(line.trim().to_string());
        }
    }
    out
}

#[test]
fn docker_stats() {
    let (_registry, _image, img, berth) = berth_with_busybox("stats").unwrap();
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "burner",
            "--memory",
            "64m",
            &img,
            "sh",
            "-c",
            "while :; do :; done",
        ])
        .unwrap();
    berth
        .docker_ok(&["run", "-d", "--name", "idle", &img, "sleep", "600"])
        .unwrap();

    step!("docker stats --no-stream: CPU %, memory against the limit, PIDs, net I/O");
    let out = berth
        .docker_ok(&["stats", "--no-stream", "--format", "{{json .}}"])
        .unwrap();
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect();
    assert_eq!(rows.len(), 2, "every running container: {out}");
    let burner = rows.iter().find(|r| r["Name"] == "burner").unwrap();
    let cpu: f64 = burner["CPUPerc"]
        .as_str()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(cpu > 10.0, "a busy loop uses CPU: {burner}");
    let mem = burner["MemUsage"].as_str().unwrap();
    assert!(mem.ends_with("/ 64MiB"), "{burner}");
    assert_eq!(burner["PIDs"], "1", "{burner}");
    assert_ne!(burner["NetIO"], "--", "{burner}");
    let idle = rows.iter().find(|r| r["Name"] == "idle").unwrap();
    let idle_cpu: f64 = idle["CPUPerc"]
        .as_str()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(idle_cpu < cpu, "{idle} vs {burner}");

    step!("the streamed API: a sample a second, each with the previous as precpu");
    let lines = stream_lines(&berth, "/containers/burner/stats?stream=1", 2);
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    let second: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["precpu_stats"], first["cpu_stats"], "{second}");
    assert!(
        second["cpu_stats"]["cpu_usage"]["total_usage"]
            .as_u64()
            .unwrap()
            > first["cpu_stats"]["cpu_usage"]["total_usage"]
                .as_u64()
                .unwrap()
    );
    assert_eq!(second["memory_stats"]["limit"], 64 << 20);

    step!("docker stats streaming with the CLI: a fresh row every second until stopped");
    let mut cli = berth
        .docker_command(&["stats", "--format", "row {{.Name}} {{.CPUPerc}}", "burner"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = cli.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut text = String::new();
        let _ = std::io::BufReader::new(stdout).read_to_string(&mut text);
        text
    });
    std::thread::sleep(std::time::Duration::from_millis(3500));
    cli.kill().unwrap();
    cli.wait().unwrap();
    let shown = reader.join().unwrap();
    let rows = shown.matches("row burner ").count();
    assert!(rows >= 2, "one row per refresh, got {rows}: {shown:?}");

    step!("a stopped container reads zero; an unknown one is Docker's 404");
    berth.docker_ok(&["stop", "-t", "0", "idle"]).unwrap();
    let j: Value =
        serde_json::from_str(&berth.api_get("/containers/idle/stats?stream=0").unwrap()).unwrap();
    assert_eq!(j["read"], "0001-01-01T00:00:00Z", "{j}");
    let out = berth.docker(&["stats", "--no-stream", "nosuch"]);
    assert!(!out.success());
    assert!(out.stderr.contains("No such container: nosuch"), "{out}");
}

fn info(berth: &Berth, format: &str) -> String {
    berth
        .docker_ok(&["info", "--format", format])
        .expect("docker info")
        .trim()
        .to_string()
}

#[test]
fn docker_info_validate_and_reload() {
    let (_registry, _image, img) = registry_with_busybox().unwrap();
    let berth = Berth::start_full(
        "info",
        &[],
        &[],
        r#"{"labels": ["tier=a"], "log-driver": "local"}"#,
    )
    .unwrap();
    berth.docker_ok(&["pull", &img]).unwrap();

    step!("docker info: real counts and the configured settings");
    berth
        .docker_ok(&["run", "-d", "--name", "up", &img, "sleep", "600"])
        .unwrap();
    berth.docker_ok(&["create", "--name", "new", &img]).unwrap();
    assert_eq!(info(&berth, "{{.Containers}}"), "2");
    assert_eq!(info(&berth, "{{.ContainersRunning}}"), "1");
    assert_eq!(info(&berth, "{{.ContainersStopped}}"), "1");
    assert_eq!(info(&berth, "{{.Images}}"), "1");
    assert_eq!(info(&berth, "{{.LoggingDriver}}"), "local");
    assert_eq!(info(&berth, "{{json .Labels}}"), r#"["tier=a"]"#);
    assert_eq!(info(&berth, "{{.Debug}}"), "false");
    assert_eq!(
        info(&berth, "{{.DockerRootDir}}"),
        berth.data_root().display().to_string()
    );

    step!("berthd --validate checks a daemon.json without starting anything");
    let berthd = berth_e2e::berth::binary("berthd").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(&good, r#"{"debug": true, "labels": ["x=y"]}"#).unwrap();
    let out = std::process::Command::new(&berthd)
        .args(["--validate", "--config-file"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "configuration OK\n");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"debug": "yes", "no-such-key": 1}"#).unwrap();
    let out = std::process::Command::new(&berthd)
        .args(["--validate", "--config-file"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-key"), "{err}");

    step!("SIGHUP reloads debug and labels; a broken file changes nothing");
    let pids: Vec<Option<u32>> = berth_e2e::berth::SERVICE_BINARIES
        .iter()
        .map(|s| berth.service_pid(s))
        .collect();
    let config = berth.config_file().unwrap();
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(berth.pid().unwrap() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    std::fs::write(
        &config,
        r#"{"labels": ["tier=b", "zone=1"], "debug": true, "log-driver": "local"}"#,
    )
    .unwrap();
    hup();
    let reloaded = berth_e2e::wait_until(std::time::Duration::from_secs(10), || {
        info(&berth, "{{json .Labels}}") == r#"["tier=b","zone=1"]"#
            && info(&berth, "{{.Debug}}") == "true"
    });
    assert!(reloaded, "{}", info(&berth, "{{json .}}"));
    std::fs::write(&config, r#"{"labels": ["tier=c"], "debug": "#).unwrap();
    hup();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(info(&berth, "{{json .Labels}}"), r#"["tier=b","zone=1"]"#);
    assert!(
        berth.log().contains("Error reconfiguring the daemon"),
        "berthd names the failure"
    );
    // Every service survived both signals: the same processes answer.
    assert_eq!(info(&berth, "{{.ContainersRunning}}"), "1");
    let running = berth.docker_ok(&["ps", "-q"]).unwrap();
    assert_eq!(running.lines().count(), 1);
    let after: Vec<Option<u32>> = berth_e2e::berth::SERVICE_BINARIES
        .iter()
        .map(|s| berth.service_pid(s))
        .collect();
    assert_eq!(pids, after, "a service died of SIGHUP");
    assert!(pids.iter().all(Option::is_some), "{pids:?}");
    drop(berth);

    step!("berthd -D: every service logs at debug level and docker info says so");
    // (The harness passes --debug itself when BERTH_E2E_DEBUG is set.)
    let extra: &[&str] = if std::env::var_os("BERTH_E2E_DEBUG").is_some() {
        &[]
    } else {
        &["-D"]
    };
    let debug = Berth::start_with("info-debug", extra).unwrap();
    assert_eq!(info(&debug, "{{.Debug}}"), "true");
    assert!(
        debug.log().contains("DEBUG"),
        "no debug lines in berthd's log"
    );
}
