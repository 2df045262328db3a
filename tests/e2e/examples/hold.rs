use berth_e2e::{Berth, registry_with_busybox};
fn main() -> anyhow::Result<()> {
    let (_registry, _image, img) = registry_with_busybox()?;
    let berth = Berth::start("hold")?;
    berth.docker_ok(&["pull", &img])?;
    for (k, v) in berth_e2e::bench::berth_env(&berth) {
        println!("export {k}={v}");
    }
    println!("IMG={img}");
    while !std::path::Path::new("/tmp/hold.stop").exists() {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    Ok(())
}
