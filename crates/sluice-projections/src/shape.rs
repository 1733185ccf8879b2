//! What a projection call may return: `null` (no entry), one `{key, value}`, or an array
//! of them; keys are strings or numbers, unique within the call, at most
//! [`ENTRY_KEY_BYTES_MAX`] bytes; values are any JSON but `null`.

use crate::{CallError, Entry};
use serde_json::Value;
use serde_json::value::RawValue;
use sluice_core::event::kind_name as kind;
use std::collections::BTreeMap;

/// An entry key is part of a store key and of a URL path.
pub const ENTRY_KEY_BYTES_MAX: usize = 512;

/// The entries in `json` (a call's result as JSON text), at most `entries_max`. Values
/// keep their text, so their fields keep the order the projector wrote them in.
pub fn entries_from_json(json: &str, entries_max: usize) -> Result<Vec<Entry>, CallError> {
    let shape_error = |error: serde_json::Error| CallError::Shape(error.to_string());
    let result: Box<RawValue> = serde_json::from_str(json).map_err(shape_error)?;
    let (items, in_array) = match result.get().as_bytes().first() {
        Some(b'n') => return Ok(Vec::new()),
        Some(b'[') => (
            serde_json::from_str::<Vec<Box<RawValue>>>(result.get()).map_err(shape_error)?,
            true,
        ),
        Some(b'{') => (vec![result], false),
        _ => {
            return Err(CallError::Shape(format!(
                "expected null, {{key, value}} or an array of them, got {}",
                kind_of_text(result.get())
            )));
        }
    };
    if items.len() > entries_max {
        return Err(CallError::Shape(format!(
            "{} entries, more than the {entries_max} one document may produce",
            items.len()
        )));
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let entry = entry(item).map_err(|message| {
            CallError::Shape(if in_array {
                format!("entry {index}: {message}")
            } else {
                message
            })
        })?;
        if entries.iter().any(|other| other.key == entry.key) {
            return Err(CallError::Shape(format!(
                "entry {index}: key {:?} returned twice",
                entry.key
            )));
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn entry(item: &RawValue) -> Result<Entry, String> {
    if !item.get().starts_with('{') {
        return Err(format!(
            "expected {{key, value}}, got {}",
            kind_of_text(item.get())
        ));
    }
    let mut fields: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(item.get()).map_err(|error| error.to_string())?;
    let key = match fields.remove("key") {
        None => return Err("no key".to_owned()),
        Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::String(key)) => key,
            Ok(Value::Number(number)) => number.to_string(),
            Ok(other) => {
                return Err(format!(
                    "key must be a string or a number, got {}",
                    kind(&other)
                ));
            }
            Err(error) => return Err(error.to_string()),
        },
    };
    if key.is_empty() || key.len() > ENTRY_KEY_BYTES_MAX {
        return Err(format!(
            "key must be 1 to {ENTRY_KEY_BYTES_MAX} bytes, got {}",
            key.len()
        ));
    }
    let value = match fields.remove("value") {
        None => {
            return Err(format!(
                "entry {key:?} has no value (or one JSON cannot hold)"
            ));
        }
        Some(raw) if raw.get() == "null" => {
            return Err(format!(
                "entry {key:?} has a null value: return null for no entry"
            ));
        }
        Some(raw) => compact(raw.get()),
    };
    if let Some(extra) = fields.keys().next() {
        return Err(format!(
            "entry {key:?} has a field {extra:?} besides key and value"
        ));
    }
    Ok(Entry { key, value })
}

/// `text` without whitespace between tokens (JSON.stringify's output already is).
fn compact(text: &str) -> String {
    if !text.bytes().any(|byte| byte.is_ascii_whitespace()) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

fn kind_of_text(text: &str) -> &'static str {
    serde_json::from_str::<Value>(text).map_or("something else", |value| kind(&value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_error(json: &str) -> String {
        match entries_from_json(json, 3) {
            Err(CallError::Shape(message)) => message,
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn results_become_entries() {
        assert_eq!(entries_from_json("null", 3).unwrap(), vec![]);
        assert_eq!(
            entries_from_json(r#"{"key": 17, "value": {"a": [1, "x"]}}"#, 3).unwrap(),
            vec![Entry {
                key: "17".into(),
                value: r#"{"a":[1,"x"]}"#.into()
            }]
        );
        let two = entries_from_json(
            r#"[{"key": "a", "value": 1}, {"key": "b", "value": false}]"#,
            3,
        )
        .unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].value, "false");
        // Whitespace goes, except inside strings; fields keep their order.
        let spaced =
            entries_from_json(r#"{"key": "k", "value": {"z": "a \" b", "a": 1}}"#, 3).unwrap();
        assert_eq!(spaced[0].value, r#"{"z":"a \" b","a":1}"#);
    }

    #[test]
    fn wrong_shapes_say_what_is_wrong() {
        assert!(shape_error("3").contains("got a number"));
        assert!(shape_error(r#"{"value": 1}"#).contains("no key"));
        assert!(shape_error(r#"{"key": [1], "value": 1}"#).contains("string or a number"));
        assert!(shape_error(r#"{"key": true, "value": 1}"#).contains("got a boolean"));
        assert!(shape_error(r#"{"key": "", "value": 1}"#).contains("1 to 512 bytes"));
        assert!(
            shape_error(&format!(r#"{{"key": "{}", "value": 1}}"#, "k".repeat(513)))
                .contains("got 513")
        );
        assert!(shape_error(r#"{"key": "a"}"#).contains("no value"));
        assert!(shape_error(r#"{"key": "a", "value": null}"#).contains("return null"));
        assert!(shape_error(r#"{"key": "a", "value": 1, "ttl": 3}"#).contains("\"ttl\""));
        assert!(
            shape_error(r#"[{"key": "a", "value": 1}, {"key": "a", "value": 2}]"#)
                .contains("returned twice")
        );
        assert!(shape_error(r#"[1, 2, 3, 4]"#).contains("more than the 3"));
        assert!(shape_error(r#"[{"key": "a", "value": 1}, 7]"#).starts_with("entry 1: "));
    }
}
