//! Pruning with the real CLI: `docker container prune` (stopped ones only, label
//! filters), `docker image prune` (untagged only, or every unused image with -a), and
//! `docker system prune -a --volumes` (containers, networks, images, anonymous volumes).

use berth_e2e::{berth_with_busybox, step};

#[test]
fn docker_prune() {
    let (_registry, _image, img, berth) = berth_with_busybox("prune").unwrap();

    step!("container prune removes exited and created containers, never running ones");
    berth
        .docker_ok(&["run", "--name", "done", &img, "true"])
        .unwrap();
    berth
        .docker_ok(&[
            "create", "--name", "kept", "--label", "keep=yes", &img, "true",
        ])
        .unwrap();
    berth
        .docker_ok(&["create", "--name", "fresh", &img, "true"])
        .unwrap();
    berth
        .docker_ok(&["run", "-d", "--name", "up", &img, "sleep", "600"])
        .unwrap();
    let ids = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .map(|n| berth.inspect("{{.Id}}", n).unwrap())
            .collect()
    };
    let gone = ids(&["done", "fresh"]);
    let out = berth
        .docker_ok(&["container", "prune", "-f", "--filter", "label!=keep=yes"])
        .unwrap();
    for id in &gone {
        assert!(out.contains(id.as_str()), "{id} not pruned: {out}");
    }
    let left = berth
        .docker_ok(&["ps", "-a", "--format", "{{.Names}}"])
        .unwrap();
    let mut left: Vec<&str> = left.lines().collect();
    left.sort();
    assert_eq!(left, ["kept", "up"]);

    step!("image prune: untagged only; -a takes every image no container uses");
    let out = berth.docker_ok(&["image", "prune", "-f"]).unwrap();
    assert!(!out.contains("deleted"), "a tagged image was pruned: {out}");
    let out = berth.docker_ok(&["image", "prune", "-a", "-f"]).unwrap();
    assert!(
        !out.contains("deleted"),
        "an image in use was pruned: {out}"
    );
    berth.docker_ok(&["rm", "-f", "kept", "up"]).unwrap();
    let out = berth.docker_ok(&["image", "prune", "-a", "-f"]).unwrap();
    assert!(out.contains("untagged: "), "{out}");
    assert!(out.contains("deleted: sha256:"), "{out}");
    assert_eq!(berth.docker_ok(&["images", "-q"]).unwrap(), "");

    step!("system prune passes its filters to every prune (label!)");
    berth.docker_ok(&["pull", &img]).unwrap();
    for (kind, name, label) in [
        ("network", "netkeep", "keep=1"),
        ("network", "netdrop", "other=1"),
    ] {
        berth
            .docker_ok(&[kind, "create", "--label", label, name])
            .unwrap();
    }
    berth
        .docker_ok(&["run", "--name", "ckeep", "--label", "keep=1", &img, "true"])
        .unwrap();
    berth
        .docker_ok(&["run", "--name", "cdrop", &img, "true"])
        .unwrap();
    let out = berth
        .docker_ok(&["system", "prune", "-f", "--filter", "label!=keep=1"])
        .unwrap();
    assert!(out.contains("netdrop") && !out.contains("netkeep"), "{out}");
    let left = berth
        .docker_ok(&["ps", "-a", "--format", "{{.Names}}"])
        .unwrap();
    assert_eq!(left.trim(), "ckeep", "{out}");
    let nets = berth
        .docker_ok(&["network", "ls", "--format", "{{.Name}}"])
        .unwrap();
    assert!(
        nets.contains("netkeep") && !nets.contains("netdrop"),
        "{nets}"
    );
    berth.docker_ok(&["rm", "ckeep"]).unwrap();
    berth.docker_ok(&["network", "rm", "netkeep"]).unwrap();

    step!("system prune -a --volumes");
    berth.docker_ok(&["pull", &img]).unwrap();
    berth.docker_ok(&["network", "create", "leftover"]).unwrap();
    berth
        .docker_ok(&["run", "--name", "withvol", "-v", "/data", &img, "true"])
        .unwrap();
    assert_eq!(
        berth
            .docker_ok(&["volume", "ls", "-q"])
            .unwrap()
            .lines()
            .count(),
        1
    );
    let out = berth
        .docker_ok(&["system", "prune", "-a", "-f", "--volumes"])
        .unwrap();
    assert!(out.contains("Deleted Containers:"), "{out}");
    assert!(
        out.contains("Deleted Networks:") && out.contains("leftover"),
        "{out}"
    );
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert!(out.contains("Deleted Images:"), "{out}");
    assert_eq!(berth.docker_ok(&["ps", "-aq"]).unwrap(), "");
    assert_eq!(berth.docker_ok(&["images", "-q"]).unwrap(), "");
    assert_eq!(berth.docker_ok(&["volume", "ls", "-q"]).unwrap(), "");
    let nets = berth
        .docker_ok(&["network", "ls", "--format", "{{.Name}}"])
        .unwrap();
    assert!(!nets.contains("leftover"), "{nets}");
}
