//! `docker pull --platform` against an OCI image index with two platforms (this host's
//! and arm64, pushed by skopeo): each platform's image is chosen by its entry, the default
//! is the host's, and a platform the index lacks gets Docker's error.

use berth_e2e::image::{TestImage, host_arch};
use berth_e2e::registry::Registry;
use berth_e2e::{Berth, step};

#[test]
fn pull_picks_the_platform() {
    let other = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let registry = Registry::start().unwrap();
    let (image, host_id, other_id) = TestImage::build_multi_platform(other).unwrap();
    let reference = image.push_all(&registry, "multi:latest").unwrap();
    let berth = Berth::start("platform").unwrap();

    step!("--platform linux/<other>: that entry's image");
    berth
        .docker_ok(&["pull", "--platform", &format!("linux/{other}"), &reference])
        .unwrap();
    assert_eq!(
        berth
            .inspect("{{.Id}} {{.Os}}/{{.Architecture}}", &reference)
            .unwrap(),
        format!("{other_id} linux/{other}")
    );

    step!("no --platform: this host's");
    berth.docker_ok(&["pull", &reference]).unwrap();
    assert_eq!(
        berth
            .inspect("{{.Id}} {{.Architecture}}", &reference)
            .unwrap(),
        format!("{host_id} {}", host_arch())
    );
    let out = berth
        .docker_ok(&["run", "--rm", &reference, "echo", "host platform"])
        .unwrap();
    assert_eq!(out, "host platform\n");

    step!("a platform the index lacks: Docker's error, nothing pulled");
    let out = berth.docker(&["pull", "--platform", "linux/s390x", &reference]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr
            .contains("no matching manifest for linux/s390x in the manifest list entries"),
        "{out}"
    );
}
