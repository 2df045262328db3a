//! Debian's docker-compose (1.29, through docker-py) against Berth: a service with a
//! published port and a named volume answers on its port (compose disconnects and
//! reconnects the service's network to set its aliases, which lost the published ports
//! before), and `down -v` leaves nothing behind.

use berth_e2e::registry::free_port;
use berth_e2e::{berth_with_busybox, step, wait_until};
use std::time::Duration;

#[test]
fn compose_port_and_named_volume() {
    let (_registry, _image, img, berth) = berth_with_busybox("compose").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    // Its own subnet: instances of other tests pick theirs from the same pools at once.
    let subnet = format!("10.218.{}.0/24", std::process::id() % 200);
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        format!(
            r#"version: "3"
services:
  web:
    image: {img}
    command: sh -c 'echo hello-compose > /data/index.html && exec httpd -f -p 80 -h /data'
    ports:
      - "{port}:80"
    volumes:
      - webdata:/data
volumes:
  webdata:
networks:
  default:
    ipam:
      config:
        - subnet: {subnet}
"#
        ),
    )
    .unwrap();
    let compose = |args: &str| {
        berth.shell(&format!(
            "cd {} && docker-compose -p berthe2e {args} 2>&1",
            dir.path().display()
        ))
    };

    step!("up -d: the published port answers with what the service wrote to its volume");
    let up = compose("up -d");
    assert!(up.success(), "{up}");
    let url = format!("http://127.0.0.1:{port}/index.html");
    let mut body = String::new();
    let answered = wait_until(Duration::from_secs(15), || {
        let out = std::process::Command::new("timeout")
            .args(["5", "busybox", "wget", "-q", "-O", "-", &url])
            .output()
            .unwrap();
        body = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success()
    });
    assert!(
        answered,
        "the published port did not answer: {}",
        compose("ps")
    );
    assert_eq!(body, "hello-compose\n");
    let ps = compose("ps");
    assert!(
        ps.stdout.contains(&format!("0.0.0.0:{port}->80/tcp")),
        "{ps}"
    );

    step!("down -v: no container, volume or network left");
    let down = compose("down -v");
    assert!(down.success(), "{down}");
    assert_eq!(berth.docker_ok(&["ps", "-aq"]).unwrap(), "");
    assert_eq!(berth.docker_ok(&["volume", "ls", "-q"]).unwrap(), "");
    let nets = berth
        .docker_ok(&["network", "ls", "--format", "{{.Name}}"])
        .unwrap();
    assert!(!nets.contains("berthe2e"), "{nets}");
}
