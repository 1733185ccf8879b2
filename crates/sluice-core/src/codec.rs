//! The stored form of a key's state.
//!
//! ```text
//! record   := format u8 (=2) | mode u8 (0 document, 1 field) | version | body
//! document := doc_len varint (0: no document, else len + 1) | doc JSON
//! field    := node          (the visible document is derived from the clock tree)
//! node     := flags u8 | [reset stamp] | [value: len varint | JSON] | [obj stamp]
//!             | children varint | (name_len varint | name | node)*
//! version  := tag u8 (0 none, 1 int, 2 time) | zigzag varint
//! stamp    := version | tie u64 LE
//! ```
//!
//! Field-mode records do not repeat the visible document: it is a function of the tree,
//! and keeping records small is what keeps the writers' caches and the journal small.

use crate::merge::{DocState, DocumentState, FieldState, Node, Stamp};
use crate::version::Version;
use serde_json::{Map, Value};
use std::borrow::Cow;

const FORMAT: u8 = 2;
const MODE_DOCUMENT: u8 = 0;
const MODE_FIELD: u8 = 1;
const FLAG_RESET: u8 = 1;
const FLAG_VALUE: u8 = 2;
const FLAG_OBJ: u8 = 4;
/// Deeper than any event may nest, so a deeper tree can only be corruption.
const TREE_DEPTH_MAX: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("corrupt stored record: {0}")]
pub struct CodecError(&'static str);

/// What readers need from a stored record: its version and its document's JSON.
#[derive(Debug, PartialEq)]
pub struct RecordView<'a> {
    pub version: Option<Version>,
    pub doc: Option<Cow<'a, [u8]>>,
}

/// Encodes a state. `doc_json`, the visible document already serialized, is used in
/// document mode (the writer has those bytes from the change record anyway).
pub fn encode(state: &DocState, doc_json: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + doc_json.map_or(0, <[u8]>::len));
    out.push(FORMAT);
    match state {
        DocState::Document(document) => {
            out.push(MODE_DOCUMENT);
            put_version(&mut out, document.version);
            let serialized;
            let doc_json = match doc_json {
                Some(bytes) => Some(bytes),
                None => {
                    serialized = state.doc_json();
                    serialized.as_deref()
                }
            };
            match doc_json {
                Some(bytes) => {
                    put_varint(&mut out, bytes.len() as u64 + 1);
                    out.extend_from_slice(bytes);
                }
                None => put_varint(&mut out, 0),
            }
        }
        DocState::Field(field) => {
            out.push(MODE_FIELD);
            put_version(&mut out, state.version());
            put_node(&mut out, &field.root);
        }
    }
    out
}

pub fn decode_view(bytes: &[u8]) -> Result<RecordView<'_>, CodecError> {
    let mut reader = Reader { bytes, position: 0 };
    let (mode, version) = read_header(&mut reader)?;
    match mode {
        MODE_DOCUMENT => Ok(RecordView {
            version,
            doc: read_doc(&mut reader)?.map(Cow::Borrowed),
        }),
        _ => {
            let state = decode_state(bytes)?;
            let doc = state.doc_json().map(Cow::Owned);
            Ok(RecordView { version, doc })
        }
    }
}

pub fn decode_state(bytes: &[u8]) -> Result<DocState, CodecError> {
    let mut reader = Reader { bytes, position: 0 };
    let (mode, version) = read_header(&mut reader)?;
    let state = match mode {
        MODE_DOCUMENT => {
            let doc = read_doc(&mut reader)?
                .map(serde_json::from_slice::<Map<String, Value>>)
                .transpose()
                .map_err(|_| CodecError("document is not a JSON object"))?;
            DocState::Document(DocumentState { version, doc })
        }
        MODE_FIELD => {
            let root = read_node(&mut reader, 0)?;
            DocState::Field(FieldState::from_root(root))
        }
        _ => return Err(CodecError("unknown ordering mode")),
    };
    if reader.position != bytes.len() {
        return Err(CodecError("trailing bytes"));
    }
    Ok(state)
}

fn read_header(reader: &mut Reader<'_>) -> Result<(u8, Option<Version>), CodecError> {
    if reader.u8()? != FORMAT {
        return Err(CodecError("unknown format"));
    }
    let mode = reader.u8()?;
    Ok((mode, reader.version()?))
}

fn read_doc<'a>(reader: &mut Reader<'a>) -> Result<Option<&'a [u8]>, CodecError> {
    match reader.varint()? {
        0 => Ok(None),
        length => Ok(Some(reader.take(
            usize::try_from(length - 1).map_err(|_| CodecError("length"))?,
        )?)),
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn put_version(out: &mut Vec<u8>, version: Option<Version>) {
    match version {
        None => out.push(0),
        Some(Version::Int(number)) => {
            out.push(1);
            put_varint(out, zigzag(number));
        }
        Some(Version::Time(nanos)) => {
            out.push(2);
            put_varint(out, zigzag(nanos));
        }
    }
}

fn put_stamp(out: &mut Vec<u8>, stamp: Stamp) {
    put_version(out, Some(stamp.version));
    out.extend_from_slice(&stamp.tie.to_le_bytes());
}

fn put_node(out: &mut Vec<u8>, node: &Node) {
    let flags = if node.reset.is_some() { FLAG_RESET } else { 0 }
        | if node.value.is_some() { FLAG_VALUE } else { 0 }
        | if node.obj.is_some() { FLAG_OBJ } else { 0 };
    out.push(flags);
    if let Some(reset) = node.reset {
        put_stamp(out, reset);
    }
    if let Some(value) = &node.value {
        put_varint(out, value.len() as u64);
        out.extend_from_slice(value.as_bytes());
    }
    if let Some(obj) = node.obj {
        put_stamp(out, obj);
    }
    put_varint(out, node.children.len() as u64);
    for (name, child) in &node.children {
        put_varint(out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
        put_node(out, child);
    }
}

fn read_node(reader: &mut Reader<'_>, depth: usize) -> Result<Node, CodecError> {
    if depth > TREE_DEPTH_MAX {
        return Err(CodecError("clock tree too deep"));
    }
    let flags = reader.u8()?;
    let mut node = Node::default();
    if flags & FLAG_RESET != 0 {
        node.reset = Some(reader.stamp()?);
    }
    if flags & FLAG_VALUE != 0 {
        let length = reader.length()?;
        let text = std::str::from_utf8(reader.take(length)?)
            .map_err(|_| CodecError("bad JSON value in clock"))?;
        node.value = Some(text.into());
    }
    if flags & FLAG_OBJ != 0 {
        node.obj = Some(reader.stamp()?);
    }
    let children = reader.varint()?;
    for _ in 0..children {
        let length = reader.length()?;
        let name =
            std::str::from_utf8(reader.take(length)?).map_err(|_| CodecError("bad path name"))?;
        let child = read_node(reader, depth + 1)?;
        node.children.insert(name.to_owned(), child);
    }
    Ok(node)
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .position
            .checked_add(length)
            .ok_or(CodecError("length overflow"))?;
        let slice = self
            .bytes
            .get(self.position..end)
            .ok_or(CodecError("truncated"))?;
        self.position = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError("varint too long"))
    }

    fn length(&mut self) -> Result<usize, CodecError> {
        usize::try_from(self.varint()?).map_err(|_| CodecError("length"))
    }

    fn version(&mut self) -> Result<Option<Version>, CodecError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(Version::Int(unzigzag(self.varint()?)))),
            2 => Ok(Some(Version::Time(unzigzag(self.varint()?)))),
            _ => Err(CodecError("unknown version tag")),
        }
    }

    fn stamp(&mut self) -> Result<Stamp, CodecError> {
        let version = self.version()?.ok_or(CodecError("stamp without version"))?;
        let mut tie = [0; 8];
        tie.copy_from_slice(self.take(8)?);
        Ok(Stamp {
            version,
            tie: u64::from_le_bytes(tie),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ordering;
    use serde_json::json;

    fn round_trip(state: &DocState) {
        let doc = state.doc().map(|doc| serde_json::to_vec(&doc).unwrap());
        assert_eq!(state.doc_json(), doc, "direct JSON equals serde_json's");
        let bytes = encode(state, doc.as_deref());
        assert_eq!(&decode_state(&bytes).unwrap(), state);
        let view = decode_view(&bytes).unwrap();
        assert_eq!(view.version, state.version());
        assert_eq!(view.doc.as_deref(), doc.as_deref());
        for cut in 0..bytes.len() {
            assert!(
                decode_state(&bytes[..cut]).is_err(),
                "truncated at {cut} decoded"
            );
        }
    }

    #[test]
    fn states_round_trip_and_truncation_is_detected() {
        for ordering in [Ordering::Field, Ordering::Document] {
            let mut state = DocState::new(ordering);
            round_trip(&state);
            let patch = json!({"id": 1, "a": {"b": [1, 2], "c": null}, "t": "x"});
            state
                .apply(Some(Version::Time(-5)), patch.as_object().unwrap())
                .unwrap();
            round_trip(&state);
            state.delete(Some(Version::Time(i64::MAX))).unwrap();
            round_trip(&state);
        }
    }

    #[test]
    fn varints_round_trip() {
        for value in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, zigzag(value));
            let mut reader = Reader {
                bytes: &out,
                position: 0,
            };
            assert_eq!(unzigzag(reader.varint().unwrap()), value);
            assert_eq!(reader.position, out.len());
        }
    }
}
