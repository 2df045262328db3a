//! Metrics, health and the hung-service answer, with the real tools: every service's
//! metrics come out of the gateway's metrics address in one scrape that Debian's
//! Prometheus accepts; `berthd status` (and `/status`) tell each service's state,
//! restarts and last error; a service stopped with SIGSTOP is answered with a 503 naming
//! it within the deadline while `/_ping` and `docker info` keep answering.

#![allow(clippy::unwrap_used)]

use berth_e2e::http::{tcp_request, unix_request};
use berth_e2e::{Berth, registry_with_busybox, step, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Stops a process we started, by its PID, when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Continues a stopped process when dropped, so a failing test leaves nothing frozen.
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

fn scrape(port: u16) -> String {
    let r = tcp_request(port, "GET", "/metrics", None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        r.headers
    );
    r.text()
}

/// The value of the first sample line that starts with `prefix` (name and labels).
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn berthd_status(berth: &Berth) -> serde_json::Value {
    let out = Command::new(berth_e2e::berth::binary("berthd").unwrap())
        .arg("--exec-root")
        .arg(berth.exec_root())
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "berthd status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn service<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {status}"))
}

#[test]
fn metrics_status_and_a_hung_service() {
    let (_registry, _image, img) = registry_with_busybox().unwrap();
    let port = berth_e2e::registry::free_port().unwrap();
    let berth = Berth::start_full(
        "observability",
        &[],
        &[],
        &format!(r#"{{"metrics-addr": "127.0.0.1:{port}"}}"#),
    )
    .unwrap();

    step!("a pull, a running container and a log line give every service work");
    berth.docker_ok(&["pull", &img]).unwrap();
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "busy",
            &img,
            "sh",
            "-c",
            "echo hi; sleep 600",
        ])
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || berth
        .docker(&["logs", "busy"])
        .stdout
        .contains("hi")));

    step!("one scrape holds every service's metrics");
    let text = scrape(port);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(
        text.matches("# TYPE berth_grpc_server_requests counter")
            .count(),
        1
    );
    for svc in ["imaged", "containerd", "netd", "volumed", "logd"] {
        assert_eq!(
            sample(&text, "berth_service_up", &[&format!("service=\"{svc}\"")]),
            Some(1.0),
            "{svc} not up in:\n{text}"
        );
        assert!(
            sample(
                &text,
                "berth_grpc_server_requests_total",
                &[&format!("service=\"{svc}\"")]
            )
            .is_some(),
            "no gRPC calls counted for {svc}:\n{text}"
        );
    }
    assert!(
        sample(
            &text,
            "berth_http_requests_total",
            &["route=\"/containers/create\"", "code=\"201\""]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "berth_containers", &["state=\"running\""]),
        Some(1.0),
        "{text}"
    );
    assert!(sample(&text, "berth_image_pulls_total", &["result=\"ok\""]).is_some_and(|n| n >= 1.0));
    assert!(sample(&text, "berth_image_pull_bytes_total", &[]).is_some_and(|n| n > 1e6));
    assert!(
        sample(&text, "berth_log_lines_total", &["stream=\"stdout\""]).is_some_and(|n| n >= 1.0)
    );
    assert!(
        text.contains("berth_sqlite_probe_duration_seconds_bucket"),
        "{text}"
    );

    step!("Debian's Prometheus scrapes it");
    let prom_port = berth_e2e::registry::free_port().unwrap();
    let prom_dir = tempfile::tempdir().unwrap();
    let cfg = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: berth\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut services_seen = Vec::new();
    let scraped = wait_until(Duration::from_secs(60), || {
        let Ok(r) = tcp_request(
            prom_port,
            "GET",
            "/api/v1/query?query=berth_grpc_server_requests_total",
            None,
        ) else {
            return false;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) else {
            return false;
        };
        let mut seen: Vec<String> = v["data"]["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["metric"]["service"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        seen.sort();
        seen.dedup();
        services_seen = seen;
        ["containerd", "imaged", "logd", "netd", "volumed"]
            .iter()
            .all(|s| services_seen.iter().any(|x| x == s))
    });
    assert!(scraped, "Prometheus saw services {services_seen:?}");
    let up = tcp_request(prom_port, "GET", "/api/v1/query?query=up", None).unwrap();
    let up: serde_json::Value = serde_json::from_slice(&up.body).unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");

    step!("berthd status: every service up; a kill -9 shows as a restart with its cause");
    let status = berthd_status(&berth);
    for svc in ["logd", "volumed", "netd", "imaged", "containerd", "gateway"] {
        assert_eq!(service(&status, svc)["state"], "up", "{status}");
    }
    let netd = berth.service_pid("berth-netd").unwrap();
    kill(Pid::from_raw(netd as i32), Signal::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(15), || {
        let s = berthd_status(&berth);
        let n = service(&s, "netd");
        n["restarts"] == 1 && n["state"] == "up"
    }));
    let status = berthd_status(&berth);
    assert_eq!(
        service(&status, "netd")["last_error"],
        "killed by signal 9",
        "{status}"
    );
    let r = tcp_request(port, "GET", "/status", None).unwrap();
    assert_eq!(r.status, 200);
    let from_gateway: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(service(&from_gateway, "netd")["restarts"], 1);
    assert_eq!(
        sample(
            &scrape(port),
            "berth_service_restarts_total",
            &["service=\"netd\""]
        ),
        Some(1.0)
    );

    step!("a hung imaged (SIGSTOP): 503 naming it in time; ping and info still answer");
    let imaged = berth.service_pid("berth-imaged").unwrap();
    kill(Pid::from_raw(imaged as i32), Signal::SIGSTOP).unwrap();
    let _cont = Continue(imaged);
    let t = Instant::now();
    let ping = unix_request(berth.socket(), "GET", "/_ping", None, b"").unwrap();
    assert_eq!(ping.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "ping took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let info = berth.docker(&["info", "--format", "{{json .Warnings}}"]);
    assert!(info.success(), "{info}");
    assert!(info.stdout.contains("imaged"), "{info}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "docker info took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let r = unix_request(berth.socket(), "GET", "/v1.50/images/json", None, b"").unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("imaged"), "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(service(&berthd_status(&berth), "imaged")["state"], "hung");
    drop(_cont);
    assert!(wait_until(Duration::from_secs(10), || berth
        .docker(&["images"])
        .success()));
    berth.docker_ok(&["rm", "-f", "busy"]).unwrap();
}
