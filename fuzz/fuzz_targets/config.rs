//! `sluice.toml`: `sluice_core::Config::from_toml` on arbitrary text (bytes made UTF-8
//! lossily). Asserts: returns `Ok` or `Err`, never panics; an accepted config passes
//! `validate()` again and every collection compiles to a `CollectionSpec`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::Config;
use sluice_core::event::CollectionSpec;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = Config::from_toml(&text) else {
        return;
    };
    config
        .validate()
        .expect("an accepted config validates again");
    for collection in &config.collections {
        let spec = CollectionSpec::from_config(collection)
            .expect("validated collections have valid pointers");
        assert_eq!(spec.key.len(), collection.key.len());
        assert!(spec.key.iter().all(|pointer| !pointer.tokens().is_empty()));
        assert!(config.collection(&collection.name).is_some());
    }
});
