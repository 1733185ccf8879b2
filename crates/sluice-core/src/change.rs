//! Change records: what every read model consumes.

use crate::cursor::Cursor;
use crate::key::Key;
use crate::version::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::LazyLock;

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
    cut_ts_ms(record).map_or(0, |(_, ts_ms)| ts_ms)
}

/// Cuts `…"ts_ms":<digits>}` at its end: what comes before `"ts_ms":`, and the number.
fn cut_ts_ms(text: &[u8]) -> Option<(&[u8], u64)> {
    let text = text.strip_suffix(b"}")?;
    let digits = text
        .iter()
        .rev()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    let (before, number) = text.split_at(text.len() - digits);
    let before = before.strip_suffix(b"\"ts_ms\":")?;
    Some((before, std::str::from_utf8(number).ok()?.parse().ok()?))
}

/// The full record JSON: the body with `"cursor"` spliced in front (a cursor's text is
/// digits and dots: nothing to escape).
pub fn with_cursor(cursor: &Cursor, body: &[u8], out: &mut Vec<u8>) {
    debug_assert_eq!(body.first(), Some(&b'{'));
    out.extend_from_slice(b"{\"cursor\":\"");
    cursor.write_text(out);
    out.extend_from_slice(b"\",");
    out.extend_from_slice(body.get(1..).unwrap_or_default());
}

/// A full record cut around its document, found without parsing it (the document is
/// most of a record's bytes, and readers that print or index the other members need not
/// scan it): `head` is `{"cursor":…,"version":…` and `tail` is `"changed":[…],"ts_ms":…}`.
pub struct RecordParts<'a> {
    pub head: &'a [u8],
    /// The document's JSON, or `null` for a delete.
    pub doc: &'a [u8],
    pub tail: &'a [u8],
}

impl<'a> RecordParts<'a> {
    /// The members around the document as raw JSON, found by position: the engine writes
    /// them in one order (see [`encode_body`]), each is a scalar or an array of scalars,
    /// and a quote inside a JSON string is escaped, so `,"key":`, `,"op":` and
    /// `,"version":` occur only as the members' own separators. `None` for another shape.
    pub fn members(&self) -> Option<RecordMembers<'a>> {
        static KEY: LazyLock<memchr::memmem::Finder<'static>> =
            LazyLock::new(|| memchr::memmem::Finder::new(b",\"key\":"));
        static OP: LazyLock<memchr::memmem::Finder<'static>> =
            LazyLock::new(|| memchr::memmem::Finder::new(b",\"op\":"));
        static VERSION: LazyLock<memchr::memmem::Finder<'static>> =
            LazyLock::new(|| memchr::memmem::Finder::new(b",\"version\":"));
        let rest = self.head.strip_prefix(b"{\"cursor\":\"")?;
        let cursor_end = memchr::memchr(b'"', rest)?;
        let cursor = rest.get(..cursor_end)?;
        let rest = rest
            .get(cursor_end + 1..)?
            .strip_prefix(b",\"collection\":")?;
        let key_at = KEY.find(rest)?;
        let collection = rest.get(..key_at)?;
        let rest = rest.get(key_at + b",\"key\":".len()..)?;
        let op_at = OP.find(rest)?;
        let key = rest.get(..op_at)?;
        let rest = rest.get(op_at + b",\"op\":".len()..)?;
        let version_at = VERSION.find(rest)?;
        let op = rest.get(..version_at)?;
        let version = rest.get(version_at + b",\"version\":".len()..)?;
        let (changed, ts_ms) = cut_ts_ms(self.tail.strip_prefix(b"\"changed\":")?)?;
        let changed = changed.strip_suffix(b",")?;
        let nonempty = [cursor, collection, key, op, version, changed];
        if nonempty.iter().any(|member| member.is_empty()) {
            return None;
        }
        Some(RecordMembers {
            cursor,
            collection,
            key,
            op,
            version,
            changed,
            ts_ms,
        })
    }
}

/// The members of a full record around its document, as raw JSON (see
/// [`RecordParts::members`]): what readers that print, route or index records need,
/// without a parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMembers<'a> {
    /// The cursor's text: digits and dots.
    pub cursor: &'a [u8],
    /// A JSON string, quotes included.
    pub collection: &'a [u8],
    /// A JSON scalar, or an array of scalars (a composite key).
    pub key: &'a [u8],
    /// `"upsert"` or `"delete"`, quotes included.
    pub op: &'a [u8],
    /// A JSON number, string or `null`.
    pub version: &'a [u8],
    /// A JSON array of strings, brackets included.
    pub changed: &'a [u8],
    /// Commit time, milliseconds since the Unix epoch.
    pub ts_ms: u64,
}

/// The text of a JSON string: borrowed when it has no escapes (see [`plain_json_str`]),
/// else unescaped by a parse.
pub fn json_str_text(raw: &[u8]) -> Result<std::borrow::Cow<'_, str>, serde_json::Error> {
    match plain_json_str(raw).map(std::str::from_utf8) {
        Some(Ok(text)) => Ok(std::borrow::Cow::Borrowed(text)),
        _ => serde_json::from_slice(raw),
    }
}

/// The contents of a JSON string that has no escapes (its bytes between the quotes are
/// the text itself); `None` when it has one or is not a string: parse it then.
pub fn plain_json_str(raw: &[u8]) -> Option<&[u8]> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    memchr::memchr2(b'\\', b'"', inner)
        .is_none()
        .then_some(inner)
}

/// Splits a full record (see [`with_cursor`] and [`encode_body`]) at its document.
/// Outside JSON strings is the only place `,"doc":` and `,"changed":[` can occur (a quote
/// in a string is escaped); the members before the document are scalars or arrays of
/// scalars, so the first `,"doc":` is the record's own, and after the document come
/// only `changed` (strings) and `ts_ms`, so the last `,"changed":[` is too, whatever
/// members the document itself has. `None` for anything of another shape.
pub fn split_record(record: &[u8]) -> Option<RecordParts<'_>> {
    const DOC: &[u8] = b",\"doc\":";
    const CHANGED: &[u8] = b",\"changed\":[";
    // Built once: a searcher's setup costs as much as a search of a short record.
    static DOC_FINDER: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(DOC));
    static CHANGED_FINDER: LazyLock<memchr::memmem::FinderRev<'static>> =
        LazyLock::new(|| memchr::memmem::FinderRev::new(CHANGED));
    if !record.starts_with(b"{\"cursor\":") {
        return None;
    }
    let doc_at = DOC_FINDER.find(record)?;
    let changed_at = CHANGED_FINDER.rfind(record)?;
    let doc = record.get(doc_at + DOC.len()..changed_at)?;
    if doc.is_empty() {
        return None;
    }
    Some(RecordParts {
        head: record.get(..doc_at)?,
        doc,
        tail: record.get(changed_at + 1..)?,
    })
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
        with_cursor(&Cursor::from_offsets(vec![0, 1]), &body, &mut full);
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

    #[test]
    fn a_record_splits_at_its_own_document() {
        let key = Key::new(vec![KeyPart::Str("a,\"doc\":1".into())]);
        let doc = br#"{"doc":{"x":1},"y":[1],"z":{"a":1,"doc":2,"changed":["/q"]},"w":"\",\"changed\":["}"#;
        let body = encode_body(
            "doctor",
            &key,
            Some(Version::Int(3)),
            Some(doc),
            &["/a".into()],
            9,
        );
        let mut full = Vec::new();
        with_cursor(&Cursor::from_offsets(vec![4, 2]), &body, &mut full);
        let parts = split_record(&full).unwrap();
        assert_eq!(parts.doc, doc);
        let head: Value = serde_json::from_slice(&[parts.head, b"}"].concat()).unwrap();
        assert_eq!(
            head,
            json!({"cursor": "4.2", "collection": "doctor", "key": "a,\"doc\":1", "op": "upsert", "version": 3})
        );
        let tail: Value = serde_json::from_slice(&[b"{", parts.tail].concat()).unwrap();
        assert_eq!(tail, json!({"changed": ["/a"], "ts_ms": 9}));
        let deleted = encode_body("doctor", &key, None, None, &[], 9);
        full.clear();
        with_cursor(&Cursor::from_offsets(vec![0, 0]), &deleted, &mut full);
        assert_eq!(split_record(&full).unwrap().doc, b"null");
        assert!(split_record(b"{\"x\":1}").is_none());
        assert!(split_record(&body).is_none(), "a body without its cursor");
    }

    #[test]
    fn a_record_s_members_are_found_by_position() {
        let key = Key::new(vec![KeyPart::Str("a,\"op\":\\".into()), KeyPart::Int(-4)]);
        let doc = br#"{"key":1,"op":"x","version":2,"changed":["/q"],"ts_ms":3}"#;
        let changed = ["/a,\"version\":".to_owned(), "/b".to_owned()];
        let body = encode_body(
            "doctor",
            &key,
            Some(Version::Int(-3)),
            Some(doc),
            &changed,
            9,
        );
        let mut full = Vec::new();
        with_cursor(&Cursor::from_offsets(vec![4, 2]), &body, &mut full);
        let parts = split_record(&full).unwrap();
        let members = parts.members().unwrap();
        let record: ChangeRecord = serde_json::from_slice(&full).unwrap();
        let raw = |value: &Value| serde_json::to_vec(value).unwrap();
        assert_eq!(members.cursor, record.cursor.as_bytes());
        assert_eq!(members.collection, raw(&json!(record.collection)));
        assert_eq!(members.key, raw(&record.key));
        assert_eq!(members.op, b"\"upsert\"");
        assert_eq!(members.version, raw(&record.version.clone().unwrap()));
        assert_eq!(members.changed, raw(&json!(record.changed)));
        assert_eq!(members.ts_ms, 9);
        assert_eq!(plain_json_str(members.collection), Some(&b"doctor"[..]));
        assert_eq!(plain_json_str(b"\"a\\\"b\""), None, "an escape");
        assert_eq!(plain_json_str(b"17"), None, "not a string");

        let deleted = encode_body("doctor", &key, None, None, &[], 10);
        full.clear();
        with_cursor(&Cursor::from_offsets(vec![0, 0]), &deleted, &mut full);
        let members = split_record(&full).unwrap().members().unwrap();
        assert_eq!(
            (members.op, members.version),
            (&b"\"delete\""[..], &b"null"[..])
        );
        assert_eq!((members.changed, members.ts_ms), (&b"[]"[..], 10));

        // Another shape: no members, so readers fall back to a parse.
        let reordered = br#"{"cursor":"1","key":1,"collection":"d","op":"upsert","version":null,"doc":null,"changed":[],"ts_ms":1}"#;
        assert_eq!(split_record(reordered).unwrap().members(), None);
    }
}
