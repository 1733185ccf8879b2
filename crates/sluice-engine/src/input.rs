//! Request bodies to events: a JSON object, a JSON array, or NDJSON. A body that is not
//! valid JSON fails as a whole ([`BodyError`], with its position); an event that is valid
//! JSON but breaks the collection's rules becomes an [`Input::Reject`] and is kept in the
//! rejected log while the other events apply.

use serde_json::Value;
use serde_json::value::RawValue;
use sluice_core::event::{self, CollectionSpec, EventError, Limits, json_error_parts};
use sluice_core::{Event, Key, Version};

/// How much of a rejected event's text is kept for inspection.
pub const REJECTED_TEXT_BYTES_MAX: usize = 64 << 10;

#[derive(Clone, Debug)]
pub enum Input {
    Event(Event),
    Delete { key: Key, version: Option<Version> },
    Reject(Rejection),
}

#[derive(Clone, Debug)]
pub struct Rejection {
    pub reason: String,
    /// The event's text, cut at [`REJECTED_TEXT_BYTES_MAX`].
    pub text: String,
    /// Where the event came from, for the rejected log (e.g. `line 3`).
    pub origin: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// A JSON object (one event) or a JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("malformed JSON on NDJSON line {line}, column {column}: {message}")]
    NdjsonLine {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("request has more than {max} events")]
    TooManyEvents { max: usize },
    #[error("request body is not UTF-8: {0}")]
    NotUtf8(String),
    #[error("request body is empty: send a JSON object, a JSON array of objects, or NDJSON")]
    Empty,
}

/// Parses a whole body. `events_max` bounds the number of events.
pub fn parse_body(
    spec: &CollectionSpec,
    body: &[u8],
    format: BodyFormat,
    limits: Limits,
    events_max: usize,
) -> Result<Vec<Input>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|error| BodyError::NotUtf8(error.to_string()))?;
    match format {
        BodyFormat::Ndjson => parse_ndjson(spec, text, limits, events_max),
        BodyFormat::Json => parse_json(spec, text, limits, events_max),
    }
}

fn parse_json(
    spec: &CollectionSpec,
    text: &str,
    limits: Limits,
    events_max: usize,
) -> Result<Vec<Input>, BodyError> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(BodyError::Empty);
    }
    let text = trimmed;
    let body_error = |error: serde_json::Error| {
        let (line, column, message) = json_error_parts(&error);
        BodyError::Json {
            line,
            column,
            message,
        }
    };
    if !trimmed.starts_with('[') {
        return Ok(vec![
            one(spec, text, limits, || "body".to_owned()).map_err(body_error)?,
        ]);
    }
    let elements: Vec<&RawValue> = serde_json::from_str(text).map_err(body_error)?;
    if elements.len() > events_max {
        return Err(BodyError::TooManyEvents { max: events_max });
    }
    elements
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            one(spec, raw.get(), limits, || format!("element {index}")).map_err(body_error)
        })
        .collect()
}

fn parse_ndjson(
    spec: &CollectionSpec,
    text: &str,
    limits: Limits,
    events_max: usize,
) -> Result<Vec<Input>, BodyError> {
    let mut inputs = Vec::with_capacity(text.len() / 64 + 1);
    for (index, line) in text.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if inputs.len() == events_max {
            return Err(BodyError::TooManyEvents { max: events_max });
        }
        let number = index + 1;
        let input = one(spec, line, limits, || format!("line {number}")).map_err(|error| {
            let (_, column, message) = json_error_parts(&error);
            BodyError::NdjsonLine {
                line: number,
                column,
                message,
            }
        })?;
        inputs.push(input);
    }
    if inputs.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(inputs)
}

/// Bulk loading: every non-empty line is an event, and a line that is not even JSON is
/// rejected like any other bad event instead of failing the load. `first_line` numbers the
/// lines in rejection origins.
pub fn parse_lines_lenient(
    spec: &CollectionSpec,
    text: &str,
    first_line: usize,
    limits: Limits,
) -> Vec<Input> {
    let mut inputs = Vec::with_capacity(text.len() / 64 + 1);
    for (index, line) in text.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = || format!("line {}", first_line + index);
        inputs.push(one(spec, line, limits, origin).unwrap_or_else(|error| {
            Input::Reject(rejection(
                EventError::from_json(&error).to_string(),
                line,
                &origin(),
            ))
        }));
    }
    inputs
}

/// One event's text. Syntax errors are the caller's (the request fails); everything else
/// becomes a rejection.
/// `origin` names the event in the rejected log; it is only built for rejections.
fn one(
    spec: &CollectionSpec,
    text: &str,
    limits: Limits,
    origin: impl Fn() -> String,
) -> Result<Input, serde_json::Error> {
    if text.len() > limits.event_bytes_max {
        let error = EventError::TooLarge {
            bytes: text.len(),
            max: limits.event_bytes_max,
        };
        return Ok(Input::Reject(rejection(error.to_string(), text, &origin())));
    }
    let value: Value = serde_json::from_str(text)?;
    Ok(match event::from_value(spec, value, limits) {
        Ok(event) => Input::Event(event),
        Err(error) => Input::Reject(rejection(error.to_string(), text, &origin())),
    })
}

pub fn rejection(reason: String, text: &str, origin: &str) -> Rejection {
    let mut end = text.len().min(REJECTED_TEXT_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Rejection {
        reason,
        text: text[..end].to_owned(),
        origin: origin.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::Pointer;
    use sluice_core::config::Ordering;

    const LIMITS: Limits = Limits {
        event_bytes_max: 100,
        event_depth_max: 8,
    };

    fn spec() -> CollectionSpec {
        CollectionSpec {
            name: "doctor".into(),
            key: vec![Pointer::parse("/id").unwrap()],
            key_types: Vec::new(),
            version: None,
            ordering: Ordering::Field,
        }
    }

    fn kinds(inputs: &[Input]) -> String {
        inputs
            .iter()
            .map(|input| match input {
                Input::Event(_) => 'E',
                Input::Delete { .. } => 'D',
                Input::Reject(_) => 'R',
            })
            .collect()
    }

    #[test]
    fn accepts_object_array_and_ndjson() {
        let parse = |body: &str, format| parse_body(&spec(), body.as_bytes(), format, LIMITS, 3);
        assert_eq!(
            kinds(&parse(r#"{"id": 1}"#, BodyFormat::Json).unwrap()),
            "E"
        );
        assert_eq!(
            kinds(&parse(r#"[{"id": 1}, {"x": 1}, 5]"#, BodyFormat::Json).unwrap()),
            "ERR"
        );
        assert_eq!(
            kinds(&parse("{\"id\": 1}\n\n{\"no\": 2}\n", BodyFormat::Ndjson).unwrap()),
            "ER"
        );
        let long = format!(r#"{{"id": 1, "x": "{}"}}"#, "a".repeat(200));
        assert_eq!(kinds(&parse(&long, BodyFormat::Ndjson).unwrap()), "R");
    }

    proptest::proptest! {
        /// No body, however broken, panics: it parses, or it fails with a `BodyError`.
        #[test]
        fn never_panics_on_bytes(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            for format in [BodyFormat::Json, BodyFormat::Ndjson] {
                let _ = parse_body(&spec(), &body, format, LIMITS, 100);
            }
            let _ = parse_lines_lenient(&spec(), &String::from_utf8_lossy(&body), 1, LIMITS);
        }

        #[test]
        fn never_panics_on_json_like_text(body in r#"[\[\]{}",:0-9a-z\\ \n-]{0,200}"#) {
            for format in [BodyFormat::Json, BodyFormat::Ndjson] {
                let _ = parse_body(&spec(), body.as_bytes(), format, LIMITS, 100);
            }
        }
    }

    #[test]
    fn lenient_lines_reject_malformed_json() {
        let inputs = parse_lines_lenient(&spec(), "{\"id\": 1}\n{oops\n\n{\"id\": 2}", 10, LIMITS);
        assert_eq!(kinds(&inputs), "ERE");
        let Input::Reject(rejection) = &inputs[1] else {
            unreachable!()
        };
        assert_eq!(rejection.origin, "line 11");
        assert!(
            rejection.reason.contains("malformed JSON"),
            "{}",
            rejection.reason
        );
    }

    #[test]
    fn malformed_bodies_say_where() {
        let parse = |body: &str, format| parse_body(&spec(), body.as_bytes(), format, LIMITS, 3);
        assert_eq!(
            parse("[{\"id\": 1},\n {\"id\" 2}]", BodyFormat::Json).unwrap_err(),
            BodyError::Json {
                line: 2,
                column: 8,
                message: "expected `:`".into()
            }
        );
        assert!(matches!(
            parse("{\"id\": 1}\n{\"id\": 2\n", BodyFormat::Ndjson),
            Err(BodyError::NdjsonLine { line: 2, .. })
        ));
        assert_eq!(parse("", BodyFormat::Json).unwrap_err(), BodyError::Empty);
        assert_eq!(
            parse("\n\n", BodyFormat::Ndjson).unwrap_err(),
            BodyError::Empty
        );
        assert_eq!(
            parse(
                "{\"id\":1}\n{\"id\":1}\n{\"id\":1}\n{\"id\":1}",
                BodyFormat::Ndjson
            )
            .unwrap_err(),
            BodyError::TooManyEvents { max: 3 }
        );
        assert!(matches!(
            parse_body(&spec(), b"\xff", BodyFormat::Json, LIMITS, 3),
            Err(BodyError::NotUtf8(_))
        ));
    }
}
