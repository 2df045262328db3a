//! A pull cut short by `kill -9` of imaged: berthd brings imaged back, the partial
//! download is cleared, nothing of the image shows, and the next pull completes it (the
//! image then runs with every layer).

use berth_e2e::image::{Format, TestImage};
use berth_e2e::registry::Registry;
use berth_e2e::{Berth, step, wait_until};
use std::process::Stdio;
use std::time::Duration;

/// Two layers of 40 MiB of random bytes: a download long enough to be caught mid-way.
const FILLER: [usize; 2] = [40 << 20, 40 << 20];

#[test]
fn pull_interrupted_by_kill9_of_imaged() {
    let registry = Registry::start().unwrap();
    let image = TestImage::build_with_filler(&FILLER).unwrap();
    let (reference, _) = image.push(&registry, "big:latest", Format::Oci).unwrap();
    let berth = Berth::start("pull-kill").unwrap();
    let tmp = berth.data_root().join("imaged/tmp");
    let busy = || std::fs::read_dir(&tmp).is_ok_and(|mut d| d.next().is_some());

    step!("kill -9 imaged while the pull downloads");
    let mut pull = berth
        .docker_command(&["pull", &reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), busy),
        "no download ever showed in {}",
        tmp.display()
    );
    berth.kill9_and_wait("berth-imaged").unwrap();
    let status = pull.wait().unwrap();
    assert!(
        !status.success(),
        "the pull finished before imaged was killed: nothing was interrupted"
    );

    step!("the partial download is gone and no image shows");
    assert!(
        wait_until(Duration::from_secs(10), || !busy()),
        "debris left in {}",
        tmp.display()
    );
    let images = berth
        .docker_ok(&["images", "--format", "{{.Repository}}"])
        .unwrap();
    assert!(!images.contains("big"), "{images}");

    step!("the next pull completes the image, which runs with every layer");
    berth.docker_ok(&["pull", &reference]).unwrap();
    assert_eq!(
        berth.inspect("{{len .RootFS.Layers}}", &reference).unwrap(),
        "3"
    );
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            &reference,
            "sh",
            "-c",
            "wc -c /filler/0.bin /filler/1.bin",
        ])
        .unwrap();
    let expected = FILLER[0].to_string();
    assert_eq!(out.matches(&expected).count(), 2, "{out}");
    assert!(!busy(), "debris left in {}", tmp.display());
}
