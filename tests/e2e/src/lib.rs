//! berth-e2e: helpers for end-to-end tests that drive a real Berth with the real `docker`
//! CLI.
//!
//! Each test starts its own [`Registry`] (Debian's docker-registry on a free loopback
//! port), pushes the [`TestImage`] (Debian's static busybox as an image) into it, and
//! starts its own [`Berth`] (`target/debug/berthd` with temporary roots, a 172.29.N.0/24
//! bridge and its own cgroup parent). Dropping a `Berth` removes its containers, stops
//! berthd, runs `berth-netd --teardown`, kills leftover shims and cgroup members,
//! unmounts what is left under its roots, removes its cgroups and deletes its temp dirs;
//! when the test failed it prints berthd's log (which holds every service's log too).
//!
//! The binaries must be built first (`cargo build --workspace --bins`; scripts/test.sh
//! does it). Tests run as root.

pub mod bench;
pub mod berth;
pub mod cmd;
pub mod dns;
pub mod http;
pub mod image;
pub mod otlp;
pub mod procs;
pub mod registry;
pub mod syscall_probe;
pub mod terminal;
pub mod ticker;
pub mod token_server;

pub use berth::Berth;
pub use cmd::{Output, wait_until};
pub use image::{Format, TestImage};
pub use registry::Registry;
pub use terminal::Terminal;

/// Prints a progress line to stderr (shown for failing tests), so a failure says which
/// step it was in.
#[macro_export]
macro_rules! step {
    ($($arg:tt)*) => {
        eprintln!("[e2e {}] {}", env!("CARGO_CRATE_NAME"), format!($($arg)*))
    };
}

/// Starts a registry, builds the busybox image and pushes it as `busybox:latest`;
/// returns the registry, the image and the pushed reference.
pub fn registry_with_busybox() -> anyhow::Result<(Registry, TestImage, String)> {
    let registry = Registry::start()?;
    let image = TestImage::build()?;
    let (reference, _) = image.push(&registry, "busybox:latest", Format::Oci)?;
    Ok((registry, image, reference))
}

/// The start of most tests: a registry serving the busybox image, and a Berth named
/// `name` (see [`Berth::start`]) that has pulled it. Returns the registry, the image,
/// its reference and the Berth (drop them in the reverse order: bind them in this one).
pub fn berth_with_busybox(name: &str) -> anyhow::Result<(Registry, TestImage, String, Berth)> {
    let (registry, image, reference) = registry_with_busybox()?;
    let berth = Berth::start(name)?;
    berth.docker_ok(&["pull", &reference])?;
    Ok((registry, image, reference, berth))
}
