//! `docker save` / `docker load` with the real CLI: a round trip keeps the image ID and
//! tag, through a file and through a pipe, by ID (no tag), an archive written by skopeo
//! (Docker's docker-archive format) loads, skopeo reads ours, and hostile archives (a
//! `../` name, a layer that does not match its diff ID) are refused leaving no image.

use berth_e2e::{Berth, berth_with_busybox, cmd, step};
use std::process::Command;
use std::time::Duration;

fn names_in(tar_path: &std::path::Path) -> Vec<String> {
    let f = std::fs::File::open(tar_path).expect("opening the archive");
    tar::Archive::new(f)
        .entries()
        .expect("reading the archive")
        .map(|e| {
            let e = e.expect("an archive entry");
            e.path().expect("an entry name").display().to_string()
        })
        .collect()
}

fn image_count(berth: &Berth) -> usize {
    berth
        .docker_ok(&["images", "-q"])
        .expect("docker images")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[test]
fn docker_save_and_load() {
    let (_registry, image, img, berth) = berth_with_busybox("saveload").unwrap();
    let id = berth.inspect("{{.Id}}", &img).unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("busybox.tar");
    let file_s = file.display().to_string();

    step!("save to a file: OCI layout plus Docker's manifest.json with the tag");
    berth.docker_ok(&["save", "-o", &file_s, &img]).unwrap();
    let names = names_in(&file);
    for want in ["manifest.json", "index.json", "oci-layout"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    let manifest: serde_json::Value = {
        let f = std::fs::File::open(&file).unwrap();
        let mut a = tar::Archive::new(f);
        let mut e = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().display().to_string() == "manifest.json")
            .unwrap();
        serde_json::from_reader(&mut e).unwrap()
    };
    assert_eq!(manifest[0]["RepoTags"][0], img);
    // skopeo (containers/image) reads it as a docker-archive.
    let out = cmd::run(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("docker-archive:{file_s}"))
            .env("HOME", work.path()),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains(&image.diff_id), "{out}");

    step!("rmi, then load: the same ID and tag, and it runs");
    berth.docker_ok(&["rmi", &img]).unwrap();
    let out = berth.docker_ok(&["load", "-i", &file_s]).unwrap();
    assert!(out.contains(&format!("Loaded image: {img}")), "{out}");
    assert_eq!(berth.inspect("{{.Id}}", &img).unwrap(), id);
    let out = berth
        .docker_ok(&["run", "--rm", &img, "echo", "loaded"])
        .unwrap();
    assert_eq!(out, "loaded\n");

    step!("through a pipe, and by ID (no tag: Loaded image ID)");
    let out = berth.shell(&format!("docker save {img} | docker load"));
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("Loaded image:"), "{out}");
    let by_id = work.path().join("by-id.tar");
    berth
        .docker_ok(&["save", "-o", &by_id.display().to_string(), id.trim()])
        .unwrap();
    let out = berth
        .docker_ok(&["load", "-i", &by_id.display().to_string()])
        .unwrap();
    assert!(
        out.contains(&format!("Loaded image ID: {}", id.trim())),
        "{out}"
    );

    step!("an archive skopeo wrote (uncompressed layers) loads under its tag");
    let skopeo_tar = work.path().join("skopeo.tar");
    let out = cmd::run(
        Command::new("skopeo")
            .args(["copy", "--insecure-policy"])
            .arg(format!("oci:{}:latest", image.layout_dir().display()))
            .arg(format!(
                "docker-archive:{}:example/fromskopeo:v9",
                skopeo_tar.display()
            ))
            .env("HOME", work.path()),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(out.success(), "{out}");
    let out = berth
        .docker_ok(&["load", "-i", &skopeo_tar.display().to_string()])
        .unwrap();
    assert!(out.contains("Loaded image: example/fromskopeo:v9"), "{out}");
    assert_eq!(
        berth.inspect("{{.Id}}", "example/fromskopeo:v9").unwrap(),
        id
    );

    step!("a plain OCI layout tar (no manifest.json) loads too");
    let layout_tar = work.path().join("layout.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&layout_tar).unwrap());
        b.append_dir_all(".", image.layout_dir()).unwrap();
        b.finish().unwrap();
    }
    let out = berth
        .docker_ok(&["load", "-i", &layout_tar.display().to_string()])
        .unwrap();
    assert!(
        out.contains(&format!("Loaded image ID: {}", id.trim())),
        "{out}"
    );

    step!("hostile archives: refused, no image added");
    let before = image_count(&berth);
    let evil = work.path().join("evil.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&evil).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        let name = b"../../escape";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"[]"[..]).unwrap();
        b.finish().unwrap();
    }
    let out = berth.docker(&["load", "-i", &evil.display().to_string()]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("leaves the archive"), "{out}");
    // A manifest whose layer is not what the config says.
    let lying = work.path().join("lying.tar");
    {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
            "0".repeat(64)
        );
        let mut b = tar::Builder::new(std::fs::File::create(&lying).unwrap());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        };
        let mut layer = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        layer.append_data(&mut h, "file", &b"abc"[..]).unwrap();
        add("layer.tar", &layer.into_inner().unwrap());
        add("config.json", config.as_bytes());
        add(
            "manifest.json",
            br#"[{"Config":"config.json","RepoTags":["liar:latest"],"Layers":["layer.tar"]}]"#,
        );
    }
    let out = berth.docker(&["load", "-i", &lying.display().to_string()]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("diff ID"), "{out}");
    assert_eq!(image_count(&berth), before);
    let out = berth.docker(&["save", "nosuch:image"]);
    assert!(!out.success());
    assert!(out.stderr.contains("No such image"), "{out}");
}
