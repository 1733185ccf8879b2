//! Hot functions of the ingest path, with plain RFC 7386 merging as the in-run peer:
//! `cargo bench -p sluice-core --bench merge`.

// Benchmark setup may unwrap: a failure there is a broken benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use divan::{Bencher, black_box};
use serde_json::{Map, Value, json};
use sluice_core::config::Ordering;
use sluice_core::event::{self, CollectionSpec, Limits};
use sluice_core::merge::patch::merge_members;
use sluice_core::{DocState, Pointer, Version, codec};

fn main() {
    divan::main();
}

const LIMITS: Limits = Limits {
    event_bytes_max: 1 << 20,
    event_depth_max: 64,
};
const EVENT: &str = r#"{"id":7,"version":12,"city":"Oslo","rating":4.5,"hospital":null}"#;

fn spec() -> CollectionSpec {
    CollectionSpec {
        name: "events".into(),
        key: vec![Pointer::parse("/id").unwrap()],
        key_types: Vec::new(),
        version: Some(Pointer::parse("/version").unwrap()),
        ordering: Ordering::Field,
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(members) => members,
        _ => unreachable!(),
    }
}

/// A document built from ten partial events, as in the peer kit's workload.
fn state(ordering: Ordering) -> DocState {
    let mut state = DocState::new(ordering);
    let full = json!({"id": 7, "version": 1, "name": "Ana Smith", "specialty": "oncology",
        "hospital": "Mercy", "city": "Lagos", "rating": 3.5});
    state.apply(Some(Version::Int(1)), &object(full)).unwrap();
    for version in 2..=10 {
        let patch =
            json!({"id": 7, "version": version, "city": format!("c{version}"), "rating": version});
        state
            .apply(Some(Version::Int(version)), &object(patch))
            .unwrap();
    }
    state
}

#[divan::bench]
fn parse_event() -> event::Event {
    event::parse(&spec(), black_box(EVENT.as_bytes()), LIMITS).unwrap()
}

/// The peer: RFC 7386 on a plain map, no versions, no change detection.
#[divan::bench]
fn merge_patch_plain(bencher: Bencher) {
    let doc = state(Ordering::Document).doc().unwrap();
    let patch = object(serde_json::from_str(EVENT).unwrap());
    bencher
        .with_inputs(|| doc.clone())
        .bench_local_values(|mut doc| {
            merge_members(&mut doc, black_box(&patch));
            doc
        });
}

#[divan::bench(args = [Ordering::Field, Ordering::Document])]
fn apply_event(bencher: Bencher, ordering: Ordering) {
    let state = state(ordering);
    let patch = object(serde_json::from_str(EVENT).unwrap());
    bencher
        .with_inputs(|| state.clone())
        .bench_local_values(|mut state| {
            state
                .apply(Some(Version::Int(12)), black_box(&patch))
                .unwrap();
            state
        });
}

#[divan::bench(args = [Ordering::Field, Ordering::Document])]
fn encode_state(bencher: Bencher, ordering: Ordering) {
    let state = state(ordering);
    let doc = state.doc_json().unwrap();
    bencher.bench_local(|| codec::encode(black_box(&state), Some(&doc)));
}

#[divan::bench(args = [Ordering::Field, Ordering::Document])]
fn decode_state(bencher: Bencher, ordering: Ordering) {
    let state = state(ordering);
    let doc = state.doc_json().unwrap();
    let bytes = codec::encode(&state, Some(&doc));
    bencher.bench_local(|| codec::decode_state(black_box(&bytes)).unwrap());
}
