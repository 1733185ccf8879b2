//! The columns of a collection's segments and snapshots, and change records to Arrow.
//!
//! Every row has `key` (the key as JSON text: a scalar, or an array for composite keys),
//! one column per key field (named after the pointer's last token): an integer column
//! when the collection declares `key_types = ["integer"]`, else text in segments, and in
//! snapshots an integer column when every value is an integer (compaction checks), `version` (the integer
//! version, or nanoseconds since the epoch for RFC 3339 versions), `doc` (the document's
//! JSON; null for a delete), `op` (`upsert` or `delete`; snapshots hold upserts only),
//! `partition` and `offset` (the change record's position: the newest per key wins a
//! merge), `ts_ms` (commit time), then the collection's declared columns.

use crate::SnapshotError;
use crate::members::DeclaredMembers;
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::de::DeserializeSeed;
use serde_json::Value;
use sluice_core::config::{ColumnType, RESERVED_COLUMNS};
use sluice_core::{CollectionConfig, KeyType, Pointer, Version, change};
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Layout {
    pub collection: String,
    /// (column name, pointer into the document, declared type)
    key_columns: Vec<(String, Pointer, Option<KeyType>)>,
    extra_columns: Vec<(String, ColumnType)>,
    pub schema: SchemaRef,
}

impl Layout {
    pub fn new(config: &CollectionConfig) -> Result<Self, SnapshotError> {
        let mut key_columns = Vec::new();
        let declared = config.key_types.clone().unwrap_or_default();
        for (index, text) in config.key.iter().enumerate() {
            let pointer =
                Pointer::parse(text).map_err(|error| SnapshotError::Config(error.to_string()))?;
            let token = pointer.tokens().last().cloned().unwrap_or_default();
            let mut name: String = token
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            if RESERVED_COLUMNS.contains(&name.as_str()) || name.is_empty() {
                name = format!("key_{name}");
            }
            key_columns.push((name, pointer, declared.get(index).copied()));
        }
        let extra_columns: Vec<(String, ColumnType)> = config
            .columns
            .iter()
            .map(|(name, kind)| (name.clone(), *kind))
            .collect();
        let mut fields = vec![Field::new("key", DataType::Utf8, false)];
        for (name, _, declared) in &key_columns {
            let kind = match declared {
                Some(KeyType::Integer) => DataType::Int64,
                Some(KeyType::String) | None => DataType::Utf8,
            };
            fields.push(Field::new(name, kind, true));
        }
        fields.extend([
            Field::new("version", DataType::Int64, true),
            Field::new("doc", DataType::Utf8, true),
            Field::new("op", DataType::Utf8, false),
            Field::new("partition", DataType::Int32, false),
            Field::new("offset", DataType::Int64, false),
            Field::new("ts_ms", DataType::Int64, false),
        ]);
        for (name, kind) in &extra_columns {
            if key_columns.iter().any(|(key, _, _)| key == name) {
                return Err(SnapshotError::Config(format!(
                    "collection {:?}: column {name:?} is also a key column",
                    config.name
                )));
            }
            fields.push(Field::new(name, arrow_type(*kind), true));
        }
        Ok(Self {
            collection: config.name.clone(),
            key_columns,
            extra_columns,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// Key columns without a declared type: text in segments, and an integer column in
    /// a snapshot when all their values are integers.
    pub fn untyped_key_columns(&self) -> Vec<&str> {
        self.key_columns
            .iter()
            .filter(|(_, _, declared)| declared.is_none())
            .map(|(name, _, _)| name.as_str())
            .collect()
    }

    /// The schema of a snapshot whose untyped key columns `integers` hold integers.
    pub fn snapshot_schema(&self, integers: &[String]) -> SchemaRef {
        let fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|field| {
                if integers.iter().any(|name| name == field.name()) {
                    Field::new(field.name(), DataType::Int64, field.is_nullable())
                } else {
                    field.as_ref().clone()
                }
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The snapshot schema a manifest describes (its untyped key columns that it says
    /// are `Int64`).
    pub fn schema_of(&self, manifest: &crate::objects::Manifest) -> SchemaRef {
        let untyped = self.untyped_key_columns();
        let integers: Vec<String> = manifest
            .schema
            .iter()
            .filter(|(name, kind)| kind == "Int64" && untyped.contains(&name.as_str()))
            .map(|(name, _)| name.clone())
            .collect();
        self.snapshot_schema(&integers)
    }

    pub fn builder(&self) -> RowsBuilder<'_> {
        RowsBuilder {
            layout: self,
            key: StringBuilder::new(),
            key_parts: self
                .key_columns
                .iter()
                .map(|(_, _, declared)| match declared {
                    Some(KeyType::Integer) => KeyBuilder::Integer(Int64Builder::new()),
                    _ => KeyBuilder::Text(StringBuilder::new()),
                })
                .collect(),
            version: Int64Builder::new(),
            doc: StringBuilder::new(),
            op: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            ts_ms: Int64Builder::new(),
            extras: self
                .extra_columns
                .iter()
                .map(|(_, kind)| ExtraBuilder::new(*kind))
                .collect(),
            rows: 0,
            bytes: 0,
        }
    }
}

fn arrow_type(kind: ColumnType) -> DataType {
    match kind {
        ColumnType::String => DataType::Utf8,
        ColumnType::Long => DataType::Int64,
        ColumnType::Double => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
    }
}

enum KeyBuilder {
    Text(StringBuilder),
    Integer(Int64Builder),
}

enum ExtraBuilder {
    String(StringBuilder),
    Long(Int64Builder),
    Double(Float64Builder),
    Boolean(BooleanBuilder),
}

impl ExtraBuilder {
    fn new(kind: ColumnType) -> Self {
        match kind {
            ColumnType::String => ExtraBuilder::String(StringBuilder::new()),
            ColumnType::Long => ExtraBuilder::Long(Int64Builder::new()),
            ColumnType::Double => ExtraBuilder::Double(Float64Builder::new()),
            ColumnType::Boolean => ExtraBuilder::Boolean(BooleanBuilder::new()),
        }
    }

    /// A value of another type than declared is null, not an error: the document is the
    /// truth, the column a convenience.
    fn push(&mut self, value: Option<&Value>) {
        match self {
            ExtraBuilder::String(builder) => match value {
                Some(Value::String(text)) => builder.append_value(text),
                Some(Value::Null) | None => builder.append_null(),
                Some(other) => builder.append_value(other.to_string()),
            },
            ExtraBuilder::Long(builder) => builder.append_option(value.and_then(Value::as_i64)),
            ExtraBuilder::Double(builder) => builder.append_option(value.and_then(Value::as_f64)),
            ExtraBuilder::Boolean(builder) => builder.append_option(value.and_then(Value::as_bool)),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ExtraBuilder::String(builder) => Arc::new(builder.finish()),
            ExtraBuilder::Long(builder) => Arc::new(builder.finish()),
            ExtraBuilder::Double(builder) => Arc::new(builder.finish()),
            ExtraBuilder::Boolean(builder) => Arc::new(builder.finish()),
        }
    }
}

/// One change record, as the archiver reads it from the change log: the members around
/// the document as the record has them (found by position, `RecordParts::members`), the
/// document's JSON as it is (not scanned: it is most of the bytes, and the engine wrote
/// it). Only what a column needs in another form is parsed, in `RowsBuilder::push`.
pub struct ChangeRow<'a> {
    pub collection: Cow<'a, str>,
    /// The key's JSON.
    pub key: &'a str,
    /// `upsert` or `delete`.
    pub op: &'a str,
    /// The version's JSON (`null` when the collection has none).
    pub version: &'a str,
    /// `None` for a delete.
    pub doc: Option<&'a str>,
    pub ts_ms: i64,
}

impl<'a> ChangeRow<'a> {
    /// Reads a full change record; one of another shape than the engine writes is an
    /// error (every record in the change log is the engine's).
    pub fn parse(record: &'a [u8]) -> Result<Self, SnapshotError> {
        let unknown = |what: &str| {
            let start = String::from_utf8_lossy(record.get(..80).unwrap_or(record)).into_owned();
            SnapshotError::Internal(format!("a change record {what}: {start}…"))
        };
        let text =
            |bytes: &'a [u8]| std::str::from_utf8(bytes).map_err(|_| unknown("that is not UTF-8"));
        let parts = change::split_record(record).ok_or_else(|| unknown("of an unknown shape"))?;
        let members = parts
            .members()
            .ok_or_else(|| unknown("of an unknown shape"))?;
        let collection = change::json_str_text(members.collection)
            .map_err(|error| unknown(&format!("with a bad collection ({error})")))?;
        let op = change::plain_json_str(members.op).ok_or_else(|| unknown("with a bad op"))?;
        let doc = match parts.doc {
            b"null" => None,
            doc => Some(text(doc)?),
        };
        Ok(Self {
            collection,
            key: text(members.key)?,
            op: text(op)?,
            version: text(members.version)?,
            doc,
            ts_ms: i64::try_from(members.ts_ms).unwrap_or(i64::MAX),
        })
    }
}

/// A key part's text column value: a string's text, any other JSON as written.
fn key_part_text(part: &Value) -> Cow<'_, str> {
    match part {
        Value::String(text) => Cow::Borrowed(text),
        other => Cow::Owned(other.to_string()),
    }
}

pub struct RowsBuilder<'a> {
    layout: &'a Layout,
    key: StringBuilder,
    key_parts: Vec<KeyBuilder>,
    version: Int64Builder,
    doc: StringBuilder,
    op: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    ts_ms: Int64Builder,
    extras: Vec<ExtraBuilder>,
    pub rows: usize,
    /// Bytes of JSON appended (what segment rolling counts).
    pub bytes: usize,
}

impl RowsBuilder<'_> {
    /// Appends a change record at `partition`/`offset`.
    pub fn push(
        &mut self,
        row: &ChangeRow<'_>,
        partition: u16,
        offset: u64,
    ) -> Result<(), SnapshotError> {
        let key_text = row.key;
        self.key.append_value(key_text);
        let bad_key = |error: serde_json::Error| {
            SnapshotError::Internal(format!("a change record's key {key_text}: {error}"))
        };
        if self.layout.key_columns.len() > 1 {
            // A composite key: an array, parsed (rare, and small).
            let key: Value = serde_json::from_str(key_text).map_err(bad_key)?;
            let parts: Vec<&Value> = match &key {
                Value::Array(parts) => parts.iter().collect(),
                single => vec![single],
            };
            for (builder, part) in self.key_parts.iter_mut().zip(parts) {
                match builder {
                    KeyBuilder::Text(builder) => builder.append_value(key_part_text(part)),
                    // Events are checked against `key_types`; a record written before the
                    // type was declared is null here (its `key` column still has it).
                    KeyBuilder::Integer(builder) => builder.append_option(part.as_i64()),
                }
            }
        } else if let Some(builder) = self.key_parts.first_mut() {
            match builder {
                KeyBuilder::Integer(builder) => builder.append_option(key_text.parse::<i64>().ok()),
                KeyBuilder::Text(builder) => match change::plain_json_str(key_text.as_bytes()) {
                    Some(plain) => builder.append_value(String::from_utf8_lossy(plain)),
                    None => {
                        let part: Value = serde_json::from_str(key_text).map_err(bad_key)?;
                        builder.append_value(key_part_text(&part));
                    }
                },
            }
        }
        let version = match row.version {
            "null" => None,
            // A time: RFC 3339 text, parsed.
            text if text.starts_with('"') => serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|value| Version::from_json(&value, "/").ok())
                .map(|version| match version {
                    Version::Int(number) | Version::Time(number) => number,
                }),
            number => number.parse::<i64>().ok(),
        };
        self.version.append_option(version);
        let members: Option<Vec<Option<Value>>> = match row.doc {
            Some(raw) => {
                self.doc.append_value(raw);
                self.bytes += raw.len();
                if self.extras.is_empty() {
                    None
                } else {
                    let mut deserializer = serde_json::Deserializer::from_str(raw);
                    let seed = DeclaredMembers(&self.layout.extra_columns);
                    Some(seed.deserialize(&mut deserializer).map_err(|error| {
                        SnapshotError::Internal(format!("a change record's document: {error}"))
                    })?)
                }
            }
            _ => {
                self.doc.append_null();
                None
            }
        };
        self.op.append_value(row.op);
        self.partition.append_value(i32::from(partition));
        self.offset
            .append_value(i64::try_from(offset).unwrap_or(i64::MAX));
        self.ts_ms.append_value(row.ts_ms);
        for (index, builder) in self.extras.iter_mut().enumerate() {
            let value = members
                .as_ref()
                .and_then(|values| values.get(index)?.as_ref());
            builder.push(value);
        }
        self.rows += 1;
        self.bytes += key_text.len() + 48;
        Ok(())
    }

    pub fn finish(mut self) -> Result<RecordBatch, SnapshotError> {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.key.finish())];
        for builder in &mut self.key_parts {
            columns.push(match builder {
                KeyBuilder::Text(builder) => Arc::new(builder.finish()) as ArrayRef,
                KeyBuilder::Integer(builder) => Arc::new(builder.finish()),
            });
        }
        columns.push(Arc::new(self.version.finish()));
        columns.push(Arc::new(self.doc.finish()));
        columns.push(Arc::new(self.op.finish()));
        columns.push(Arc::new(self.partition.finish()));
        columns.push(Arc::new(self.offset.finish()));
        columns.push(Arc::new(self.ts_ms.finish()));
        for builder in &mut self.extras {
            columns.push(builder.finish());
        }
        RecordBatch::try_new(Arc::clone(&self.layout.schema), columns)
            .map_err(|error| SnapshotError::Internal(error.to_string()))
    }
}
