//! Terminals and stdin with the real CLI, the CLI itself on a pseudo-terminal as a person
//! would run it: `docker run -it` (a real pty in the container, its initial size, window
//! resize, ctrl-C reaching the foreground process, the exit code), detaching with
//! ctrl-p ctrl-q and `docker attach` back (after kill -9 of containerd-svc too) with their
//! attach/detach events, `docker exec -it` (size, resize, exit code),
//! `-t` alone (raw output and logs), and `-i` with piped stdin that closes properly.

use berth_e2e::{Terminal, berth_with_busybox, step, wait_until};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Types a command line (Enter is a carriage return on a raw terminal).
fn line(term: &mut Terminal, text: &str) {
    term.send(format!("{text}\r").as_bytes())
        .expect("typing into the terminal");
}

/// Asks the shell for its terminal's size (rows x columns) until it is `want`. The
/// quotes keep the echo of the typed line from matching what the output shows.
fn size_becomes(term: &mut Terminal, want: &str) -> bool {
    for i in 0..50 {
        line(term, &format!("echo siz\"\"e{i}=$(stty size | tr ' ' x)"));
        if term.expect(&format!("size{i}="), T).is_err() {
            return false;
        }
        if term.expect("\n", T).is_ok_and(|rest| rest.contains(want)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn terminals_and_stdin() {
    let (_registry, _image, img, berth) = berth_with_busybox("tty").unwrap();

    step!("docker run -it: a pty of the CLI's size, TERM, resize, ctrl-C, exit code");
    let mut term = Terminal::spawn(
        berth.docker_command(&["run", "-it", "--name", "shell", &img, "sh"]),
        30,
        100,
    )
    .unwrap();
    term.expect("/ # ", T).unwrap();
    line(
        &mut term,
        "tty; echo term=$TERM; stty size; echo calc=$((6*7))",
    );
    let shown = term.expect("calc=42", T).unwrap();
    assert!(shown.contains("/dev/pts/0"), "{shown}");
    assert!(shown.contains("term=xterm"), "{shown}");
    assert!(shown.contains("30 100"), "{shown}");
    term.resize(41, 132).unwrap();
    // The CLI learns the new size from SIGWINCH and sends it.
    assert!(
        size_becomes(&mut term, "41x132"),
        "the window size never reached the container"
    );
    line(&mut term, "sleep 100");
    std::thread::sleep(Duration::from_millis(500));
    term.send(b"\x03").unwrap();
    // SIGINT from the line discipline ends sleep (128+2) well before its 100 s.
    line(&mut term, "echo aft\"\"er=$?");
    term.expect("after=130", Duration::from_secs(10)).unwrap();
    line(&mut term, "exit 3");
    assert_eq!(term.wait(T).unwrap(), 3);
    assert_eq!(
        berth
            .inspect(
                "{{.State.Status}} {{.State.ExitCode}} {{.Config.Tty}}",
                "shell"
            )
            .unwrap(),
        "exited 3 true"
    );

    step!("ctrl-p ctrl-q detaches and leaves the container running; docker attach returns");
    let mut term = Terminal::spawn(
        berth.docker_command(&["run", "-it", "--name", "keep", &img, "sh"]),
        24,
        80,
    )
    .unwrap();
    term.expect("/ # ", T).unwrap();
    line(&mut term, "echo bef\"\"ore");
    term.expect("before\r\n", T).unwrap();
    term.send(b"\x10\x11").unwrap();
    assert_eq!(term.wait(T).unwrap(), 0, "{}", term.screen());
    assert_eq!(berth.inspect("{{.State.Running}}", "keep").unwrap(), "true");
    // The shim holds the terminal: containerd-svc's crash loses nothing of it.
    berth.kill9_and_wait("berth-containerd").unwrap();
    assert_eq!(berth.inspect("{{.State.Running}}", "keep").unwrap(), "true");
    let mut term = Terminal::spawn(berth.docker_command(&["attach", "keep"]), 24, 80).unwrap();
    // attach shows only new output: ask for some.
    std::thread::sleep(Duration::from_millis(500));
    line(&mut term, "echo again-$((1+1))");
    term.expect("again-2", T).unwrap();
    line(&mut term, "exit 4");
    assert_eq!(term.wait(T).unwrap(), 4);
    // What was typed and shown is in the logs, raw as on the terminal.
    let logs = berth.docker_ok(&["logs", "keep"]).unwrap();
    assert!(logs.contains("before\r\n"), "{logs:?}");
    assert!(logs.contains("again-2\r\n"), "{logs:?}");
    // Docker's events: an attach each time, a detach for the attachment the client
    // ended while the container ran (the second one ended with the container's exit).
    let events = |action: &str| berth.event_count("keep", action).unwrap();
    assert!(
        wait_until(T, || events("detach") == 1),
        "detach events: {}",
        events("detach")
    );
    assert_eq!(events("attach"), 2);

    step!("docker exec -it: its own pty, size, resize, exit code");
    berth
        .docker_ok(&["run", "-d", "--name", "box", &img, "sleep", "1000"])
        .unwrap();
    let mut term =
        Terminal::spawn(berth.docker_command(&["exec", "-it", "box", "sh"]), 20, 70).unwrap();
    term.expect("# ", T).unwrap();
    line(&mut term, "tty; stty size; echo user=$(id -u)");
    let shown = term.expect("user=0", T).unwrap();
    assert!(shown.contains("/dev/pts/"), "{shown}");
    assert!(shown.contains("20 70"), "{shown}");
    term.resize(25, 90).unwrap();
    assert!(
        size_becomes(&mut term, "25x90"),
        "the exec's window size never changed"
    );
    line(&mut term, "exit 5");
    assert_eq!(term.wait(T).unwrap(), 5);
    assert_eq!(berth.inspect("{{.State.Running}}", "box").unwrap(), "true");
    // The shim forks each exec's helper, which needs it single-threaded: receiving the
    // terminal must not have left a thread behind.
    assert_eq!(
        berth.docker_ok(&["exec", "box", "echo", "after"]).unwrap(),
        "after\n"
    );

    step!("-t alone: raw output with the terminal's line endings, in logs too");
    let out = berth
        .docker_ok(&[
            "run",
            "-t",
            "--name",
            "raw",
            &img,
            "sh",
            "-c",
            "echo out; echo err >&2",
        ])
        .unwrap();
    assert!(
        out.contains("out\r\n") && out.contains("err\r\n"),
        "{out:?}"
    );
    let logs = berth.docker_ok(&["logs", "raw"]).unwrap();
    assert!(logs.contains("out\r\nerr\r\n"), "{logs:?}");

    step!("-i with piped stdin: the container reads it to the end and exits");
    let out = berth.shell(&format!(
        "printf 'one\\ntwo\\n' | docker run -i --rm {img} wc -l"
    ));
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout.trim(), "2");
    let out = berth.shell(&format!("echo piped | docker run -i --rm {img} cat"));
    assert_eq!(out.stdout, "piped\n", "{out}");

    step!("docker attach with piped stdin to a -i container keeps its stdin open after");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "-i",
            "--name",
            "reader",
            &img,
            "sh",
            "-c",
            "read a; echo got:$a; read b; echo got:$b",
        ])
        .unwrap();
    // Not StdinOnce: the first attach's end (its CLI killed, as Docker's would wait for
    // the container) leaves stdin open for the next.
    let out = berth.shell("echo first | timeout -s KILL 3 docker attach reader");
    assert!(out.stdout.contains("got:first"), "{out}");
    assert_eq!(
        berth.inspect("{{.State.Running}}", "reader").unwrap(),
        "true"
    );
    let out = berth.shell("echo second | docker attach reader");
    assert!(out.stdout.contains("got:second"), "{out}");
    assert!(wait_until(T, || berth
        .inspect("{{.State.Status}}", "reader")
        .is_ok_and(|s| s == "exited")));

    step!("bad input: stdin for a container without -i is ignored, bad sizes refused");
    let out = berth.shell(&format!(
        "echo x | docker run --rm {img} sh -c 'cat; echo done'"
    ));
    assert_eq!(out.stdout, "done\n", "{out}");
    let resp = berth_e2e::http::unix_request(
        berth.socket(),
        "POST",
        "/containers/box/resize?h=x&w=10",
        None,
        b"",
    )
    .unwrap();
    assert_eq!(resp.status, 400, "{}", resp.text());
    let resp = berth_e2e::http::unix_request(
        berth.socket(),
        "POST",
        "/containers/box/resize?h=10&w=10",
        None,
        b"",
    )
    .unwrap();
    assert_eq!(
        resp.status,
        409,
        "a container without a terminal: {}",
        resp.text()
    );
}
