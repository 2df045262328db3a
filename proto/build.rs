//! Compiles every `.proto` under `proto/` with protox, so no system `protoc` is needed.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from("proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed=proto");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Log lines are the bulk of a `docker logs` read: as `Bytes` they are decoded as
        // slices of the received message instead of one allocation each.
        .bytes(".berth.logs.v1.LogEntry.line")
        .compile_fds(fds)?;
    Ok(())
}
