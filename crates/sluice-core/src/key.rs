//! Document keys. A key is one value per key field, each a string or an integer. Identity
//! is textual: the integer 17 and the string "17" name the same document, so a key is
//! always addressable by URL path segments without type annotations.

use crate::hash::fnv64;
use serde_json::Value;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPart {
    Int(i64),
    Str(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    parts: Vec<KeyPart>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum KeyError {
    #[error("key field {pointer} is missing")]
    Missing { pointer: String },
    #[error("key field {pointer} must be a string or an integer, got {found}")]
    NotScalar {
        pointer: String,
        found: &'static str,
    },
    #[error("key field {pointer} must be {expected} (the collection's key_types), got {found}")]
    WrongType {
        pointer: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("key field {pointer} is an empty string")]
    Empty { pointer: String },
    #[error("expected {expected} key segment(s), got {got}")]
    Arity { expected: usize, got: usize },
    #[error("stored key is corrupt")]
    Corrupt,
}

impl KeyPart {
    pub fn from_json(value: &Value, pointer: &str) -> Result<Self, KeyError> {
        let not_scalar = |found| KeyError::NotScalar {
            pointer: pointer.to_owned(),
            found,
        };
        match value {
            Value::String(text) if text.is_empty() => Err(KeyError::Empty {
                pointer: pointer.to_owned(),
            }),
            Value::String(text) => Ok(KeyPart::Str(text.clone())),
            Value::Number(number) => number
                .as_i64()
                .map(KeyPart::Int)
                .ok_or(not_scalar("a non-integer number")),
            Value::Null => Err(not_scalar("null")),
            Value::Bool(_) => Err(not_scalar("a boolean")),
            Value::Array(_) => Err(not_scalar("an array")),
            Value::Object(_) => Err(not_scalar("an object")),
        }
    }

    fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            KeyPart::Int(number) => number.to_string().into(),
            KeyPart::Str(text) => text.as_str().into(),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            KeyPart::Int(number) => Value::from(*number),
            KeyPart::Str(text) => Value::from(text.as_str()),
        }
    }
}

impl Key {
    pub fn new(parts: Vec<KeyPart>) -> Self {
        debug_assert!(!parts.is_empty());
        Self { parts }
    }

    /// Parses URL path segments. A segment that is a canonical integer becomes an
    /// integer part, which by textual identity is the same key as its string form.
    pub fn from_segments(segments: &[&str], expected: usize) -> Result<Self, KeyError> {
        if segments.len() != expected {
            return Err(KeyError::Arity {
                expected,
                got: segments.len(),
            });
        }
        let mut parts = Vec::with_capacity(segments.len());
        for (index, segment) in segments.iter().enumerate() {
            if segment.is_empty() {
                return Err(KeyError::Empty {
                    pointer: format!("segment {}", index + 1),
                });
            }
            parts.push(match segment.parse::<i64>() {
                Ok(number) if number.to_string() == *segment => KeyPart::Int(number),
                _ => KeyPart::Str((*segment).to_owned()),
            });
        }
        Ok(Self { parts })
    }

    pub fn parts(&self) -> &[KeyPart] {
        &self.parts
    }

    /// The key as JSON: the value itself for a one-field key, an array for composite keys.
    pub fn to_json(&self) -> Value {
        match self.parts.as_slice() {
            [single] => single.to_json(),
            parts => Value::Array(parts.iter().map(KeyPart::to_json).collect()),
        }
    }

    /// Order-preserving, self-delimiting bytes: each part's text with 0x00 escaped as
    /// 0x00 0xFF, and parts separated by 0x00 0x01.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        for (index, part) in self.parts.iter().enumerate() {
            if index > 0 {
                out.extend_from_slice(&[0x00, 0x01]);
            }
            for byte in part.text().bytes() {
                out.push(byte);
                if byte == 0x00 {
                    out.push(0xFF);
                }
            }
        }
        out
    }

    /// Inverse of [`Key::encode`]; parts come back as strings or canonical integers.
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        let mut parts = Vec::new();
        let mut current = Vec::new();
        let mut index = 0;
        while index < bytes.len() {
            let byte = bytes[index];
            if byte == 0x00 {
                match bytes.get(index + 1) {
                    Some(0xFF) => current.push(0x00),
                    Some(0x01) => parts.push(std::mem::take(&mut current)),
                    _ => return Err(KeyError::Corrupt),
                }
                index += 2;
            } else {
                current.push(byte);
                index += 1;
            }
        }
        parts.push(current);
        let texts: Result<Vec<String>, _> = parts.into_iter().map(String::from_utf8).collect();
        let texts = texts.map_err(|_| KeyError::Corrupt)?;
        let segments: Vec<&str> = texts.iter().map(String::as_str).collect();
        Self::from_segments(&segments, segments.len()).map_err(|_| KeyError::Corrupt)
    }

    /// The partition that owns this key. Stable across releases: it is persisted.
    pub fn partition(&self, partitions: u16) -> u16 {
        debug_assert!(partitions > 0);
        (fnv64(&self.encode()) % u64::from(partitions.max(1))) as u16
    }
}

impl fmt::Display for Key {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, part) in self.parts.iter().enumerate() {
            if index > 0 {
                formatter.write_str("/")?;
            }
            formatter.write_str(&part.text())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn textual_identity() {
        let int = Key::new(vec![KeyPart::Int(17)]);
        let text = Key::new(vec![KeyPart::Str("17".into())]);
        assert_eq!(int.encode(), text.encode());
        assert_eq!(int.partition(8), text.partition(8));
        assert_eq!(Key::from_segments(&["17"], 1).unwrap(), int);
        assert_eq!(
            Key::from_segments(&["017"], 1).unwrap().to_json(),
            json!("017")
        );
    }

    #[test]
    fn encode_round_trips_and_separates_parts() {
        let check = |parts: Vec<KeyPart>| {
            let key = Key::new(parts);
            assert_eq!(Key::decode(&key.encode()).unwrap().encode(), key.encode());
        };
        check(vec![KeyPart::Str("a\0b".into()), KeyPart::Int(-4)]);
        check(vec![
            KeyPart::Str("chicago".into()),
            KeyPart::Str("x/y".into()),
        ]);
        let ab_c = Key::new(vec![KeyPart::Str("ab".into()), KeyPart::Str("c".into())]);
        let a_bc = Key::new(vec![KeyPart::Str("a".into()), KeyPart::Str("bc".into())]);
        assert_ne!(ab_c.encode(), a_bc.encode());
    }

    #[test]
    fn rejects_non_scalars() {
        assert!(KeyPart::from_json(&json!(1.5), "/id").is_err());
        assert!(KeyPart::from_json(&json!({"a": 1}), "/id").is_err());
        assert!(KeyPart::from_json(&json!(""), "/id").is_err());
        assert!(Key::from_segments(&["a"], 2).is_err());
    }
}
