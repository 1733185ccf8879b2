//! CloudEvents 1.0 in structured JSON mode: an envelope whose `data` is the partial
//! document. Every inbound path (HTTP bodies, NDJSON files, NATS messages) accepts an
//! envelope wherever it accepts a bare partial document; an object with a `specversion`
//! member is an envelope.
//!
//! What the envelope adds: `id` deduplicates redeliveries in collections without a version
//! field, and `time` is the version when the collection has a version field that `data`
//! lacks.

use serde_json::{Map, Value};

/// The longest `id` kept for deduplication; longer ids are refused, not cut (two ids that
/// share a prefix must not collide).
pub const ID_BYTES_MAX: usize = 256;

/// The envelope's members that matter to Sluice, with `data` taken out.
#[derive(Debug, PartialEq)]
pub struct Envelope {
    pub id: String,
    pub time: Option<Value>,
    pub data: Map<String, Value>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum CloudEventError {
    #[error("CloudEvent: specversion must be \"1.0\", got {0}")]
    SpecVersion(String),
    #[error("CloudEvent: the required attribute {0:?} is missing or not a non-empty string")]
    MissingAttribute(&'static str),
    #[error("CloudEvent: id is {bytes} bytes, over the limit of {max}")]
    IdTooLong { bytes: usize, max: usize },
    #[error(
        "CloudEvent: datacontenttype {0:?} is not JSON; send the partial document as JSON `data`"
    )]
    ContentType(String),
    #[error("CloudEvent: data_base64 is not supported; send the partial document as JSON `data`")]
    Base64,
    #[error("CloudEvent: data must be a JSON object (the partial document), got {0}")]
    DataNotObject(&'static str),
}

/// Whether `object` is a CloudEvents envelope rather than a bare partial document.
pub fn is_envelope(object: &Map<String, Value>) -> bool {
    object.contains_key("specversion")
}

/// Takes an envelope apart. `object` must be an envelope (see [`is_envelope`]).
pub fn open(mut object: Map<String, Value>) -> Result<Envelope, CloudEventError> {
    match object.get("specversion") {
        Some(Value::String(version)) if version == "1.0" => {}
        Some(other) => return Err(CloudEventError::SpecVersion(other.to_string())),
        None => return Err(CloudEventError::MissingAttribute("specversion")),
    }
    for required in ["source", "type"] {
        if !matches!(object.get(required), Some(Value::String(text)) if !text.is_empty()) {
            return Err(CloudEventError::MissingAttribute(required));
        }
    }
    let id = match object.remove("id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        _ => return Err(CloudEventError::MissingAttribute("id")),
    };
    if id.len() > ID_BYTES_MAX {
        return Err(CloudEventError::IdTooLong {
            bytes: id.len(),
            max: ID_BYTES_MAX,
        });
    }
    if let Some(content_type) = object.get("datacontenttype") {
        let text = content_type.as_str().unwrap_or_default();
        if !is_json_media_type(text) {
            return Err(CloudEventError::ContentType(
                text.chars().take(100).collect(),
            ));
        }
    }
    if object.contains_key("data_base64") {
        return Err(CloudEventError::Base64);
    }
    let data = match object.remove("data") {
        Some(Value::Object(data)) => data,
        Some(other) => {
            return Err(CloudEventError::DataNotObject(crate::event::kind_name(
                &other,
            )));
        }
        None => return Err(CloudEventError::DataNotObject("nothing")),
    };
    Ok(Envelope {
        id,
        time: object.remove("time"),
        data,
    })
}

/// `application/json`, `text/json` and every `+json` type, parameters ignored.
fn is_json_media_type(text: &str) -> bool {
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value: Value, expected: Result<(&str, Option<Value>), &str>) {
        let Value::Object(object) = value else {
            unreachable!("test inputs are objects")
        };
        assert!(is_envelope(&object));
        match (open(object), expected) {
            (Ok(envelope), Ok((id, time))) => {
                assert_eq!(envelope.id, id);
                assert_eq!(envelope.time, time);
            }
            (Err(error), Err(needle)) => {
                assert!(
                    error.to_string().contains(needle),
                    "{error} lacks {needle:?}"
                )
            }
            (result, expected) => panic!("got {result:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn opens_envelopes() {
        let base = || {
            json!({"specversion": "1.0", "id": "e-1", "source": "/emr", "type": "doctor.moved",
                   "data": {"doctor_id": 17}})
        };
        check(base(), Ok(("e-1", None)));
        let mut timed = base();
        timed["time"] = json!("2026-11-01T10:00:00Z");
        timed["datacontenttype"] = json!("application/json; charset=utf-8");
        check(timed, Ok(("e-1", Some(json!("2026-11-01T10:00:00Z")))));
        let mut vendor = base();
        vendor["datacontenttype"] = json!("application/vnd.emr+json");
        check(vendor, Ok(("e-1", None)));
    }

    #[test]
    fn refuses_bad_envelopes() {
        let base = || {
            json!({"specversion": "1.0", "id": "e-1", "source": "/emr", "type": "t",
                   "data": {"doctor_id": 17}})
        };
        let with = |name: &str, value: Value| {
            let mut event = base();
            event[name] = value;
            event
        };
        let without = |name: &str| {
            let mut event = base();
            event.as_object_mut().map(|members| members.remove(name));
            event
        };
        check(with("specversion", json!("0.3")), Err("must be \"1.0\""));
        check(without("id"), Err("\"id\" is missing"));
        check(with("id", json!("")), Err("\"id\" is missing"));
        check(with("id", json!(7)), Err("\"id\" is missing"));
        check(without("source"), Err("\"source\" is missing"));
        check(without("type"), Err("\"type\" is missing"));
        check(
            with("id", json!("x".repeat(300))),
            Err("over the limit of 256"),
        );
        check(with("datacontenttype", json!("text/csv")), Err("not JSON"));
        check(with("data_base64", json!("e30=")), Err("not supported"));
        check(with("data", json!([1])), Err("got an array"));
        check(without("data"), Err("got nothing"));
    }
}
