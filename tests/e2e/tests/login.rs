//! A registry that requires a password (Debian's docker-registry with htpasswd) and the
//! real CLI: a pull without credentials is refused, `docker login` with a wrong password
//! fails with Docker's words and with the right one says "Login Succeeded", the CLI's
//! stored credentials then reach the registry on pull (X-Registry-Auth), and after
//! `docker logout` the pull is refused again; `docker push` (progress, digest, layers
//! the registry has skipped) with the same credentials, pulled back by digest and run.
//! The same with a registry that takes only Bearer tokens from a token server.

use berth_e2e::token_server::TokenServer;
use berth_e2e::{Berth, Format, Registry, TestImage, step};

#[test]
fn login_and_pull_with_a_password() {
    let registry = Registry::start_with_password("tester", "s3cret-pw").unwrap();
    let (reference, berth) = seeded(&registry, "tester:s3cret-pw", "login");
    let host = registry.host();

    step!("no credentials: the registry's refusal");
    let out = berth.docker(&["pull", &reference]);
    assert!(!out.success(), "{out}");
    // Docker's words for a refused pull.
    assert!(
        out.stderr.contains("pull access denied") && out.stderr.contains("docker login"),
        "{out}"
    );

    step!("docker login: a wrong password is refused, the right one accepted");
    let out = berth.docker(&["login", "-u", "tester", "-p", "wrong", &host]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "login attempt to http://{host}/v2/ failed with status: 401 Unauthorized"
        )),
        "{out}"
    );
    let out = berth.shell(&format!(
        "echo s3cret-pw | docker login -u tester --password-stdin {host}"
    ));
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("Login Succeeded"), "{out}");

    step!("the stored credentials go with the pull");
    berth.docker_ok(&["pull", &reference]).unwrap();
    let id = berth
        .docker_ok(&["image", "inspect", "-f", "{{.Id}}", &reference])
        .unwrap();
    assert!(id.trim().starts_with("sha256:"), "{id}");
    berth
        .docker_ok(&["run", "--rm", &reference, "true"])
        .unwrap();

    step!("docker push: with progress, then pulled back by its digest and run");
    let copy = format!("{host}/private/copy:v2");
    berth.docker_ok(&["tag", &reference, &copy]).unwrap();
    let out = berth.docker_ok(&["push", &copy]).unwrap();
    assert!(
        out.contains(&format!(
            "The push refers to repository [{host}/private/copy]"
        )),
        "{out}"
    );
    assert!(
        out.contains("Pushed") || out.contains("Layer already exists"),
        "{out}"
    );
    let digest = pushed_digest(&out);
    assert!(digest.starts_with("sha256:"), "{out}");
    // Pushing again: every layer is already there.
    let again = berth.docker_ok(&["push", &copy]).unwrap();
    assert!(again.contains("Layer already exists"), "{again}");
    berth.docker_ok(&["rmi", &copy]).unwrap();
    let by_digest = format!("{host}/private/copy@{digest}");
    berth.docker_ok(&["pull", &by_digest]).unwrap();
    let out = berth
        .docker_ok(&["run", "--rm", &by_digest, "echo", "from the pushed copy"])
        .unwrap();
    assert_eq!(out, "from the pushed copy\n");
    step!("docker push --all-tags: every local tag of the repository");
    for t in ["a1", "a2"] {
        berth
            .docker_ok(&["tag", &reference, &format!("{host}/private/many:{t}")])
            .unwrap();
    }
    let out = berth
        .docker_ok(&["push", "--all-tags", &format!("{host}/private/many")])
        .unwrap();
    assert_eq!(
        out.matches("The push refers to repository").count(),
        1,
        "{out}"
    );
    assert!(out.contains("a1: digest: sha256:"), "{out}");
    assert!(out.contains("a2: digest: sha256:"), "{out}");
    // One push event per tag, as Docker.
    let pushes = berth
        .stored_events(&["type=image", "event=push"], "{{.Actor.ID}}")
        .unwrap();
    for t in ["a1", "a2"] {
        let actor = format!("{host}/private/many:{t}");
        assert_eq!(
            pushes.iter().filter(|l| **l == actor).count(),
            1,
            "{pushes:?}"
        );
    }
    berth
        .docker_ok(&["rmi", &format!("{host}/private/many:a2")])
        .unwrap();
    berth
        .docker_ok(&["pull", &format!("{host}/private/many:a2")])
        .unwrap();
    let missing = berth.docker(&["push", &format!("{host}/nothing/here:v1")]);
    assert!(!missing.success());
    assert!(
        missing
            .stderr
            .contains("An image does not exist locally with the tag"),
        "{missing}"
    );

    step!("docker logout: refused again");
    berth.docker_ok(&["logout", &host]).unwrap();
    let out = berth.docker(&["push", &reference]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("unauthorized") || out.stdout.contains("unauthorized"),
        "{out}"
    );
    berth.docker_ok(&["rmi", &reference]).unwrap();
    let out = berth.docker(&["pull", &reference]);
    assert!(!out.success(), "{out}");

    step!("an unreachable registry: Docker's words, not a login");
    let closed = berth_e2e::registry::free_port().unwrap();
    let out = berth.docker(&[
        "login",
        "-u",
        "a",
        "-p",
        "b",
        &format!("127.0.0.1:{closed}"),
    ]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("connection refused") || out.stderr.contains("onnect"),
        "{out}"
    );
}

/// The Bearer-token flow (Docker Hub's): the registry answers 401 with a realm, the
/// client fetches a token there (with the user's credentials, or anonymously) and
/// retries with it. The token server is a real one signing RS256 JWTs the registry
/// verifies against its certificate.
#[test]
fn login_pull_and_push_with_bearer_tokens() {
    let tokens = TokenServer::start("tokuser", "t0ken-pw").unwrap();
    let registry = Registry::start_with_tokens(&tokens).unwrap();
    let (reference, berth) = seeded(&registry, "tokuser:t0ken-pw", "bearer");
    let host = registry.host();

    step!("anonymous: the token grants nothing and the pull is refused");
    let granted_before = tokens.granted();
    let out = berth.docker(&["pull", &reference]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("pull access denied") && out.stderr.contains("docker login"),
        "{out}"
    );
    assert_eq!(tokens.granted(), granted_before, "no access for anonymous");

    step!("docker login: a wrong password gets no token, the right one does");
    let out = berth.docker(&["login", "-u", "tokuser", "-p", "wrong", &host]);
    assert!(!out.success(), "{out}");
    assert!(!out.stdout.contains("Login Succeeded"), "{out}");
    // Docker's words when the token server refuses the credentials.
    assert!(
        out.stderr
            .contains("unauthorized: incorrect username or password"),
        "{out}"
    );
    let out = berth.shell(&format!(
        "echo t0ken-pw | docker login -u tokuser --password-stdin {host}"
    ));
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("Login Succeeded"), "{out}");

    step!("pull and run with a granted token");
    berth.docker_ok(&["pull", &reference]).unwrap();
    assert!(tokens.granted() > granted_before, "the pull used no token");
    let out = berth
        .docker_ok(&["run", "--rm", &reference, "echo", "via a token"])
        .unwrap();
    assert_eq!(out, "via a token\n");

    step!("push a new repository with a token for pull and push, pull it back by digest");
    let copy = format!("{host}/private/bearer-copy:v1");
    berth.docker_ok(&["tag", &reference, &copy]).unwrap();
    let out = berth.docker_ok(&["push", &copy]).unwrap();
    let digest = pushed_digest(&out);
    berth.docker_ok(&["rmi", &copy]).unwrap();
    let by_digest = format!("{host}/private/bearer-copy@{digest}");
    berth.docker_ok(&["pull", &by_digest]).unwrap();

    step!("docker logout: refused again");
    berth.docker_ok(&["logout", &host]).unwrap();
    berth.docker_ok(&["rmi", &by_digest]).unwrap();
    let out = berth.docker(&["pull", &by_digest]);
    assert!(!out.success(), "{out}");
}

/// The digest `docker push` printed (`TAG: digest: sha256:... size: N`).
fn pushed_digest(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in {out}"))
        .to_string()
}

/// The test image pushed to `registry` as `private/busybox:latest` with `creds`, and a
/// Berth that knows none of them yet.
fn seeded(registry: &Registry, creds: &str, name: &str) -> (String, Berth) {
    let image = TestImage::build().expect("building the test image");
    let (reference, _) = image
        .push_as(registry, "private/busybox:latest", Format::Oci, Some(creds))
        .expect("pushing the test image");
    (reference, Berth::start(name).expect("starting Berth"))
}
