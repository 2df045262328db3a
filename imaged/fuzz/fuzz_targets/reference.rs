//! Any string as an image reference: parsing may refuse it, but must not panic, and what
//! it accepts must print back to a reference that parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = berth_imaged::reference::ImageRef::parse(s) {
        let again = berth_imaged::reference::ImageRef::parse(&r.familiar())
            .expect("a parsed reference's familiar form parses");
        assert_eq!(again.familiar(), r.familiar());
    }
});
