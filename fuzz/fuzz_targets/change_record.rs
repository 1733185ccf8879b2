//! Full change records as readers cut them: `sluice_core::change::split_record` and
//! `RecordParts::members` (what `tap`, NATS outbound and the archiver read instead of a
//! JSON parse). Asserts: on arbitrary bytes they never panic; on a record the engine
//! writes (`encode_body` + `with_cursor`) from arbitrary strings (collection, a string
//! key, changed paths) and an arbitrary JSON object as the document, `split_record` finds
//! the document and every member equals what a JSON parse of the whole record says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use sluice_core::change::{ChangeRecord, encode_body, split_record, with_cursor};
use sluice_core::key::{Key, KeyPart};
use sluice_core::{Cursor, Version};

fuzz_target!(|data: &[u8]| {
    if let Some(parts) = split_record(data) {
        let _ = parts.members();
    }
    // Fields separated by \x01, changed paths by \x02; the document is the fourth field
    // when it parses as an object.
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\u{1}');
    let collection = fields.next().unwrap_or_default();
    let key = Key::new(vec![KeyPart::Str(fields.next().unwrap_or_default().into())]);
    let changed: Vec<String> = fields
        .next()
        .unwrap_or_default()
        .split('\u{2}')
        .filter(|path| !path.is_empty())
        .map(str::to_owned)
        .collect();
    let doc = fields
        .next()
        .and_then(|doc| serde_json::from_str::<Map<String, Value>>(doc).ok())
        .unwrap_or_default();
    let doc = serde_json::to_vec(&doc).expect("a map serializes");
    let body = encode_body(
        collection,
        &key,
        Some(Version::Int(-1)),
        Some(&doc),
        &changed,
        7,
    );
    let mut record = Vec::new();
    with_cursor(&Cursor::from_offsets(vec![3, 0]), &body, &mut record);
    let parts = split_record(&record).expect("the engine's record splits");
    assert_eq!(parts.doc, doc, "not the record's own document");
    let members = parts
        .members()
        .expect("the engine's record has its members");
    let parsed: ChangeRecord = serde_json::from_slice(&record).expect("a record parses");
    let json = |value: &Value| serde_json::to_vec(value).expect("a value serializes");
    assert_eq!(members.cursor, parsed.cursor.as_bytes());
    assert_eq!(members.collection, json(&Value::from(parsed.collection)));
    assert_eq!(members.key, json(&parsed.key));
    assert_eq!(members.op, b"\"upsert\"");
    assert_eq!(members.version, b"-1");
    assert_eq!(members.changed, json(&Value::from(parsed.changed)));
    assert_eq!(members.ts_ms, 7);
});
