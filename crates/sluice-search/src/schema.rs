//! From `[[indexes]]` fields to a tantivy schema, and from a source document to the
//! search document it indexes as.
//!
//! Every search document has the internal fields `_key` (the source key as JSON text),
//! `_version` (the change-log offset of the state it was built from), `_present` (the
//! names of the declared fields it has, for `exists`), `_doc` (the source document, for
//! the fields a search returns) and, for a deleted source document, `_tomb` (a
//! tombstone: it keeps the delete's version so that an older write is still refused).

use serde_json::Value;
use sluice_core::config::{FieldType, IndexConfig};
use sluice_core::pointer::Pointer;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{TantivyDocument, Term};

pub(crate) const KEY: &str = "_key";
pub(crate) const VERSION: &str = "_version";
pub(crate) const PRESENT: &str = "_present";
pub(crate) const DOC: &str = "_doc";
pub(crate) const TOMB: &str = "_tomb";

/// One declared field.
#[derive(Clone, Debug)]
pub struct FieldSpec {
    pub name: String,
    pub field_type: FieldType,
    pub pointer: Pointer,
    pub autocomplete: bool,
    /// The tantivy field (`geo`: the latitude).
    pub(crate) field: Field,
    /// `geo` only: the longitude.
    pub(crate) lon: Option<Field>,
}

impl FieldSpec {
    /// The fast-field column names: `geo` has two.
    pub(crate) fn column(&self) -> String {
        match self.field_type {
            FieldType::Geo => geo_lat_name(&self.name),
            _ => self.name.clone(),
        }
    }
}

fn geo_lat_name(name: &str) -> String {
    format!("_geo_lat_{name}")
}

pub(crate) fn geo_lon_name(name: &str) -> String {
    format!("_geo_lon_{name}")
}

/// An index's schema: its tantivy schema and its declared fields.
#[derive(Clone, Debug)]
pub struct IndexSchema {
    pub(crate) schema: Schema,
    pub fields: Vec<FieldSpec>,
    pub(crate) key: Field,
    pub(crate) version: Field,
    pub(crate) present: Field,
    pub(crate) doc: Field,
    pub(crate) tomb: Field,
}

/// A source value that does not fit its field's type: the document is indexed without
/// that field, and the problem is counted and kept.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl IndexSchema {
    pub fn new(config: &IndexConfig) -> Self {
        let mut builder = Schema::builder();
        let key = builder.add_text_field(KEY, STRING | STORED);
        let version = builder.add_u64_field(VERSION, FAST | STORED);
        let present = builder.add_text_field(PRESENT, STRING);
        let doc = builder.add_bytes_field(DOC, STORED);
        let tomb = builder.add_bool_field(TOMB, INDEXED);
        let mut fields = Vec::with_capacity(config.fields.len());
        for (name, field_config) in &config.fields {
            let (field, lon) = match field_config.field_type {
                FieldType::Text => {
                    let indexing = TextFieldIndexing::default()
                        .set_tokenizer("default")
                        .set_index_option(IndexRecordOption::WithFreqs);
                    let options = TextOptions::default().set_indexing_options(indexing);
                    (builder.add_text_field(name, options), None)
                }
                FieldType::Keyword => (builder.add_text_field(name, STRING | FAST), None),
                FieldType::Integer | FieldType::Date => {
                    (builder.add_i64_field(name, INDEXED | FAST), None)
                }
                FieldType::Float => (builder.add_f64_field(name, INDEXED | FAST), None),
                FieldType::Bool => (builder.add_bool_field(name, INDEXED | FAST), None),
                FieldType::Geo => (
                    builder.add_f64_field(&geo_lat_name(name), INDEXED | FAST),
                    Some(builder.add_f64_field(&geo_lon_name(name), INDEXED | FAST)),
                ),
            };
            fields.push(FieldSpec {
                name: name.clone(),
                field_type: field_config.field_type,
                pointer: field_config.pointer(name),
                autocomplete: field_config.autocomplete,
                field,
                lon,
            });
        }
        Self {
            schema: builder.build(),
            fields,
            key,
            version,
            present,
            doc,
            tomb,
        }
    }

    /// The tantivy schema (a bare tantivy index of the same documents uses it).
    pub fn tantivy_schema(&self) -> &Schema {
        &self.schema
    }

    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|field| field.name == name)
    }

    pub(crate) fn key_term(&self, key: &str) -> Term {
        Term::from_field_text(self.key, key)
    }

    /// The search document of source document `doc` (JSON text) with key `key` (JSON
    /// text) at `version`, and the values that did not fit their field.
    pub fn document(
        &self,
        key: &str,
        version: u64,
        doc: &[u8],
    ) -> Result<(TantivyDocument, Vec<FieldError>), serde_json::Error> {
        let source: Value = serde_json::from_slice(doc)?;
        let mut out = TantivyDocument::new();
        out.add_text(self.key, key);
        out.add_u64(self.version, version);
        out.add_bytes(self.doc, doc);
        let mut errors = Vec::new();
        for spec in &self.fields {
            let Some(value) = spec.pointer.get(&source) else {
                continue;
            };
            if value.is_null() {
                continue;
            }
            match add_value(&mut out, spec, value) {
                Ok(true) => out.add_text(self.present, &spec.name),
                Ok(false) => {}
                Err(message) => errors.push(FieldError {
                    field: spec.name.clone(),
                    message,
                }),
            }
        }
        Ok((out, errors))
    }

    /// The tombstone of a deleted key at `version`.
    pub(crate) fn tombstone(&self, key: &str, version: u64) -> TantivyDocument {
        let mut out = TantivyDocument::new();
        out.add_text(self.key, key);
        out.add_u64(self.version, version);
        out.add_bool(self.tomb, true);
        out
    }
}

/// Adds `value` to `spec`'s field; `Ok(false)` when there was nothing to add (an empty
/// array), `Err` with the reason when it does not fit the type. Nothing is added on an
/// error, so a document never has half of a multi-valued field.
fn add_value(out: &mut TantivyDocument, spec: &FieldSpec, value: &Value) -> Result<bool, String> {
    let field = spec.field;
    match spec.field_type {
        FieldType::Text => {
            let texts = strings(value, false)?;
            for text in &texts {
                out.add_text(field, text);
            }
            Ok(!texts.is_empty())
        }
        FieldType::Keyword => {
            let texts = strings(value, true)?;
            for text in &texts {
                out.add_text(field, text);
            }
            Ok(!texts.is_empty())
        }
        FieldType::Integer => {
            out.add_i64(field, integer(value)?);
            Ok(true)
        }
        FieldType::Float => {
            out.add_f64(field, float(value)?);
            Ok(true)
        }
        FieldType::Date => {
            out.add_i64(field, date_ms(value)?);
            Ok(true)
        }
        FieldType::Bool => match value {
            Value::Bool(flag) => {
                out.add_bool(field, *flag);
                Ok(true)
            }
            other => Err(format!("expected true or false, got {}", kind(other))),
        },
        FieldType::Geo => {
            let (lat, lon) = geo_point(value)?;
            out.add_f64(field, lat);
            if let Some(lon_field) = spec.lon {
                out.add_f64(lon_field, lon);
            }
            Ok(true)
        }
    }
}

/// A string, or an array of them; a keyword takes numbers and booleans as their JSON
/// text too (ids are often numbers).
fn strings(value: &Value, scalars_as_text: bool) -> Result<Vec<String>, String> {
    let one = |value: &Value| match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(_) | Value::Bool(_) if scalars_as_text => Ok(value.to_string()),
        other => Err(format!("expected a string, got {}", kind(other))),
    };
    match value {
        Value::Array(values) => values
            .iter()
            .filter(|value| !value.is_null())
            .map(one)
            .collect(),
        other => one(other).map(|text| vec![text]),
    }
}

pub(crate) fn integer(value: &Value) -> Result<i64, String> {
    value
        .as_i64()
        .ok_or_else(|| format!("expected an integer, got {}", kind(value)))
}

pub(crate) fn float(value: &Value) -> Result<f64, String> {
    value
        .as_f64()
        .ok_or_else(|| format!("expected a number, got {}", kind(value)))
}

/// An RFC 3339 date, as milliseconds since the Unix epoch.
pub(crate) fn date_ms(value: &Value) -> Result<i64, String> {
    let Value::String(text) = value else {
        return Err(format!(
            "expected an RFC 3339 date such as \"2026-12-05T00:00:00Z\", got {}",
            kind(value)
        ));
    };
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|error| format!("{text:?} is not an RFC 3339 date: {error}"))?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{text:?} is out of range"))
}

/// `{"lat": .., "lon": ..}` or `[lat, lon]`, in range.
pub(crate) fn geo_point(value: &Value) -> Result<(f64, f64), String> {
    let (lat, lon) = match value {
        Value::Object(members) => (members.get("lat"), members.get("lon")),
        Value::Array(items) if items.len() == 2 => (items.first(), items.get(1)),
        other => {
            return Err(format!(
                "expected {{\"lat\": .., \"lon\": ..}} or [lat, lon], got {}",
                kind(other)
            ));
        }
    };
    let (Some(lat), Some(lon)) = (lat.and_then(Value::as_f64), lon.and_then(Value::as_f64)) else {
        return Err("a geo point needs numeric lat and lon".to_owned());
    };
    check_point(lat, lon)?;
    Ok((lat, lon))
}

pub(crate) fn check_point(lat: f64, lon: f64) -> Result<(), String> {
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(format!(
            "geo point ({lat}, {lon}) is out of range (lat -90..90, lon -180..180)"
        ));
    }
    Ok(())
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Great-circle distance in metres (haversine, mean Earth radius).
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_371_008.8;
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let dphi = (lat2 - lat1).to_radians();
    let dlambda = (lon2 - lon1).to_radians();
    let a = (dphi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (dlambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}
