//! Document versions: an integer, or an RFC 3339 time (kept as nanoseconds since the epoch).

use serde_json::Value;
use std::cmp::Ordering;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The version an event carries. Integers and times never compare with each other: a
/// collection whose events mix them is rejected event by event (see [`VersionError::Mixed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    Int(i64),
    /// Nanoseconds since the Unix epoch, UTC (years 1678 to 2261).
    Time(i64),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum VersionError {
    #[error("version at {pointer} must be an integer or an RFC 3339 time, got {found}")]
    WrongType { pointer: String, found: String },
    #[error("version at {pointer} is missing")]
    Missing { pointer: String },
    #[error("mixed version types: the document has {document} versions, the event has {event}")]
    Mixed {
        document: &'static str,
        event: &'static str,
    },
}

impl Version {
    pub fn from_json(value: &Value, pointer: &str) -> Result<Self, VersionError> {
        let wrong = || VersionError::WrongType {
            pointer: pointer.to_owned(),
            found: describe(value),
        };
        match value {
            Value::Number(number) => number.as_i64().map(Version::Int).ok_or_else(wrong),
            Value::String(text) => OffsetDateTime::parse(text, &Rfc3339)
                .ok()
                .and_then(|time| i64::try_from(time.unix_timestamp_nanos()).ok())
                .map(Version::Time)
                .ok_or_else(wrong),
            _ => Err(wrong()),
        }
    }

    pub fn to_json(self) -> Value {
        match self {
            Version::Int(number) => Value::from(number),
            Version::Time(nanos) => OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
                .ok()
                .and_then(|time| time.format(&Rfc3339).ok())
                .map_or(Value::from(nanos.to_string()), Value::from),
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Version::Int(_) => "integer",
            Version::Time(_) => "RFC 3339 time",
        }
    }

    /// Orders two versions of the same kind; `Err` when the kinds differ.
    pub fn compare(self, other: Version) -> Result<Ordering, VersionError> {
        match (self, other) {
            (Version::Int(a), Version::Int(b)) => Ok(a.cmp(&b)),
            (Version::Time(a), Version::Time(b)) => Ok(a.cmp(&b)),
            _ => Err(VersionError::Mixed {
                document: other.kind(),
                event: self.kind(),
            }),
        }
    }

    /// The next version in arrival order, for collections without a version field.
    pub fn successor(self) -> Version {
        match self {
            Version::Int(number) => Version::Int(number.saturating_add(1)),
            Version::Time(nanos) => Version::Time(nanos.saturating_add(1)),
        }
    }

    /// Total order used inside the field-mode clock, where kinds never mix (checked at
    /// the door); integers sort before times so that the order is total anyway.
    pub(crate) fn total_cmp(self, other: Version) -> Ordering {
        match (self, other) {
            (Version::Int(a), Version::Int(b)) => a.cmp(&b),
            (Version::Time(a), Version::Time(b)) => a.cmp(&b),
            (Version::Int(_), Version::Time(_)) => Ordering::Less,
            (Version::Time(_), Version::Int(_)) => Ordering::Greater,
        }
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(number) if number.is_f64() => format!("the number {number}"),
        Value::Number(number) => format!("the number {number} (out of the 64-bit range)"),
        Value::String(text) => format!("the string {text:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_integers_and_times() {
        let check = |value: Value, expected: Result<Version, ()>| {
            assert_eq!(
                Version::from_json(&value, "/v").map_err(|_| ()),
                expected,
                "{value}"
            );
        };
        check(json!(7), Ok(Version::Int(7)));
        check(json!(-3), Ok(Version::Int(-3)));
        check(
            json!("1970-01-01T00:00:01Z"),
            Ok(Version::Time(1_000_000_000)),
        );
        check(
            json!("1970-01-01T01:00:01+01:00"),
            Ok(Version::Time(1_000_000_000)),
        );
        check(json!(1.5), Err(()));
        check(json!("yesterday"), Err(()));
        check(json!(null), Err(()));
        check(json!(u64::MAX), Err(()));
        check(json!("2500-01-01T00:00:00Z"), Err(()));
    }

    #[test]
    fn time_round_trips_through_json() {
        let version = Version::from_json(&json!("2026-11-23T10:00:00.5Z"), "/v").unwrap();
        assert_eq!(version.to_json(), json!("2026-11-23T10:00:00.5Z"));
    }

    #[test]
    fn mixed_kinds_do_not_compare() {
        assert!(Version::Int(1).compare(Version::Time(1)).is_err());
        assert_eq!(Version::Int(1).compare(Version::Int(2)), Ok(Ordering::Less));
    }
}
