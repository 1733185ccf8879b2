//! Change records: what every read model consumes.

use crate::key::Key;
use crate::version::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    Upsert,
    Delete,
}

/// A change record as consumers see it (the change log API's JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub cursor: String,
    pub collection: String,
    pub key: Value,
    pub op: ChangeOp,
    pub version: Option<Value>,
    pub doc: Option<Value>,
    pub changed: Vec<String>,
    /// Commit time, milliseconds since the Unix epoch.
    pub ts_ms: u64,
}

/// Serializes a change record's body, without its cursor (cursors are positions, known
/// only when the record is read back: see [`with_cursor`]).
pub fn encode_body(
    collection: &str,
    key: &Key,
    version: Option<Version>,
    doc_json: Option<&[u8]>,
    changed: &[String],
    ts_ms: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + doc_json.map_or(0, <[u8]>::len));
    encode_body_into(&mut out, collection, key, version, doc_json, changed, ts_ms);
    out
}

/// [`encode_body`], appending to `out` (the writer builds a whole change-log chunk in
/// one buffer).
pub fn encode_body_into(
    out: &mut Vec<u8>,
    collection: &str,
    key: &Key,
    version: Option<Version>,
    doc_json: Option<&[u8]>,
    changed: &[String],
    ts_ms: u64,
) {
    out.extend_from_slice(b"{\"collection\":");
    write_json(out, &Value::from(collection));
    out.extend_from_slice(b",\"key\":");
    write_json(out, &key.to_json());
    out.extend_from_slice(b",\"op\":");
    out.extend_from_slice(if doc_json.is_some() {
        b"\"upsert\""
    } else {
        b"\"delete\""
    });
    out.extend_from_slice(b",\"version\":");
    write_json(out, &version.map_or(Value::Null, Version::to_json));
    out.extend_from_slice(b",\"doc\":");
    out.extend_from_slice(doc_json.unwrap_or(b"null"));
    out.extend_from_slice(b",\"changed\":");
    write_json(out, &Value::from(changed.to_vec()));
    out.extend_from_slice(b",\"ts_ms\":");
    out.extend_from_slice(ts_ms.to_string().as_bytes());
    out.push(b'}');
}

/// What every body of `collection` starts with: readers filter by collection with a
/// prefix test instead of parsing.
pub fn collection_prefix(collection: &str) -> Vec<u8> {
    let mut out = b"{\"collection\":".to_vec();
    write_json(&mut out, &Value::from(collection));
    out.push(b',');
    out
}

/// The commit time at the end of a body or a full record (`,"ts_ms":<digits>}`); 0 for
/// anything else.
pub fn commit_ts_ms(record: &[u8]) -> u64 {
    let Some(record) = record.strip_suffix(b"}") else {
        return 0;
    };
    let digits = record
        .iter()
        .rev()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    let (head, number) = record.split_at(record.len() - digits);
    if !head.ends_with(b"\"ts_ms\":") {
        return 0;
    }
    std::str::from_utf8(number)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

/// The full record JSON: the body with `"cursor"` spliced in front.
pub fn with_cursor(cursor: &str, body: &[u8], out: &mut Vec<u8>) {
    debug_assert_eq!(body.first(), Some(&b'{'));
    out.extend_from_slice(b"{\"cursor\":");
    write_json(out, &Value::from(cursor));
    out.push(b',');
    out.extend_from_slice(body.get(1..).unwrap_or_default());
}

fn write_json(out: &mut Vec<u8>, value: &Value) {
    // Serializing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyPart;
    use serde_json::json;

    #[test]
    fn body_with_cursor_parses_as_a_record() {
        let key = Key::new(vec![KeyPart::Int(17)]);
        let body = encode_body(
            "doctor",
            &key,
            Some(Version::Int(3)),
            Some(br#"{"doctor_id":17}"#),
            &["/a".into()],
            9,
        );
        let mut full = Vec::new();
        with_cursor("0.1", &body, &mut full);
        let record: ChangeRecord = serde_json::from_slice(&full).unwrap();
        assert_eq!(record.cursor, "0.1");
        assert_eq!(record.key, json!(17));
        assert_eq!(record.op, ChangeOp::Upsert);
        assert_eq!(record.doc, Some(json!({"doctor_id": 17})));
        let body = encode_body("doctor", &key, None, None, &["".into()], 9);
        let record: ChangeRecord =
            serde_json::from_slice(&[b"{\"cursor\":\"x\",", &body[1..]].concat()).unwrap();
        assert_eq!(record.op, ChangeOp::Delete);
        assert_eq!(record.doc, None);
        assert!(body.starts_with(&collection_prefix("doctor")));
        assert!(!body.starts_with(&collection_prefix("doc")));
        assert_eq!(commit_ts_ms(&body), 9);
        assert_eq!(commit_ts_ms(b"{\"x\":42}"), 0);
    }
}
