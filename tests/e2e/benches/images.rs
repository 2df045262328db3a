//! Image figures of issue 3, timed by hyperfine against a release-built Berth: `docker
//! pull` of a 60 MiB, 3-layer image (busybox and two layers of 30 MiB of random bytes)
//! from a loopback registry, removed before each run; the same pull with the image
//! present; and imaged's peak resident memory over all of it (VmHWM).
//!
//! Run with `bash bench/images.sh`. With DOCKER_HOST_REF set to another engine's socket,
//! the same pulls are timed against it in the same run, side by side (a loopback
//! registry is plain HTTP to dockerd by default).

use berth_e2e::bench::{berth_env, hyperfine, hyperfine_prepared, runs, status_kib};
use berth_e2e::{Berth, Format, Registry, TestImage};

fn time_pulls(label: &str, env: &[(String, String)], reference: &str) -> anyhow::Result<()> {
    let n = runs().min(10);
    let rm = format!("docker rmi -f {reference} >/dev/null 2>&1 || true");
    let cold = hyperfine_prepared(env, Some(&rm), &format!("docker pull {reference}"), n)?;
    let present = hyperfine(env, &format!("docker pull {reference}"), n)?;
    println!("  {label:<8} pull {cold:8.1} ms | with the image present {present:7.1} ms");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let registry = Registry::start()?;
    let image = TestImage::build_with_filler(&[30 << 20, 30 << 20])?;
    let (reference, _) = image.push(&registry, "big:latest", Format::Oci)?;
    let berth = Berth::start("bench-images")?;
    println!("pull of a 60 MiB, 3-layer image from a loopback registry (medians; hyperfine):");
    time_pulls("berth", &berth_env(&berth), &reference)?;
    let imaged = berth
        .service_pid("berth-imaged")
        .ok_or_else(|| anyhow::anyhow!("imaged not running"))?;
    println!(
        "  imaged peak RSS over the pulls: {} KiB (now {} KiB: anonymous {} KiB, file-backed {} KiB)",
        status_kib(imaged, "VmHWM:"),
        status_kib(imaged, "VmRSS:"),
        status_kib(imaged, "RssAnon:"),
        status_kib(imaged, "RssFile:")
    );
    if let Ok(host) = std::env::var("DOCKER_HOST_REF") {
        time_pulls("ref", &[("DOCKER_HOST".to_string(), host)], &reference)?;
    }
    Ok(())
}
