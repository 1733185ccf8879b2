//! Document keys: `sluice_core::Key::from_segments` on the input split by '/' (as URL
//! path segments), with expected counts 1..=3, and `Key::decode` on the raw bytes.
//! Asserts: never panics; an accepted key has `expected` parts, prints back to the input
//! text, and `Key::decode(key.encode())` equals it; a decoded key re-encodes to the same
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::Key;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = Key::decode(data) {
        assert_eq!(key.encode(), data, "decode is not the inverse of encode");
        let _ = key.partition(256);
    }
    let text = String::from_utf8_lossy(data);
    let segments: Vec<&str> = text.split('/').collect();
    for expected in 1..=3 {
        let Ok(key) = Key::from_segments(&segments, expected) else {
            continue;
        };
        assert_eq!(key.parts().len(), expected);
        assert_eq!(
            key.to_string(),
            text,
            "Display is not the segments joined by '/'"
        );
        let decoded = Key::decode(&key.encode()).expect("an encoded key decodes");
        assert_eq!(decoded, key, "key changed through encode/decode");
        assert!(key.partition(8) < 8);
    }
});
