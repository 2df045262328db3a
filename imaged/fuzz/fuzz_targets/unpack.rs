//! Any byte string as a layer tar: unpacking may fail, but must not panic nor write
//! outside its destination (a sibling canary directory stays empty).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let root = tempfile::tempdir().expect("tempdir");
    let dest = root.path().join("layer");
    let outside = root.path().join("outside");
    std::fs::create_dir(&outside).expect("outside");
    let _ = berth_imaged::unpack::unpack_tar(data, &dest);
    let escaped = std::fs::read_dir(&outside).expect("read outside").count();
    assert_eq!(escaped, 0, "the unpacker wrote outside its root");
    let others: Vec<_> = std::fs::read_dir(root.path())
        .expect("read root")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|n| n != "layer" && n != "outside")
        .collect();
    assert!(others.is_empty(), "the unpacker wrote beside its root: {others:?}");
});
