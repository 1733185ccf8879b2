//! Request bodies: `sluice_engine::input::parse_body` over arbitrary bytes, in both body
//! formats, for two collections (a one-field key with a version field; a composite key
//! without one, where CloudEvents ids matter). CloudEvents envelopes take the same path
//! (`sluice_core::event::from_value` -> `cloudevent::open`).
//!
//! Asserts: `parse_body` returns `Ok` or `Err` and never panics; an NDJSON `Ok` holds at
//! least one input and no body more than `EVENTS_MAX`; every accepted event's key
//! is the key read back from its own patch, it has a version exactly when the collection
//! has a version field, and rejections keep at most `REJECTED_TEXT_BYTES_MAX` bytes. The
//! accepted events are then applied to a document state (the collection's ordering mode),
//! which must survive `codec::encode` -> `codec::decode_state` unchanged, with
//! `doc_json()` equal to serde_json's serialization of `doc()`.
#![no_main]

use input::{BodyFormat, Input, REJECTED_TEXT_BYTES_MAX, parse_body};
use libfuzzer_sys::fuzz_target;
use sluice_core::event::{CollectionSpec, Limits};
use sluice_core::{Config, DocState, codec};

// With the `engine` feature (the default) `parse_body` comes from the sluice-engine crate.
// Without it, the very same source file is compiled into this target: input.rs needs only
// sluice-core and serde_json, so the target still builds while the rest of sluice-engine
// (or sluice-store) is broken mid-edit, and without building tokio and fjall.
#[cfg(feature = "engine")]
use sluice_engine::input;
#[cfg(not(feature = "engine"))]
#[allow(dead_code)]
#[path = "../../crates/sluice-engine/src/input.rs"]
mod input;
use std::sync::LazyLock;

const CONFIG: &str = r#"
[[collections]]
name = "doctor"
key = ["/doctor_id"]
version = "/updated_at"
ordering = "field"

[[collections]]
name = "visit"
key = ["/clinic", "/visit_id"]
ordering = "document"
"#;

/// Events per body; small, so that the `TooManyEvents` path is reached.
const EVENTS_MAX: usize = 16;

struct Setup {
    /// (spec, limits): the doctor collection with the config's default limits, the visit
    /// collection with tight ones (so `TooLarge` and `TooDeep` are reached too).
    cases: Vec<(CollectionSpec, Limits)>,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let config = Config::from_toml(CONFIG).expect("the fuzz config is valid");
    let spec = |name: &str| {
        CollectionSpec::from_config(config.collection(name).expect("collection exists"))
            .expect("pointers are valid")
    };
    let defaults = Limits {
        event_bytes_max: config.limits.event_bytes_max,
        event_depth_max: config.limits.event_depth_max,
    };
    let tight = Limits {
        event_bytes_max: 512,
        event_depth_max: 4,
    };
    Setup {
        cases: vec![(spec("doctor"), defaults), (spec("visit"), tight)],
    }
});

fuzz_target!(|data: &[u8]| {
    for (spec, limits) in &SETUP.cases {
        for format in [BodyFormat::Json, BodyFormat::Ndjson] {
            let Ok(inputs) = parse_body(spec, data, format, *limits, EVENTS_MAX) else {
                continue;
            };
            // An NDJSON body without events is `BodyError::Empty`; a JSON `[]` is accepted
            // as an empty batch.
            if format == BodyFormat::Ndjson {
                assert!(!inputs.is_empty(), "NDJSON Ok with no inputs");
            }
            assert!(inputs.len() <= EVENTS_MAX, "more than events_max inputs");
            let mut state = DocState::new(spec.ordering);
            for input in &inputs {
                match input {
                    Input::Event(event) => {
                        let key = spec.key_of(&event.patch).expect("event key readable");
                        assert_eq!(key, event.key, "key differs from its patch's key");
                        assert_eq!(event.version.is_some(), spec.version.is_some());
                        // Mixed version kinds are an error, not a panic.
                        let _ = state.apply(event.version, &event.patch);
                    }
                    Input::Reject(rejection) => {
                        assert!(rejection.text.len() <= REJECTED_TEXT_BYTES_MAX);
                    }
                    Input::Delete { .. } => {}
                }
            }
            check_state(&state);
        }
    }
});

fn check_state(state: &DocState) {
    let doc = state.doc();
    let doc_json = state.doc_json();
    let serde_doc_json = doc
        .as_ref()
        .map(|doc| serde_json::to_vec(doc).expect("a map serializes"));
    let bytes = codec::encode(state, doc_json.as_deref());
    let decoded = codec::decode_state(&bytes).expect("an encoded state decodes");
    let view = codec::decode_view(&bytes).expect("an encoded state has a view");
    assert_eq!(
        doc_json.as_deref().map(String::from_utf8_lossy),
        serde_doc_json.as_deref().map(String::from_utf8_lossy),
        "doc_json() differs from serde_json's serialization of doc()"
    );
    assert_eq!(&decoded, state, "state changed through the codec");
    assert_eq!(view.version, state.version());
    assert_eq!(view.doc.as_deref(), doc_json.as_deref());
}
