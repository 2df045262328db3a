//! Starts the real berth-logd alone on temporary roots and drives it over gRPC.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

use berth_proto::logs::logs_client::LogsClient;
use berth_proto::logs::{
    CloseRequest, GetCursorRequest, LogEntry, OpenRequest, ReadRequest, RemoveRequest, WriteAck,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use tempfile::TempDir;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const BASE_TIME: i64 = 1_700_000_000_000_000_000;

struct Logd {
    child: Option<Child>,
    data: PathBuf,
    run: PathBuf,
}

impl Logd {
    async fn start(data: &Path, run: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_berth-logd"))
            .arg("--data-root")
            .arg(data)
            .arg("--exec-root")
            .arg(run)
            .spawn()
            .unwrap();
        let d = Logd {
            child: Some(child),
            data: data.to_path_buf(),
            run: run.to_path_buf(),
        };
        let sock = run.join("logd.sock");
        for _ in 0..100 {
            if berth_kit::grpc::is_serving(&sock, Duration::from_millis(200)).await {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("berth-logd never became healthy");
    }

    fn client(&self) -> LogsClient<Channel> {
        LogsClient::new(berth_kit::grpc::channel(&self.run.join("logd.sock")))
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }
}

impl Drop for Logd {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn roots() -> (TempDir, PathBuf, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("b")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("d");
    let run = dir.path().join("r");
    (dir, data, run)
}

fn entry(id: &str, session: &str, seq: u64) -> LogEntry {
    LogEntry {
        container_id: id.into(),
        session: session.into(),
        seq,
        stream: if seq.is_multiple_of(2) { 2 } else { 1 },
        line: format!("line {seq}\n").into_bytes().into(),
        time_unix_nano: BASE_TIME + seq as i64 * 1_000_000,
        partial: false,
    }
}

/// Sends entries over one Write stream and returns every ack.
async fn write(c: &mut LogsClient<Channel>, entries: Vec<LogEntry>) -> Vec<WriteAck> {
    let n = entries.len();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let sender = tokio::spawn(async move {
        for e in entries {
            tx.send(e).await.unwrap();
        }
        // Keep the request open until all acks came back.
        tx
    });
    let mut acks_stream = c.write(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let mut acks = Vec::new();
    while acks.len() < n {
        acks.push(acks_stream.next().await.unwrap().unwrap());
    }
    drop(sender.await.unwrap());
    acks
}

fn read_req(id: &str) -> ReadRequest {
    ReadRequest {
        container_id: id.into(),
        follow: false,
        tail: -1,
        since_unix_nano: 0,
        until_unix_nano: 0,
        stdout: true,
        stderr: true,
        live_only: false,
    }
}

async fn read(c: &mut LogsClient<Channel>, req: ReadRequest) -> Vec<LogEntry> {
    let mut s = c.read(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend(b.unwrap().entries);
    }
    out
}

fn texts(entries: &[LogEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8(e.line.to_vec()).unwrap())
        .collect()
}

fn expected(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range.map(|i| format!("line {i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_follow_read_filters_and_remove() {
    let (_dir, data, run) = roots();
    let logd = Logd::start(&data, &run).await;
    let mut c = logd.client();
    let id = "c0ffee";

    let path = c
        .open(OpenRequest {
            container_id: id.into(),
            driver: String::new(),
            options: Default::default(),
        })
        .await
        .unwrap()
        .into_inner()
        .log_path;
    assert_eq!(
        PathBuf::from(&path),
        data.join(format!("logd/containers/{id}/{id}-json.log"))
    );

    // A follower with tail=0 on a live, empty log, started before any write.
    let mut fc = logd.client();
    let follower = tokio::spawn(async move {
        let mut r = read_req("c0ffee");
        r.follow = true;
        r.tail = 0;
        read(&mut fc, r).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let acks = write(&mut c, (1..=1000).map(|i| entry(id, "s1", i)).collect()).await;
    assert_eq!(acks.len(), 1000);
    assert_eq!(acks.last().unwrap().seq, 1000);
    assert!(
        !follower.is_finished(),
        "follower ended while the log is live"
    );

    c.close(CloseRequest {
        container_id: id.into(),
        session: "s1".into(),
    })
    .await
    .unwrap();
    let followed = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("follower did not end after Close")
        .unwrap();
    assert_eq!(texts(&followed), expected(1..=1000));
    assert_eq!(followed[0].stream, 1);
    assert_eq!(followed[1].stream, 2);

    // The file is Docker's json-file format.
    let raw = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        raw.lines().next().unwrap(),
        r#"{"log":"line 1\n","stream":"stdout","time":"2023-11-14T22:13:20.001Z"}"#
    );

    // Everything; tail; stream filter; since/until.
    assert_eq!(texts(&read(&mut c, read_req(id)).await), expected(1..=1000));
    let mut r = read_req(id);
    r.tail = 10;
    assert_eq!(texts(&read(&mut c, r).await), expected(991..=1000));
    let mut r = read_req(id);
    r.stderr = false;
    let out = read(&mut c, r).await;
    assert_eq!(out.len(), 500);
    assert!(out.iter().all(|e| e.stream == 1));
    let mut r = read_req(id);
    r.since_unix_nano = BASE_TIME + 100 * 1_000_000;
    r.until_unix_nano = BASE_TIME + 199 * 1_000_000;
    assert_eq!(texts(&read(&mut c, r).await), expected(100..=199));

    // Resending overlapping seqs is acked but stores nothing twice.
    let acks = write(&mut c, (990..=1005).map(|i| entry(id, "s1", i)).collect()).await;
    assert_eq!(acks.len(), 16);
    assert_eq!(texts(&read(&mut c, read_req(id)).await), expected(1..=1005));
    let cur = c
        .get_cursor(GetCursorRequest {
            container_id: id.into(),
            session: "s1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .seq;
    assert_eq!(cur, 1005);

    // Follow on a closed log returns what is stored and ends.
    let mut r = read_req(id);
    r.follow = true;
    r.tail = 2;
    assert_eq!(texts(&read(&mut c, r).await), expected(1004..=1005));

    // Neither stream: Docker's 400 wording.
    let mut r = read_req(id);
    r.stdout = false;
    r.stderr = false;
    let err = c.read(r).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Remove ends a follower and the log is gone.
    c.open(OpenRequest {
        container_id: id.into(),
        driver: "json-file".into(),
        options: Default::default(),
    })
    .await
    .unwrap();
    let mut fc = logd.client();
    let follower = tokio::spawn(async move {
        let mut r = read_req("c0ffee");
        r.follow = true;
        r.tail = 1;
        read(&mut fc, r).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.remove(RemoveRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
    let followed = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("follower did not end after Remove")
        .unwrap();
    assert_eq!(texts(&followed), expected(1005..=1005));
    assert!(!Path::new(&path).exists());
    let err = c.read(read_req(id)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // Removing again is fine.
    c.remove(RemoveRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_every_acked_line_exactly_once() {
    let (_dir, data, run) = roots();
    let mut logd = Logd::start(&data, &run).await;
    let mut c = logd.client();
    let id = "deadbeef";
    let path = c
        .open(OpenRequest {
            container_id: id.into(),
            driver: "json-file".into(),
            options: Default::default(),
        })
        .await
        .unwrap()
        .into_inner()
        .log_path;
    let acks = write(&mut c, (1..=500).map(|i| entry(id, "s1", i)).collect()).await;
    assert_eq!(acks.len(), 500);

    logd.kill9();
    // A crash mid-batch leaves written-but-unacked bytes; they must not survive.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"log\":\"line 501\\n\",\"stream\":\"stdout\",\"ti")
            .unwrap();
    }
    let logd = Logd::start(&logd.data.clone(), &logd.run.clone()).await;
    let mut c = logd.client();
    assert_eq!(texts(&read(&mut c, read_req(id)).await), expected(1..=500));
    let cur = c
        .get_cursor(GetCursorRequest {
            container_id: id.into(),
            session: "s1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .seq;
    assert_eq!(cur, 500);

    // Still live after the restart: a follower waits for the shim's replay.
    let mut fc = logd.client();
    let follower = tokio::spawn(async move {
        let mut r = read_req("deadbeef");
        r.follow = true;
        r.tail = 0;
        read(&mut fc, r).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The shim replays from a point before the cursor and continues the same session.
    write(&mut c, (450..=600).map(|i| entry(id, "s1", i)).collect()).await;
    c.close(CloseRequest {
        container_id: id.into(),
        session: "s1".into(),
    })
    .await
    .unwrap();
    let followed = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(texts(&followed), expected(501..=600));
    assert_eq!(texts(&read(&mut c, read_req(id)).await), expected(1..=600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_driver_and_unknown_driver() {
    let (_dir, data, run) = roots();
    let logd = Logd::start(&data, &run).await;
    let mut c = logd.client();
    let path = c
        .open(OpenRequest {
            container_id: "quiet".into(),
            driver: "none".into(),
            options: Default::default(),
        })
        .await
        .unwrap()
        .into_inner()
        .log_path;
    assert_eq!(path, "");
    // The shim re-opens without a driver: the log stays "none".
    let path = c
        .open(OpenRequest {
            container_id: "quiet".into(),
            driver: String::new(),
            options: Default::default(),
        })
        .await
        .unwrap()
        .into_inner()
        .log_path;
    assert_eq!(path, "");
    let acks = write(&mut c, (1..=5).map(|i| entry("quiet", "s", i)).collect()).await;
    assert_eq!(acks.len(), 5);
    let err = c.read(read_req("quiet")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "configured logging driver does not support reading"
    );
    let err = c
        .open(OpenRequest {
            container_id: "x".into(),
            driver: "syslogg".into(),
            options: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(!data.join("logd/containers/x").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_bounds_the_disk_and_reads_span_the_files() {
    let (_dir, data, run) = roots();
    let mut logd = Logd::start(&data, &run).await;
    let mut c = logd.client();
    let id = "rot";
    let opts = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let bad = c
        .open(OpenRequest {
            container_id: "bad".into(),
            driver: "json-file".into(),
            options: opts(&[("max-sise", "1k")]),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        bad.message(),
        "unknown log opt 'max-sise' for json-file log driver"
    );
    c.open(OpenRequest {
        container_id: id.into(),
        driver: "json-file".into(),
        options: opts(&[("max-size", "2k"), ("max-file", "3"), ("compress", "true")]),
    })
    .await
    .unwrap();
    // A follower from the start sees every line across rotations, in order.
    let mut follow_req = read_req(id);
    follow_req.follow = true;
    let mut follower = c.read(follow_req).await.unwrap().into_inner();

    // ~90 bytes per line: 400 lines are ~36 KiB, many rotations of 2 KiB.
    for chunk in (1..=400u64).collect::<Vec<_>>().chunks(25) {
        write(&mut c, chunk.iter().map(|s| entry(id, "s1", *s)).collect()).await;
    }
    let mut followed = Vec::new();
    while followed.len() < 400 {
        let b = tokio::time::timeout(Duration::from_secs(10), follower.next())
            .await
            .expect("the follower stalled")
            .unwrap()
            .unwrap();
        followed.extend(b.entries);
    }
    assert_eq!(texts(&followed), expected(1..=400));

    // The disk: the current file and at most two rotated ones (gzipped), bounded.
    let dir = data.join("logd/containers").join(id);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            format!("{id}-json.log"),
            format!("{id}-json.log.1.gz"),
            format!("{id}-json.log.2.gz")
        ]
    );
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
        .sum();
    assert!(
        total <= 3 * 2048,
        "{total} bytes on disk for max-size 2k x 3"
    );
    let current = std::fs::metadata(dir.join(format!("{id}-json.log")))
        .unwrap()
        .len();
    assert!(current <= 2048, "the current file grew to {current} bytes");

    // Reading everything gives the newest lines, contiguous, oldest dropped.
    let all = texts(&read(&mut c, read_req(id)).await);
    let first: u64 = all[0].trim_start_matches("line ").trim().parse().unwrap();
    assert!(first > 1, "nothing was dropped");
    assert_eq!(all, expected(first..=400));
    // --tail reaches into the rotated files when the current one is short.
    let mut tail = read_req(id);
    tail.tail = 40;
    assert_eq!(texts(&read(&mut c, tail).await), expected(361..=400));

    // kill -9 and restart: the same lines, and rotation goes on.
    logd.kill9();
    let logd = Logd::start(&data, &run).await;
    let mut c = logd.client();
    assert_eq!(texts(&read(&mut c, read_req(id)).await), all);
    write(&mut c, (401..=450).map(|s| entry(id, "s1", s)).collect()).await;
    let again = texts(&read(&mut c, read_req(id)).await);
    assert_eq!(again.last().map(String::as_str), Some("line 450\n"));
}
