//! The test fixtures themselves, for real: the busybox image is well formed, a private
//! docker-registry starts on loopback, and skopeo pushes the image into it in both
//! manifest formats. Needs no Berth, so it passes before the gateway exists.

use berth_e2e::http::tcp_request;
use berth_e2e::{Format, Registry, TestImage};
use flate2::read::GzDecoder;
use std::collections::HashMap;
use std::io::Read;

#[test]
fn image_is_built_and_pushed_to_a_private_registry() {
    let image = TestImage::build().unwrap();

    // The layer on disk: gzip over a tar with busybox, applet links, passwd, sticky tmp.
    let blob = |digest: &str| {
        std::fs::read(
            image
                .layout_dir()
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let layer = blob(&image.layer_digest);
    assert_eq!(&layer[..2], &[0x1f, 0x8b], "layer is not gzip-compressed");
    let mut tar_bytes = Vec::new();
    GzDecoder::new(&layer[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(tar_bytes.len() as u64, image.layer_size);
    assert!(image.layer_size > 1_000_000, "busybox alone is ~2 MB");
    let mut entries: HashMap<String, (tar::EntryType, u32, Option<String>)> = HashMap::new();
    for e in tar::Archive::new(&tar_bytes[..]).entries().unwrap() {
        let e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        entries.insert(
            path.trim_end_matches('/').to_string(),
            (e.header().entry_type(), e.header().mode().unwrap(), link),
        );
    }
    assert_eq!(entries["bin/busybox"].0, tar::EntryType::Regular);
    for applet in ["sh", "echo", "sleep", "cat", "ping"] {
        let (kind, _, link) = &entries[&format!("bin/{applet}")];
        assert_eq!(*kind, tar::EntryType::Symlink, "bin/{applet}");
        assert_eq!(link.as_deref(), Some("busybox"));
    }
    assert_eq!(entries["tmp"].1 & 0o7777, 0o1777);
    assert!(entries.contains_key("etc/passwd") && entries.contains_key("etc/group"));

    // The config: Docker's conventions for a busybox image.
    let config: serde_json::Value = serde_json::from_slice(&blob(&image.config_digest)).unwrap();
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], berth_e2e::image::host_arch());
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["config"]["Env"][0], berth_e2e::image::DEFAULT_PATH);
    assert_eq!(config["rootfs"]["diff_ids"][0], image.diff_id.as_str());

    // The registry: up on loopback, empty, then holding both tags.
    let registry = Registry::start().unwrap();
    let catalog = tcp_request(registry.port(), "GET", "/v2/_catalog", None).unwrap();
    assert_eq!(catalog.status, 200);
    assert!(
        catalog.text().contains("\"repositories\":[]"),
        "{}",
        catalog.text()
    );

    let (reference, oci_digest) = image
        .push(&registry, "busybox:latest", Format::Oci)
        .unwrap();
    assert_eq!(reference, format!("{}/busybox:latest", registry.host()));
    assert_eq!(
        oci_digest, image.manifest_digest,
        "OCI push kept the manifest"
    );
    let (_, v2_digest) = image
        .push(&registry, "busybox:two", Format::DockerV2)
        .unwrap();
    assert_ne!(v2_digest, oci_digest);

    let tags = tcp_request(registry.port(), "GET", "/v2/busybox/tags/list", None).unwrap();
    assert_eq!(tags.status, 200);
    let tags: serde_json::Value = serde_json::from_slice(&tags.body).unwrap();
    let mut names: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["latest", "two"]);

    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    for (tag, digest, media) in [
        (
            "latest",
            &oci_digest,
            "application/vnd.oci.image.manifest.v1+json",
        ),
        (
            "two",
            &v2_digest,
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
    ] {
        let m = tcp_request(
            registry.port(),
            "GET",
            &format!("/v2/busybox/manifests/{tag}"),
            Some(accept),
        )
        .unwrap();
        assert_eq!(m.status, 200, "{}", m.text());
        assert_eq!(m.header("docker-content-digest"), Some(digest.as_str()));
        let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(body["mediaType"], media);
        // The layer blob is served byte for byte.
        let layer_digest = body["layers"][0]["digest"].as_str().unwrap();
        assert_eq!(layer_digest, image.layer_digest);
        let b = tcp_request(
            registry.port(),
            "GET",
            &format!("/v2/busybox/blobs/{layer_digest}"),
            None,
        )
        .unwrap();
        // The filesystem driver may redirect; without a redirect it serves the blob.
        if b.status == 200 {
            assert_eq!(b.body, layer);
        } else {
            assert!(
                b.status == 307 || b.status == 302,
                "blob status {}",
                b.status
            );
        }
    }
}
