//! Starts the real berth-volumed alone on temporary roots and drives it over gRPC.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

use berth_proto::volumes::volumes_client::VolumesClient;
use berth_proto::volumes::{
    AttachContainerRequest, CreateVolumeRequest, DetachContainerRequest, GetVolumeRequest,
    ListVolumesRequest, RemoveVolumeRequest, VolumeMountRequest,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use tonic::transport::Channel;

struct Volumed {
    child: Option<Child>,
    run: PathBuf,
}

impl Volumed {
    async fn start(data: &Path, run: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_berth-volumed"))
            .arg("--data-root")
            .arg(data)
            .arg("--exec-root")
            .arg(run)
            .spawn()
            .unwrap();
        let d = Volumed {
            child: Some(child),
            run: run.to_path_buf(),
        };
        let sock = run.join("volumed.sock");
        for _ in 0..100 {
            if berth_kit::grpc::is_serving(&sock, Duration::from_millis(200)).await {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("berth-volumed never became healthy");
    }

    fn client(&self) -> VolumesClient<Channel> {
        VolumesClient::new(berth_kit::grpc::channel(&self.run.join("volumed.sock")))
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }
}

impl Drop for Volumed {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn create(name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        driver: String::new(),
        labels: [("team".to_string(), "a".to_string())].into(),
        options: Default::default(),
    }
}

fn mount(name: &str, dest: &str) -> VolumeMountRequest {
    VolumeMountRequest {
        name: name.into(),
        destination: dest.into(),
        read_only: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_lifecycle_usage_and_restart() {
    let dir = tempfile::Builder::new()
        .prefix("b")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("d");
    let run = dir.path().join("r");
    let mut vd = Volumed::start(&data, &run).await;
    let mut c = vd.client();

    // Create / get / list / remove.
    let v = c.create_volume(create("data1")).await.unwrap().into_inner();
    assert_eq!(v.name, "data1");
    assert_eq!(v.driver, "local");
    assert!(!v.anonymous);
    assert_eq!(
        PathBuf::from(&v.mountpoint),
        data.join("volumed/volumes/data1/_data")
    );
    assert!(Path::new(&v.mountpoint).is_dir());
    assert_eq!(v.labels.get("team").map(String::as_str), Some("a"));
    // Creating an existing name returns it.
    let again = c.create_volume(create("data1")).await.unwrap().into_inner();
    assert_eq!(again.created_at, v.created_at);
    let got = c
        .get_volume(GetVolumeRequest {
            name: "data1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, v);
    let random = c.create_volume(create("")).await.unwrap().into_inner();
    assert_eq!(random.name.len(), 64);
    assert!(random.name.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!random.anonymous);
    let list = c
        .list_volumes(ListVolumesRequest {})
        .await
        .unwrap()
        .into_inner()
        .volumes;
    assert_eq!(list.len(), 2);
    c.remove_volume(RemoveVolumeRequest {
        name: random.name.clone(),
        force: false,
    })
    .await
    .unwrap();
    assert!(!Path::new(&random.mountpoint).exists());
    let err = c
        .get_volume(GetVolumeRequest {
            name: random.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(
        err.message(),
        format!("get {}: no such volume", random.name)
    );
    let err = c
        .remove_volume(RemoveVolumeRequest {
            name: "nope".into(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "get nope: no such volume");
    c.remove_volume(RemoveVolumeRequest {
        name: "nope".into(),
        force: true,
    })
    .await
    .unwrap();
    let err = c.create_volume(create("bad/name")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "create bad/name: \"bad/name\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
    );

    // Attach a named (new) and an anonymous volume.
    let mounts = c
        .attach_container(AttachContainerRequest {
            container_id: "ctr1".into(),
            mounts: vec![mount("shared", "/data"), mount("", "/cache")],
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[0].name, "shared");
    assert!(!mounts[0].anonymous);
    assert!(mounts[1].anonymous);
    assert_eq!(mounts[1].destination, "/cache");
    for m in &mounts {
        assert!(Path::new(&m.source).is_dir(), "{}", m.source);
    }
    let anon_name = mounts[1].name.clone();
    // Idempotent: the same answer, no second anonymous volume.
    let again = c
        .attach_container(AttachContainerRequest {
            container_id: "ctr1".into(),
            mounts: vec![mount("shared", "/data"), mount("", "/cache")],
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(again, mounts);
    // A second container shares the named volume; a third has none at all.
    c.attach_container(AttachContainerRequest {
        container_id: "ctr2".into(),
        mounts: vec![mount("shared", "/x")],
    })
    .await
    .unwrap();
    let none = c
        .attach_container(AttachContainerRequest {
            container_id: "ctr3".into(),
            mounts: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert!(none.is_empty());

    let shared = c
        .get_volume(GetVolumeRequest {
            name: "shared".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shared.used_by, vec!["ctr1".to_string(), "ctr2".to_string()]);
    let err = c
        .remove_volume(RemoveVolumeRequest {
            name: "shared".into(),
            force: true,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "remove shared: volume is in use - [ctr1, ctr2]"
    );

    // Data written into a volume survives kill -9 + restart.
    std::fs::write(Path::new(&shared.mountpoint).join("hello.txt"), b"persist").unwrap();
    vd.kill9();
    let vd = Volumed::start(&data, &run).await;
    let mut c = vd.client();
    assert_eq!(
        std::fs::read(Path::new(&shared.mountpoint).join("hello.txt")).unwrap(),
        b"persist"
    );
    let list = c
        .list_volumes(ListVolumesRequest {})
        .await
        .unwrap()
        .into_inner()
        .volumes;
    let names: Vec<&str> = list.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let anon = list.iter().find(|v| v.name == anon_name).unwrap();
    assert!(anon.anonymous);
    assert!(anon.labels.contains_key("com.docker.volume.anonymous"));

    // Detach with remove_anonymous: the anonymous volume goes, the shared one stays.
    c.detach_container(DetachContainerRequest {
        container_id: "ctr1".into(),
        remove_anonymous: true,
    })
    .await
    .unwrap();
    assert!(!Path::new(&mounts[1].source).exists());
    let err = c
        .get_volume(GetVolumeRequest {
            name: anon_name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let shared = c
        .get_volume(GetVolumeRequest {
            name: "shared".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shared.used_by, vec!["ctr2".to_string()]);
    assert!(Path::new(&shared.mountpoint).join("hello.txt").exists());
    // Detaching again (and an unknown container) is success.
    for id in ["ctr1", "ctr2", "ctr3", "never"] {
        c.detach_container(DetachContainerRequest {
            container_id: id.into(),
            remove_anonymous: true,
        })
        .await
        .unwrap();
    }
    // Now unused: it can be removed, data and all.
    c.remove_volume(RemoveVolumeRequest {
        name: "shared".into(),
        force: false,
    })
    .await
    .unwrap();
    assert!(!data.join("volumed/volumes/shared").exists());
    // Only data1 is left, and nothing else lies in volumes/.
    let mut left: Vec<String> = std::fs::read_dir(data.join("volumed/volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["data1".to_string()]);
}
