//! `docker events` with the real CLI: a live stream of container lifecycle events,
//! replay with --since/--until of container, image and network events, filters, and
//! events surviving a kill -9 of the gateway.

use berth_e2e::{Berth, registry_with_busybox, step, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const FORMAT: &str = "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}";

/// `docker events --since T --until U --format FORMAT [extra]`, as lines.
fn replay(berth: &Berth, since: u64, extra: &[&str]) -> Vec<String> {
    let until = (unix_now() + 1).to_string();
    let since = since.to_string();
    let mut args = vec![
        "events", "--since", &since, "--until", &until, "--format", FORMAT,
    ];
    args.extend_from_slice(extra);
    let out = berth.docker_within(&args, Duration::from_secs(30));
    assert!(out.success(), "{out}");
    out.stdout.lines().map(str::to_string).collect()
}

#[test]
fn docker_events() {
    let (_registry, _image, img) = registry_with_busybox().unwrap();
    let berth = Berth::start("events").unwrap();
    let t0 = unix_now() - 1;

    step!("a live stream sees a container's whole life");
    let mut follower = berth
        .docker_command(&[
            "events",
            "--filter",
            "type=container",
            "--format",
            "{{json .}}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The follower is connected once the CLI has its response; give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    berth.docker_ok(&["pull", &img]).unwrap();
    berth
        .docker_ok(&[
            "run", "--name", "ev1", "--label", "tier=web", &img, "sh", "-c", "exit 3",
        ])
        .unwrap_err();
    berth.docker_ok(&["rm", "ev1"]).unwrap();
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let done = wait_until(Duration::from_secs(20), || {
        while let Ok(line) = rx.try_recv() {
            seen.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
        }
        seen.iter().any(|e| e["Action"] == "destroy")
    });
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(done, "no destroy event in {seen:?}");
    let actions: Vec<&str> = seen.iter().filter_map(|e| e["Action"].as_str()).collect();
    // As Docker: an attached `docker run` attaches before it starts.
    assert_eq!(
        actions,
        ["create", "attach", "start", "die", "destroy"],
        "{seen:?}"
    );
    let die = &seen[3];
    assert_eq!(die["Type"], "container");
    assert_eq!(die["Actor"]["Attributes"]["exitCode"], "3");
    assert_eq!(die["Actor"]["Attributes"]["name"], "ev1");
    assert_eq!(die["Actor"]["Attributes"]["tier"], "web");
    assert_eq!(die["Actor"]["Attributes"]["image"], img.as_str());
    assert_eq!(die["status"], "die");
    assert!(die["timeNano"].as_i64().unwrap_or(0) > 0);

    step!("--since/--until replay container, image and network events");
    berth.docker_ok(&["tag", &img, "evtest:one"]).unwrap();
    berth.docker_ok(&["network", "create", "evnet"]).unwrap();
    berth
        .docker_ok(&["run", "-d", "--name", "ev2", &img, "sleep", "600"])
        .unwrap();
    berth
        .docker_ok(&["network", "connect", "evnet", "ev2"])
        .unwrap();
    berth.docker_ok(&["kill", "ev2"]).unwrap();
    berth.docker_ok(&["rm", "ev2"]).unwrap();
    berth.docker_ok(&["network", "rm", "evnet"]).unwrap();
    let all = replay(&berth, t0, &[]);
    for want in [
        "container create ev1",
        "container die ev1",
        "image tag evtest:one",
        "network create evnet",
        "network connect evnet",
        "container kill ev2",
        "container die ev2",
        "container destroy ev2",
        "network destroy evnet",
    ] {
        assert!(all.iter().any(|l| l == want), "{want} missing in {all:#?}");
    }
    assert!(all.iter().any(|l| l.starts_with("image pull")), "{all:#?}");

    step!("filters: event, container, type");
    let dies = replay(&berth, t0, &["--filter", "event=die"]);
    assert_eq!(dies, ["container die ev1", "container die ev2"]);
    let ev2 = replay(&berth, t0, &["--filter", "container=ev2"]);
    assert!(
        !ev2.is_empty() && ev2.iter().all(|l| l.ends_with(" ev2")),
        "{ev2:?}"
    );
    let nets = replay(&berth, t0, &["--filter", "type=network"]);
    assert!(
        !nets.is_empty() && nets.iter().all(|l| l.starts_with("network ")),
        "{nets:?}"
    );
    let out = berth.docker(&[
        "events", "--since", "1", "--until", "2", "--filter", "bogus=1",
    ]);
    assert!(
        !out.success() && out.stderr.contains("invalid filter 'bogus'"),
        "{out}"
    );

    step!("events survive kill -9 of the gateway");
    let old = berth.service_pid("berth-gateway").expect("gateway runs");
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || berth
            .service_pid("berth-gateway")
            .is_some_and(|p| p != old)
            && berth.docker(&["version"]).success()),
        "the gateway did not come back"
    );
    let after = replay(&berth, t0, &[]);
    assert_eq!(after, all, "replay differs after the gateway's restart");

    step!("a container that dies while the gateway is down is reported once it is back");
    let t1 = unix_now();
    berth
        .docker_ok(&["run", "-d", "--name", "lonely", &img, "sleep", "600"])
        .unwrap();
    let pid = berth.container_pid("lonely").unwrap();
    let gateway = Pid::from_raw(berth.service_pid("berth-gateway").unwrap() as i32);
    // Stopped, the gateway cannot read containerd-svc's die event; killed, it loses what
    // was waiting in its socket: only containerd-svc's journal still has the event.
    kill(gateway, Signal::SIGSTOP).unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    kill(gateway, Signal::SIGKILL).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || berth
            .service_pid("berth-gateway")
            .is_some_and(|p| p as i32 != gateway.as_raw())
            && berth.docker(&["version"]).success()),
        "the gateway did not come back"
    );
    let lonely = |extra: &[&str]| {
        let mut args = vec!["--filter", "container=lonely"];
        args.extend_from_slice(extra);
        replay(&berth, t1, &args)
    };
    assert!(
        wait_until(Duration::from_secs(10), || !lonely(&[
            "--filter",
            "event=die"
        ])
        .is_empty()),
        "no die event: {:?}",
        lonely(&[])
    );
    // Each event once: the journal replay does not repeat what was recorded live.
    assert_eq!(
        lonely(&[]),
        [
            "container create lonely",
            "container start lonely",
            "container die lonely"
        ]
    );
    assert_eq!(
        berth.inspect("{{.State.ExitCode}}", "lonely").unwrap(),
        "137"
    );

    step!("volume mount and unmount events name the container and the destination");
    let t2 = unix_now();
    berth
        .docker_ok(&[
            "run",
            "--rm",
            "--name",
            "user",
            "-v",
            "evvol:/data:ro",
            &img,
            "true",
        ])
        .unwrap();
    let until = (unix_now() + 1).to_string();
    let since = t2.to_string();
    let out = berth
        .docker_ok(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "type=volume",
            "--format",
            "{{.Action}} {{.Actor.ID}} {{json .Actor.Attributes}}",
        ])
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let actions: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(actions, ["create", "mount", "unmount"], "{out}");
    assert!(lines.iter().all(|l| l.contains(" evvol ")), "{out}");
    assert!(
        lines[1].contains(r#""destination":"/data""#)
            && lines[1].contains(r#""read/write":"false""#),
        "{out}"
    );
}
