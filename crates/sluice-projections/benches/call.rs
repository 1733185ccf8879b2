//! One projection call, the example `doctor_profile` with one lookup: the JavaScript
//! projector against the native one (the in-run peer), and the shape check alone.
//! `cargo bench -p sluice-projections --bench call`.

// Benchmark setup may unwrap: a failure there is a broken benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use divan::{Bencher, black_box};
use sluice_projections::native::DoctorProfile;
use sluice_projections::{Lookup, LookupError, Projector, Script, ScriptLimits};
use std::sync::Arc;

fn main() {
    divan::main();
}

const SCRIPT: &str = include_str!("../../../examples/healthcare/projections/doctor_profile.js");
const DOCTOR: &str = r#"{"doctor_id": 17, "name": "Kate Austen", "specialty": "surgery", "rating": 4.5, "accepting_patients": true, "location_id": 3, "updated_at": 1700000000}"#;
const LOCATION: &str = r#"{"location_id": 3, "name": "Chicago Hope", "city": "Chicago", "beds": 300, "updated_at": 1700000000}"#;

struct OneLocation;

impl Lookup for OneLocation {
    fn get(&self, _collection: &str, _key: &str) -> Result<Option<String>, LookupError> {
        Ok(Some(LOCATION.to_owned()))
    }
}

#[divan::bench]
fn script_doctor_profile(bencher: Bencher) {
    let mut script = Script::compile("doctor_profile.js", SCRIPT, ScriptLimits::default()).unwrap();
    let lookup: Arc<dyn Lookup> = Arc::new(OneLocation);
    bencher.bench_local(|| script.project(black_box(DOCTOR), &lookup).unwrap());
}

#[divan::bench]
fn native_doctor_profile(bencher: Bencher) {
    let mut native = DoctorProfile;
    let lookup: Arc<dyn Lookup> = Arc::new(OneLocation);
    bencher.bench_local(|| native.project(black_box(DOCTOR), &lookup).unwrap());
}

#[divan::bench]
fn shape_check(bencher: Bencher) {
    let result = r#"{"key":17,"value":{"name":"Kate Austen","specialty":"surgery","locations":[{"id":3,"name":"Chicago Hope","city":"Chicago"}]}}"#;
    bencher
        .bench_local(|| sluice_projections::entries_from_json(black_box(result), 1_000).unwrap());
}
