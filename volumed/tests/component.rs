//! Starts the real berth-volumed alone on temporary roots and drives it over gRPC.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

use berth_proto::volumes::volumes_client::VolumesClient;
use berth_proto::volumes::{
    AttachContainerRequest, CreateVolumeRequest, DetachContainerRequest, GetVolumeRequest,
    ListVolumesRequest, PruneVolumesRequest, RemoveVolumeRequest, VolumeFilter, VolumeMountRequest,
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
        ..Default::default()
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
        .list_volumes(ListVolumesRequest::default())
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
            rootfs_path: String::new(),
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
            rootfs_path: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    // The first attach created both volumes; the second creates nothing.
    assert!(mounts.iter().all(|m| m.created), "{mounts:?}");
    assert!(again.iter().all(|m| !m.created), "{again:?}");
    let created_off = |ms: &[berth_proto::volumes::VolumeMount]| {
        ms.iter()
            .map(|m| berth_proto::volumes::VolumeMount {
                created: false,
                ..m.clone()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(created_off(&again), created_off(&mounts));
    // A second container shares the named volume; a third has none at all.
    c.attach_container(AttachContainerRequest {
        container_id: "ctr2".into(),
        mounts: vec![mount("shared", "/x")],
        rootfs_path: String::new(),
    })
    .await
    .unwrap();
    let none = c
        .attach_container(AttachContainerRequest {
            container_id: "ctr3".into(),
            mounts: vec![],
            rootfs_path: String::new(),
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
        .list_volumes(ListVolumesRequest::default())
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

/// The filesystem type mounted exactly at `p`, from this process's mount table.
fn fs_type_at(p: &Path) -> Option<String> {
    let p = std::fs::canonicalize(p).ok()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table.lines().rev().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        (Path::new(point) == p).then(|| right.split(' ').next().unwrap_or("").to_string())
    })
}

fn opts(kv: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Drops a container's usage records behind volumed's back (it is down), as if its
/// detach had committed just before a crash.
async fn forget_container(data: &Path, id: &str) {
    let pool = berth_kit::db::open(&data.join("volumed/state.db"), &berth_volumed::MIGRATOR)
        .await
        .unwrap();
    sqlx::query("DELETE FROM usage WHERE container_id = ?")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

async fn attach(c: &mut VolumesClient<Channel>, id: &str, mounts: Vec<VolumeMountRequest>) {
    c.attach_container(AttachContainerRequest {
        container_id: id.into(),
        mounts,
        rootfs_path: String::new(),
    })
    .await
    .unwrap();
}

async fn detach(c: &mut VolumesClient<Channel>, id: &str) {
    c.detach_container(DetachContainerRequest {
        container_id: id.into(),
        remove_anonymous: true,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn option_volumes_mount_while_used_prune_and_filters() {
    let dir = tempfile::Builder::new()
        .prefix("b")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("d");
    let run = dir.path().join("r");
    let mut vd = Volumed::start(&data, &run).await;
    let mut c = vd.client();

    // Docker's local-driver option rules.
    let mut bad = create("half");
    bad.options = opts(&[("type", "tmpfs")]);
    let err = c.create_volume(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "create half: missing required option: \"device\""
    );

    // A tmpfs volume: mounted from the first user to the last, kept across kill -9.
    let mut t = create("tmpvol");
    t.options = opts(&[
        ("type", "tmpfs"),
        ("device", "tmpfs"),
        ("o", "size=1m,mode=0770"),
    ]);
    let tv = c.create_volume(t).await.unwrap().into_inner();
    let tmp_mp = PathBuf::from(&tv.mountpoint);
    assert_eq!(fs_type_at(&tmp_mp), None, "mounted before any use");
    attach(&mut c, "t1", vec![mount("tmpvol", "/t")]).await;
    attach(&mut c, "t2", vec![mount("tmpvol", "/t")]).await;
    assert_eq!(fs_type_at(&tmp_mp).as_deref(), Some("tmpfs"));
    std::fs::write(tmp_mp.join("f"), b"in tmpfs").unwrap();
    vd.kill9();
    let mut vd = Volumed::start(&data, &run).await;
    let mut c = vd.client();
    assert_eq!(std::fs::read(tmp_mp.join("f")).unwrap(), b"in tmpfs");
    detach(&mut c, "t1").await;
    assert_eq!(
        fs_type_at(&tmp_mp).as_deref(),
        Some("tmpfs"),
        "t2 still uses it"
    );
    detach(&mut c, "t2").await;
    assert_eq!(fs_type_at(&tmp_mp), None);
    assert!(!tmp_mp.join("f").exists());

    // A bind volume shows the host directory; removing the volume never touches it.
    let host = dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("keep.txt"), b"host data").unwrap();
    let mut b = create("bindvol");
    b.options = opts(&[
        ("type", "none"),
        ("o", "bind"),
        ("device", host.to_str().unwrap()),
    ]);
    let bv = c.create_volume(b).await.unwrap().into_inner();
    let bind_mp = PathBuf::from(&bv.mountpoint);
    attach(&mut c, "b1", vec![mount("bindvol", "/b")]).await;
    assert_eq!(
        std::fs::read(bind_mp.join("keep.txt")).unwrap(),
        b"host data"
    );
    std::fs::write(bind_mp.join("new.txt"), b"via volume").unwrap();
    assert_eq!(std::fs::read(host.join("new.txt")).unwrap(), b"via volume");
    // Killed while mounted and in use: still mounted after the restart. Then the user
    // goes away while volumed is down; reconcile unmounts it.
    vd.kill9();
    forget_container(&data, "b1").await;
    let vd = Volumed::start(&data, &run).await;
    let mut c = vd.client();
    assert_eq!(fs_type_at(&bind_mp), None, "reconcile left an unused mount");
    c.remove_volume(RemoveVolumeRequest {
        name: "bindvol".into(),
        force: false,
    })
    .await
    .unwrap();
    assert!(!data.join("volumed/volumes/bindvol").exists());
    assert_eq!(std::fs::read(host.join("keep.txt")).unwrap(), b"host data");
    assert_eq!(std::fs::read(host.join("new.txt")).unwrap(), b"via volume");

    // A mount that fails rolls the attach back, with Docker's words.
    let mut m = create("");
    m.options = opts(&[
        ("type", "none"),
        ("o", "bind"),
        ("device", "/nonexistent/berth"),
    ]);
    let broken = c.create_volume(m).await.unwrap().into_inner();
    let err = c
        .attach_container(AttachContainerRequest {
            container_id: "x1".into(),
            mounts: vec![mount("fresh", "/f"), mount(&broken.name, "/b")],
            rootfs_path: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with(&format!(
            "error while mounting volume '{}': failed to mount local volume: mount /nonexistent/berth:{}, flags: 0x1000: no such file or directory",
            broken.mountpoint, broken.mountpoint
        )),
        "{}",
        err.message()
    );
    let err = c
        .get_volume(GetVolumeRequest {
            name: "fresh".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Filters and prune: an unnamed volume carries Docker's anonymous label and goes
    // with a plain prune; named ones only with `all`; used ones and option volumes never.
    attach(
        &mut c,
        "p1",
        vec![mount("", "/anon-used"), mount("kept", "/k")],
    )
    .await;
    let loose = c.create_volume(create("")).await.unwrap().into_inner();
    let mut labelled = create("labelled");
    labelled.labels = opts(&[("tier", "gold")]);
    c.create_volume(labelled).await.unwrap();
    let names = |vs: Vec<berth_proto::volumes::Volume>| -> Vec<String> {
        let mut v: Vec<String> = vs.into_iter().map(|v| v.name).collect();
        v.sort();
        v
    };
    let list = |f: VolumeFilter| ListVolumesRequest {
        filter: Some(f),
        with_size: false,
    };
    let dangling = c
        .list_volumes(list(VolumeFilter {
            dangling: Some(false),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .volumes;
    assert_eq!(dangling.len(), 2, "{dangling:?}");
    assert!(dangling.iter().all(|v| v.used_by == vec!["p1".to_string()]));
    let gold = c
        .list_volumes(list(VolumeFilter {
            labels: vec!["tier=gold".into()],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .volumes;
    assert_eq!(names(gold), vec!["labelled".to_string()]);
    let pruned = c
        .prune_volumes(PruneVolumesRequest {
            filter: None,
            all: false,
        })
        .await
        .unwrap()
        .into_inner();
    // The unused option volumes (tmpvol, the broken bind) are not pruned.
    assert_eq!(pruned.deleted, vec![loose.name.clone()]);
    let all_but_tier = PruneVolumesRequest {
        filter: Some(VolumeFilter {
            not_labels: vec!["tier".into()],
            ..Default::default()
        }),
        all: true,
    };
    let pruned = c.prune_volumes(all_but_tier).await.unwrap().into_inner();
    assert!(pruned.deleted.is_empty(), "{:?}", pruned.deleted);
    let pruned = c
        .prune_volumes(PruneVolumesRequest {
            filter: None,
            all: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pruned.deleted, vec!["labelled".to_string()]);
    let left = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .volumes;
    assert_eq!(left.len(), 4, "{:?}", names(left));
    drop(vd);
}
