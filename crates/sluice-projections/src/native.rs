//! Native projections: the [`Projector`] trait implemented in Rust, for when a script is
//! too slow. [`DoctorProfile`] computes what
//! `examples/healthcare/projections/doctor_profile.js` computes, entry for entry.

use crate::{CallError, Entry, Lookup, Projected, Projector, Read};
use serde_json::Value;
use std::sync::Arc;

/// The projector compiled into the binary as `native:NAME` (`script = "native:NAME"`).
pub fn by_name(name: &str) -> Option<Box<dyn Projector + Send>> {
    match name {
        "doctor_profile" => Some(Box::new(DoctorProfile)),
        _ => None,
    }
}

/// The names `by_name` knows, for messages.
pub const NAMES: &[&str] = &["doctor_profile"];

/// A doctor with the name and city of each of its locations (`location_ids`, or the
/// single `location_id`) and the name of each of its insurance plans (`plan_ids`), keyed
/// by `doctor_id`.
#[derive(Debug, Default)]
pub struct DoctorProfile;

/// Looks up each of `ids` in `collection` (recording the read), and keeps the `fields`
/// (`(output name, document member)`) of those found, as JSON objects.
fn lookup_each(
    ids: &[&Value],
    collection: &str,
    fields: &[(&str, &str)],
    lookup: &Arc<dyn Lookup>,
    reads: &mut Vec<Read>,
) -> Result<String, CallError> {
    let mut found = Vec::new();
    for id in ids {
        let Some(id) = key_text(Some(id)) else {
            continue;
        };
        let read = Read {
            collection: collection.to_owned(),
            key: id.clone(),
        };
        if !reads.contains(&read) {
            reads.push(read);
        }
        let Some(text) = lookup.get(collection, &id)? else {
            continue;
        };
        let document: Value = serde_json::from_str(&text)
            .map_err(|error| CallError::Source(format!("{collection} {id}: {error}")))?;
        let members: Vec<(&str, Option<&Value>)> = fields
            .iter()
            .map(|(name, member)| (*name, document.get(*member)))
            .collect();
        found.push(object_text(&members));
    }
    Ok(format!("[{}]", found.join(",")))
}

impl Projector for DoctorProfile {
    fn version_hash(&self) -> &str {
        concat!("native:doctor_profile:", env!("CARGO_PKG_VERSION"))
    }

    fn project(&mut self, source: &str, lookup: &Arc<dyn Lookup>) -> Result<Projected, CallError> {
        let doctor: Value =
            serde_json::from_str(source).map_err(|error| CallError::Source(error.to_string()))?;
        let Some(key) = key_text(doctor.get("doctor_id")) else {
            return Err(CallError::Shape("no key".to_owned()));
        };
        let location_ids: Vec<&Value> =
            match (doctor.get("location_ids"), doctor.get("location_id")) {
                (Some(Value::Array(ids)), _) => ids.iter().collect(),
                (_, Some(id)) if !id.is_null() => vec![id],
                _ => Vec::new(),
            };
        let plan_ids: Vec<&Value> = match doctor.get("plan_ids") {
            Some(Value::Array(ids)) => ids.iter().collect(),
            _ => Vec::new(),
        };
        let mut reads = Vec::new();
        let locations = lookup_each(
            &location_ids,
            "location",
            &[("id", "location_id"), ("name", "name"), ("city", "city")],
            lookup,
            &mut reads,
        )?;
        let plans = lookup_each(
            &plan_ids,
            "insurance_plan",
            &[("id", "plan_id"), ("name", "name")],
            lookup,
            &mut reads,
        )?;
        let mut value = object_text(&[
            ("name", doctor.get("name")),
            ("specialty", doctor.get("specialty")),
        ]);
        // `locations` and `plans` last, as the script writes them.
        value.pop();
        if value.len() > 1 {
            value.push(',');
        }
        value.push_str("\"locations\":");
        value.push_str(&locations);
        value.push_str(",\"plans\":");
        value.push_str(&plans);
        value.push('}');
        Ok(Projected {
            entries: vec![Entry { key, value }],
            reads,
        })
    }
}

/// A JSON object of the fields that are present, in the order given (`serde_json`'s
/// maps sort their keys; a script's objects keep the order they were written in).
fn object_text(fields: &[(&str, Option<&Value>)]) -> String {
    let mut text = String::from("{");
    for (name, value) in fields {
        let Some(value) = value else {
            continue;
        };
        if text.len() > 1 {
            text.push(',');
        }
        text.push_str(&Value::String((*name).to_owned()).to_string());
        text.push(':');
        text.push_str(&value.to_string());
    }
    text.push('}');
    text
}

/// A key as `ctx.get` takes it: a string as is, a number as JavaScript prints it.
fn key_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(match number.as_f64() {
            Some(float) if float.fract() == 0.0 && float.abs() < 9e15 => {
                format!("{}", float as i64)
            }
            _ => number.to_string(),
        }),
        _ => None,
    }
}
