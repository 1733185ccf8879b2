//! The stored form of a key's state: a small header, the visible document as JSON (so
//! reads never decode the clock), then the field-mode clock tree.
//!
//! ```text
//! format u8 (=1) | mode u8 (0 document, 1 field) | version | doc_len u32 (u32::MAX: none) | doc
//! field mode: node := flags u8 | [reset stamp] | [value: len u32 | JSON] | [obj stamp]
//!                     | children u32 | (name_len u32 | name | node)*
//! version := tag u8 (0 none, 1 int: i64, 2 time: i128), little endian
//! stamp := version | tie u64
//! ```

use crate::merge::{DocState, DocumentState, FieldState, Node, Stamp};
use crate::version::Version;
use serde_json::{Map, Value};

const FORMAT: u8 = 1;
const MODE_DOCUMENT: u8 = 0;
const MODE_FIELD: u8 = 1;
const NO_DOC: u32 = u32::MAX;
const FLAG_RESET: u8 = 1;
const FLAG_VALUE: u8 = 2;
const FLAG_OBJ: u8 = 4;
/// Deeper than any event may nest, so a deeper tree can only be corruption.
const TREE_DEPTH_MAX: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("corrupt stored record: {0}")]
pub struct CodecError(&'static str);

/// What readers need from a stored record, without decoding the clock.
#[derive(Debug, PartialEq)]
pub struct RecordView<'a> {
    pub version: Option<Version>,
    pub doc: Option<&'a [u8]>,
}

/// Encodes a state; `doc_json` is the visible document already serialized (the writer
/// needs those bytes for the change record anyway).
pub fn encode(state: &DocState, doc_json: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + doc_json.map_or(0, <[u8]>::len) * 2);
    out.push(FORMAT);
    out.push(match state {
        DocState::Document(_) => MODE_DOCUMENT,
        DocState::Field(_) => MODE_FIELD,
    });
    put_version(&mut out, state.version());
    match doc_json {
        Some(bytes) => {
            put_len(&mut out, bytes.len());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&NO_DOC.to_le_bytes()),
    }
    if let DocState::Field(field) = state {
        put_node(&mut out, &field.root);
    }
    out
}

pub fn decode_view(bytes: &[u8]) -> Result<RecordView<'_>, CodecError> {
    let mut reader = Reader { bytes, position: 0 };
    let (_, version, doc) = read_header(&mut reader)?;
    Ok(RecordView { version, doc })
}

pub fn decode_state(bytes: &[u8]) -> Result<DocState, CodecError> {
    let mut reader = Reader { bytes, position: 0 };
    let (mode, version, doc) = read_header(&mut reader)?;
    match mode {
        MODE_DOCUMENT => {
            let doc = doc
                .map(serde_json::from_slice::<Map<String, Value>>)
                .transpose()
                .map_err(|_| CodecError("document is not a JSON object"))?;
            Ok(DocState::Document(DocumentState { version, doc }))
        }
        MODE_FIELD => {
            let root = read_node(&mut reader, 0)?;
            if reader.position != bytes.len() {
                return Err(CodecError("trailing bytes"));
            }
            Ok(DocState::Field(FieldState::from_root(root)))
        }
        _ => Err(CodecError("unknown ordering mode")),
    }
}

/// The fixed part of a record: mode, version, document bytes.
type Header<'a> = (u8, Option<Version>, Option<&'a [u8]>);

fn read_header<'a>(reader: &mut Reader<'a>) -> Result<Header<'a>, CodecError> {
    if reader.u8()? != FORMAT {
        return Err(CodecError("unknown format"));
    }
    let mode = reader.u8()?;
    let version = reader.version()?;
    let length = reader.u32()?;
    let doc = if length == NO_DOC {
        None
    } else {
        Some(reader.take(length as usize)?)
    };
    Ok((mode, version, doc))
}

fn put_len(out: &mut Vec<u8>, length: usize) {
    debug_assert!(length < NO_DOC as usize);
    out.extend_from_slice(&(length as u32).to_le_bytes());
}

fn put_version(out: &mut Vec<u8>, version: Option<Version>) {
    match version {
        None => out.push(0),
        Some(Version::Int(number)) => {
            out.push(1);
            out.extend_from_slice(&number.to_le_bytes());
        }
        Some(Version::Time(nanos)) => {
            out.push(2);
            out.extend_from_slice(&nanos.to_le_bytes());
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
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        // Writing a Value into a Vec cannot fail: no I/O, and map keys are strings.
        let _ = serde_json::to_writer(&mut *out, value);
        let length = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    }
    if let Some(obj) = node.obj {
        put_stamp(out, obj);
    }
    put_len(out, node.children.len());
    for (name, child) in &node.children {
        put_len(out, name.len());
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
        let length = reader.u32()? as usize;
        let raw = reader.take(length)?;
        node.value =
            Some(serde_json::from_slice(raw).map_err(|_| CodecError("bad JSON value in clock"))?);
    }
    if flags & FLAG_OBJ != 0 {
        node.obj = Some(reader.stamp()?);
    }
    let children = reader.u32()?;
    for _ in 0..children {
        let length = reader.u32()? as usize;
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

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn version(&mut self) -> Result<Option<Version>, CodecError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(Version::Int(i64::from_le_bytes(self.array()?)))),
            2 => Ok(Some(Version::Time(i128::from_le_bytes(self.array()?)))),
            _ => Err(CodecError("unknown version tag")),
        }
    }

    fn stamp(&mut self) -> Result<Stamp, CodecError> {
        let version = self.version()?.ok_or(CodecError("stamp without version"))?;
        Ok(Stamp {
            version,
            tie: u64::from_le_bytes(self.array()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ordering;
    use serde_json::json;

    fn round_trip(state: &DocState) {
        let doc = state.doc().map(|doc| serde_json::to_vec(doc).unwrap());
        let bytes = encode(state, doc.as_deref());
        assert_eq!(&decode_state(&bytes).unwrap(), state);
        let view = decode_view(&bytes).unwrap();
        assert_eq!(view.version, state.version());
        assert_eq!(view.doc, doc.as_deref());
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
                .apply(Some(Version::Time(5)), patch.as_object().unwrap())
                .unwrap();
            round_trip(&state);
            state.delete(Some(Version::Time(9))).unwrap();
            round_trip(&state);
        }
    }
}
