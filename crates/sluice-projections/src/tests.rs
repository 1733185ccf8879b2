//! The JavaScript projector against a map of documents: results, reads, the sandbox and
//! its caps, and the native projector giving the same entries as the example script.

use crate::native::DoctorProfile;
use crate::{
    CallError, Entry, Lookup, LookupError, Projected, Projector, Read, Script, ScriptError,
    ScriptLimits,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const EXAMPLE: &str = include_str!("../../../examples/healthcare/projections/doctor_profile.js");

#[derive(Default)]
struct Documents(BTreeMap<(String, String), String>);

impl Documents {
    fn with(mut self, collection: &str, key: &str, json: &str) -> Self {
        self.0
            .insert((collection.to_owned(), key.to_owned()), json.to_owned());
        self
    }
}

impl Lookup for Documents {
    fn get(&self, collection: &str, key: &str) -> Result<Option<String>, LookupError> {
        if !["doctor", "location", "insurance_plan"].contains(&collection) {
            return Err(LookupError::UnknownCollection(collection.to_owned()));
        }
        Ok(self
            .0
            .get(&(collection.to_owned(), key.to_owned()))
            .cloned())
    }
}

fn documents() -> Arc<dyn Lookup> {
    Arc::new(
        Documents::default()
            .with(
                "location",
                "1",
                r#"{"location_id": 1, "name": "Chicago Hope", "city": "Chicago", "beds": 300}"#,
            )
            .with(
                "location",
                "2",
                r#"{"location_id": 2, "name": "Mercy", "city": "Boston"}"#,
            )
            .with(
                "insurance_plan",
                "7",
                r#"{"plan_id": 7, "name": "Gold", "monthly_usd": 120}"#,
            ),
    )
}

fn limits() -> ScriptLimits {
    ScriptLimits {
        call_time_ms_max: 50,
        ..ScriptLimits::default()
    }
}

fn compile(source: &str) -> Script {
    Script::compile("test.js", source, limits()).unwrap()
}

fn call(script: &mut Script, source: &str) -> Result<Projected, CallError> {
    script.project(source, &documents())
}

fn read(collection: &str, key: &str) -> Read {
    Read {
        collection: collection.to_owned(),
        key: key.to_owned(),
    }
}

#[test]
fn the_example_builds_a_profile_and_records_what_it_read() {
    let mut profile = Script::compile("doctor_profile.js", EXAMPLE, limits()).unwrap();
    let doctor = r#"{"doctor_id": 17, "name": "Kate Austen", "specialty": "surgery", "location_ids": [1, 3, 2, 1], "plan_ids": [7, 8]}"#;
    let projected = call(&mut profile, doctor).unwrap();
    assert_eq!(
        projected.entries,
        vec![Entry {
            key: "17".into(),
            value: r#"{"name":"Kate Austen","specialty":"surgery","locations":[{"id":1,"name":"Chicago Hope","city":"Chicago"},{"id":2,"name":"Mercy","city":"Boston"},{"id":1,"name":"Chicago Hope","city":"Chicago"}],"plans":[{"id":7,"name":"Gold"}]}"#.into()
        }]
    );
    // Each document once, in the order first read; the missing location 3 too.
    assert_eq!(
        projected.reads,
        vec![
            read("location", "1"),
            read("location", "3"),
            read("location", "2"),
            read("insurance_plan", "7"),
            read("insurance_plan", "8")
        ]
    );
    assert!(profile.version_hash().starts_with("sha256:"));
    assert_eq!(profile.version_hash().len(), 7 + 64);
}

#[test]
fn the_native_projector_gives_the_scripts_entries_and_reads() {
    let mut script = Script::compile("doctor_profile.js", EXAMPLE, limits()).unwrap();
    let mut native = DoctorProfile;
    for doctor in [
        r#"{"doctor_id": 17, "name": "Kate", "specialty": "surgery", "location_ids": [1, 3, 2]}"#,
        r#"{"doctor_id": "d-9", "name": "Jack", "location_id": 2}"#,
        r#"{"doctor_id": 4, "specialty": "oncology", "location_id": null}"#,
        r#"{"doctor_id": 5.5, "name": "Sawyer", "location_ids": []}"#,
        r#"{"doctor_id": 6, "location_ids": ["1", 2], "plan_ids": [7, "7", 9]}"#,
        r#"{"doctor_id": 8, "name": "Ben", "plan_ids": null}"#,
    ] {
        assert_eq!(
            native.project(doctor, &documents()).unwrap(),
            call(&mut script, doctor).unwrap(),
            "{doctor}"
        );
    }
    assert_eq!(
        native.project(r#"{"name": "no id"}"#, &documents()),
        Err(CallError::Shape("no key".into()))
    );
    assert_eq!(
        call(&mut script, r#"{"name": "no id"}"#),
        Err(CallError::Shape("no key".into()))
    );
}

#[test]
fn bad_modules_are_refused_with_file_line_and_reason() {
    let refused = |source: &str| match Script::compile("bad.js", source, limits()) {
        Err(error) => error,
        Ok(_) => panic!("compiled: {source}"),
    };
    match refused("export default function (d) {\n  return {key: d.id,, value: 1};\n}\n") {
        ScriptError::Compile { file, line, .. } => assert_eq!((file.as_str(), line), ("bad.js", 2)),
        other => panic!("{other:?}"),
    }
    let text = refused("export function project(d) { return null; }").to_string();
    assert!(
        text.contains("bad.js") && text.contains("no default export"),
        "{text}"
    );
    let text = refused("export default 42;").to_string();
    assert!(text.contains("not a function"), "{text}");
    let text =
        refused("import fs from 'fs';\nexport default function (d) { return null; }").to_string();
    assert!(text.contains("bad.js"), "{text}");
    let text = refused("while (true) {}\nexport default function (d) { return null; }").to_string();
    assert!(text.contains("longer than 50 ms"), "{text}");
}

#[test]
fn the_sandbox_has_no_clock_and_no_randomness() {
    for (expression, missing) in [
        ("Math.random()", "Math.random is not available"),
        ("Date.now()", "Date is not available"),
        ("new Date()", "Date is not available"),
    ] {
        let mut script = compile(&format!(
            "export default function (d) {{ return {{key: 1, value: {expression}}}; }}"
        ));
        match call(&mut script, "{}") {
            Err(CallError::Threw { message }) => assert!(message.contains(missing), "{message}"),
            other => panic!("{expression}: {other:?}"),
        }
    }
    // ctx cannot be changed by a script (modules are strict: the write throws).
    let mut script = compile(
        "export default function (d, ctx) { ctx.get = () => 1; return {key: 1, value: ctx.get('location', 1)}; }",
    );
    match call(&mut script, "{}") {
        Err(CallError::Threw { message }) => assert!(message.contains("read-only"), "{message}"),
        other => panic!("{other:?}"),
    }
}

/// After a cap stops a call, the next call of the same script works.
fn recovers(script: &mut Script) {
    let projected = call(script, r#"{"ok": true}"#).unwrap();
    assert_eq!(projected.entries.len(), 1);
}

const THEN_OK: &str = "if (d.ok) return {key: 1, value: 'fine'};";

#[test]
fn a_script_that_throws_is_a_call_error_with_its_message() {
    let mut script = compile(&format!(
        "export default function (d) {{ {THEN_OK} throw new Error('no specialty for ' + d.id); }}"
    ));
    match call(&mut script, r#"{"id": 17}"#) {
        Err(CallError::Threw { message }) => {
            assert!(message.contains("no specialty for 17"), "{message}");
            assert!(message.contains("test.js"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    recovers(&mut script);
}

#[test]
fn a_loop_without_end_is_stopped_by_the_time_cap() {
    let mut script = compile(&format!(
        "export default function (d) {{ {THEN_OK} for (;;) {{ try {{ for (;;) {{}} }} catch (e) {{}} }} }}"
    ));
    let started = Instant::now();
    assert_eq!(call(&mut script, "{}"), Err(CallError::Timeout { ms: 50 }));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    recovers(&mut script);
}

#[test]
fn recursion_without_bound_is_stopped_by_the_stack_cap() {
    let mut script = compile(&format!(
        "function down(n) {{ return down(n + 1) + 1; }}\nexport default function (d) {{ {THEN_OK} return down(0); }}"
    ));
    assert_eq!(
        call(&mut script, "{}"),
        Err(CallError::Stack { bytes: 256 << 10 })
    );
    recovers(&mut script);
}

#[test]
fn allocation_without_bound_is_stopped_by_the_memory_cap() {
    let mut script = compile(&format!(
        "export default function (d) {{ {THEN_OK} const kept = []; for (;;) kept.push('x'.repeat(1 << 20) + kept.length); }}"
    ));
    assert_eq!(
        call(&mut script, "{}"),
        Err(CallError::Memory { bytes: 32 << 20 })
    );
    recovers(&mut script);
}

#[test]
fn lookups_are_checked_and_bounded() {
    // An unknown collection fails the call, even when the script catches the exception.
    let mut script = compile(&format!(
        "export default function (d, ctx) {{ {THEN_OK} try {{ ctx.get('nurse', 1); }} catch (e) {{}} return null; }}"
    ));
    assert_eq!(
        call(&mut script, "{}"),
        Err(CallError::Lookup(LookupError::UnknownCollection(
            "nurse".into()
        )))
    );
    recovers(&mut script);
    let mut script = compile(
        "export default function (d, ctx) { for (let i = 0; ; i++) { try { ctx.get('location', i); } catch (e) {} } }",
    );
    assert_eq!(
        call(&mut script, "{}"),
        Err(CallError::TooManyLookups { max: 1_000 })
    );
    let mut script = compile(
        "export default function (d, ctx) { return {key: 1, value: ctx.get('location', {id: 1})}; }",
    );
    match call(&mut script, "{}") {
        Err(CallError::Threw { message }) => {
            assert!(message.contains("string or a number"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn results_of_the_wrong_shape_are_call_errors() {
    for (body, expected) in [
        ("return;", "returned nothing"),
        ("return 7;", "got a number"),
        ("return {key: {a: 1}, value: 1};", "string or a number"),
        ("return {key: 1, value: 10n};", "not JSON"),
        (
            "const v = {}; v.self = v; return {key: 1, value: v};",
            "not JSON",
        ),
        ("return {key: 1, value: () => 1};", "no value"),
        ("return () => 1;", "not JSON"),
        (
            "return Array.from({length: 1001}, (_, i) => ({key: i, value: i}));",
            "more than the 1000",
        ),
    ] {
        let mut script = compile(&format!("export default function (d) {{ {body} }}"));
        match call(&mut script, "{}") {
            Err(CallError::Shape(message)) => {
                assert!(message.contains(expected), "{body}: {message}")
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    let mut script = compile(
        "export default function (d) { return [{key: 'a', value: 1}, {key: 2, value: [d]}]; }",
    );
    assert_eq!(
        call(&mut script, r#"{"x": "é\n"}"#).unwrap().entries,
        vec![
            Entry {
                key: "a".into(),
                value: "1".into()
            },
            Entry {
                key: "2".into(),
                value: r#"[{"x":"é\n"}]"#.into()
            },
        ]
    );
    assert!(matches!(
        call(&mut script, "{not json"),
        Err(CallError::Source(_))
    ));
}
