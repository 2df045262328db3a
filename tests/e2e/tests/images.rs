//! `docker tag`, `docker rmi` and `docker history` against Docker's behaviour: a second
//! tag is untagged alone; the last name deletes the image and frees its layers on disk;
//! an image a container uses is refused (409) unless forced; history lists the layers.

use berth_e2e::{Berth, berth_with_busybox, step};

fn layer_dirs(berth: &Berth) -> usize {
    std::fs::read_dir(berth.data_root().join("imaged/layers"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

#[test]
fn tag_rmi_and_history() {
    let (_registry, image, img, berth) = berth_with_busybox("images").unwrap();
    assert_eq!(layer_dirs(&berth), 1, "busybox is one layer");

    step!("docker tag adds a name to the same image");
    berth.docker_ok(&["tag", &img, "mybox:v1"]).unwrap();
    let id = |r: &str| berth.inspect("{{.Id}}", r).unwrap();
    assert_eq!(id("mybox:v1"), image.config_digest);
    let tags = berth
        .docker_ok(&["image", "inspect", "-f", "{{json .RepoTags}}", &img])
        .unwrap();
    assert!(tags.contains("mybox:v1") && tags.contains(&img), "{tags}");

    step!("docker history shows the layer, newest first, with the image ID on top");
    let hist = berth
        .docker_ok(&[
            "history",
            "--no-trunc",
            "--format",
            "{{.ID}}\t{{.Size}}",
            "mybox:v1",
        ])
        .unwrap();
    let first = hist.lines().next().unwrap_or_default();
    assert!(first.starts_with(&image.config_digest), "{hist}");
    assert!(hist.contains("MB"), "{hist}");

    step!("rmi of one of two names only untags");
    let out = berth.docker_ok(&["rmi", "mybox:v1"]).unwrap();
    assert_eq!(out.trim(), "Untagged: mybox:v1");
    assert_eq!(id(&img), image.config_digest);
    let out = berth.docker(&["image", "inspect", "mybox:v1"]);
    assert!(out.stderr.contains("No such image: mybox:v1"), "{out}");

    step!("an image a container uses is refused without -f (409)");
    berth
        .docker_ok(&["run", "-d", "--name", "user", &img, "sleep", "300"])
        .unwrap();
    let out = berth.docker(&["rmi", &img]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("conflict: unable to remove repository reference"),
        "{out}"
    );
    assert!(out.stderr.contains("(must force)"), "{out}");
    assert_eq!(id(&img), image.config_digest);
    berth.docker_ok(&["rm", "-f", "user"]).unwrap();

    step!("rmi of the last name deletes the image and frees its layer");
    let out = berth.docker_ok(&["rmi", &img]).unwrap();
    assert!(out.contains(&format!("Untagged: {img}")), "{out}");
    assert!(
        out.contains(&format!("Deleted: {}", image.config_digest)),
        "{out}"
    );
    let images = berth.docker_ok(&["images", "-q"]).unwrap();
    assert_eq!(images.trim(), "", "{images}");
    assert_eq!(layer_dirs(&berth), 0, "the layer is still on disk");

    step!("rmi of an unknown image: Docker's 404 wording; tag of one too");
    let out = berth.docker(&["rmi", "nope:latest"]);
    assert!(out.stderr.contains("No such image: nope:latest"), "{out}");
    let out = berth.docker(&["tag", "nope", "other"]);
    assert!(out.stderr.contains("No such image: nope:latest"), "{out}");

    step!("pull again after delete works (the store is consistent)");
    berth.docker_ok(&["pull", &img]).unwrap();
    let out = berth.docker(&["run", "--rm", &img, "echo", "back"]);
    assert_eq!(out.stdout, "back\n", "{out}");
}
