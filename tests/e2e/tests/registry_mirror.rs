//! daemon.json `registry-mirrors`: Docker Hub's images come from the mirror (a local
//! registry over plain HTTP here: there is no Docker Hub on the test machines, so only
//! pulls the mirror can answer are made), under their Docker Hub names.

use berth_e2e::image::{Format, TestImage};
use berth_e2e::registry::Registry;
use berth_e2e::{Berth, step};

#[test]
fn docker_hub_images_come_from_the_mirror() {
    let mirror = Registry::start().unwrap();
    let image = TestImage::build().unwrap();
    image
        .push(&mirror, "library/busybox:latest", Format::Oci)
        .unwrap();
    image
        .push(&mirror, "someone/tool:1.0", Format::DockerV2)
        .unwrap();
    let config = format!(
        r#"{{"registry-mirrors": ["http://127.0.0.1:{}/"], "max-concurrent-downloads": 1}}"#,
        mirror.port()
    );
    let berth = Berth::start_full("mirror", &[], &[], &config).unwrap();

    step!("`docker pull busybox` is served by the mirror and named as on Docker Hub");
    let out = berth.docker_ok(&["pull", "busybox"]).unwrap();
    assert!(
        out.contains("Status: Downloaded newer image for busybox:latest"),
        "{out}"
    );
    assert_eq!(
        berth
            .inspect("{{.Id}} {{index .RepoTags 0}}", "busybox")
            .unwrap(),
        format!("{} busybox:latest", image.config_digest)
    );
    let out = berth
        .docker_ok(&["run", "--rm", "busybox", "echo", "via the mirror"])
        .unwrap();
    assert_eq!(out, "via the mirror\n");

    step!("a user's repository and a pull by digest, through the mirror too");
    berth.docker_ok(&["pull", "someone/tool:1.0"]).unwrap();
    let by_digest = format!("busybox@{}", image.manifest_digest);
    berth.docker_ok(&["rmi", "busybox"]).unwrap();
    berth.docker_ok(&["pull", &by_digest]).unwrap();
    assert!(
        berth
            .docker_ok(&[
                "images",
                "--digests",
                "--format",
                "{{.Repository}}@{{.Digest}}"
            ])
            .unwrap()
            .contains(&by_digest)
    );

    step!("docker info lists the mirror");
    let info = berth
        .docker_ok(&["info", "--format", "{{json .RegistryConfig.Mirrors}}"])
        .unwrap();
    assert!(
        info.contains(&format!("http://127.0.0.1:{}/", mirror.port())),
        "{info}"
    );
}
