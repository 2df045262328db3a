//! `docker rename` with the real CLI: the new name in ps/inspect and the event (with the
//! old name), the embedded DNS answering to the new name only, Docker's errors.

use berth_e2e::dns::FakeResolver;
use berth_e2e::{Berth, registry_with_busybox, step};

#[test]
fn docker_rename() {
    let (_registry, _image, img) = registry_with_busybox().unwrap();
    // Names the embedded DNS does not know go upstream: a fake resolver on loopback
    // (never the host's), answering everything with 198.51.100.9.
    let resolver_ip = format!("127.0.{}.55", 100 + std::process::id() % 100);
    let resolver = FakeResolver::start(
        format!("{resolver_ip}:53").parse().unwrap(),
        "198.51.100.9".parse().unwrap(),
    )
    .unwrap();
    let berth = Berth::start_full(
        "rename",
        &[],
        &[],
        &format!(r#"{{"dns": ["{}"]}}"#, resolver.addr().ip()),
    )
    .unwrap();
    berth.docker_ok(&["pull", &img]).unwrap();
    let subnet = format!("10.214.{}.0/24", std::process::id() % 200);
    berth
        .docker_ok(&["network", "create", "--subnet", &subnet, "ren"])
        .unwrap();
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "old",
            "--network",
            "ren",
            &img,
            "sleep",
            "600",
        ])
        .unwrap();
    let ip = berth
        .inspect("{{.NetworkSettings.Networks.ren.IPAddress}}", "old")
        .unwrap();

    step!("rename: ps, inspect and the event carry the new name");
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    berth.docker_ok(&["rename", "old", "new"]).unwrap();
    assert_eq!(berth.inspect("{{.Name}}", "new").unwrap(), "/new");
    assert!(
        berth
            .docker(&["inspect", "old"])
            .stderr
            .contains("No such object")
    );
    let names = berth.docker_ok(&["ps", "--format", "{{.Names}}"]).unwrap();
    assert_eq!(names.trim(), "new");
    let events = berth
        .docker_ok(&[
            "events",
            "--since",
            &t0.to_string(),
            "--until",
            &(t0 + 2).to_string(),
            "--filter",
            "event=rename",
            "--format",
            "{{.Actor.Attributes.name}} {{.Actor.Attributes.oldName}}",
        ])
        .unwrap();
    assert_eq!(events.trim(), "new /old");

    step!("the embedded DNS answers to the new name, not the old one");
    let lookup = |name: &str| {
        berth.docker(&[
            "run",
            "--rm",
            "--network",
            "ren",
            &img,
            "nslookup",
            name,
            "127.0.0.11",
        ])
    };
    let out = lookup("new");
    assert!(out.stdout.contains(&ip), "{out}");
    let out = lookup("old");
    assert!(
        !out.stdout.contains(&ip),
        "the old name still resolves: {out}"
    );

    step!("Docker's errors");
    berth
        .docker_ok(&["create", "--name", "other", &img])
        .unwrap();
    let out = berth.docker(&["rename", "new", "other"]);
    assert!(
        out.stderr.contains("is already in use by container"),
        "{out}"
    );
    let out = berth.docker(&["rename", "new", "new"]);
    assert!(
        out.stderr
            .contains("Renaming a container with the same name as its current name"),
        "{out}"
    );
    let out = berth.docker(&["rename", "new", "bad/name"]);
    assert!(out.stderr.contains("Invalid container name"), "{out}");
    let out = berth.docker(&["rename", "nosuch", "xy"]);
    assert!(out.stderr.contains("No such container: nosuch"), "{out}");
    berth.docker_ok(&["rm", "-f", "new", "other"]).unwrap();
    berth.docker_ok(&["network", "rm", "ren"]).unwrap();
}
