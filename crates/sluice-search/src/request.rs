//! The search request's JSON, checked against the index's fields: every problem is an
//! error that names it (unknown field, a filter on a field of the wrong type, a value out
//! of range), answered 400 by the API.

use crate::schema::{self, IndexSchema};
use serde_json::{Map, Value};
use sluice_core::config::FieldType;

/// Nesting of `and`/`or`/`not`, and filter nodes in all.
const FILTER_DEPTH_MAX: usize = 16;
const FILTER_NODES_MAX: usize = 256;
const TERMS_VALUES_MAX: usize = 1_024;
const Q_BYTES_MAX: usize = 1_024;
const FIELDS_MAX: usize = 64;
pub const LIMIT_DEFAULT: usize = 20;

#[derive(Clone, Debug, PartialEq)]
pub struct SearchRequest {
    pub q: Option<String>,
    /// `q`'s words: all required (`and`, the default) or any (`or`).
    pub q_all: bool,
    pub filter: Option<Filter>,
    pub sort: Sort,
    pub facets: Vec<String>,
    /// Declared fields to return per hit; `None`: all of them.
    pub fields: Option<Vec<String>>,
    pub limit: usize,
    pub offset: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Term {
        field: String,
        value: Scalar,
    },
    Terms {
        field: String,
        values: Vec<Scalar>,
    },
    Range {
        field: String,
        lower: Option<(Scalar, bool)>,
        upper: Option<(Scalar, bool)>,
    },
    Exists(String),
    GeoDistance {
        field: String,
        lat: f64,
        lon: f64,
        radius_m: f64,
    },
}

/// A filter value, already of its field's type (dates in milliseconds).
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Integer(value) => Some(*value as f64),
            Scalar::Float(value) => Some(*value),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Sort {
    /// Best score first (the default with `q`).
    Relevance,
    /// By a numeric or date field; documents without it come last.
    Field { field: String, descending: bool },
    GeoDistance {
        field: String,
        lat: f64,
        lon: f64,
        descending: bool,
    },
    /// No `q` and no sort: index order.
    None,
}

/// What a request got wrong, for a 400.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

fn bad(message: impl Into<String>) -> RequestError {
    RequestError(message.into())
}

impl SearchRequest {
    /// Parses and checks a request body against `schema` and the limits.
    pub fn parse(
        body: &Value,
        schema: &IndexSchema,
        limit_max: usize,
        offset_max: usize,
    ) -> Result<Self, RequestError> {
        let Value::Object(members) = body else {
            return Err(bad("the search request must be a JSON object"));
        };
        for name in members.keys() {
            if !matches!(
                name.as_str(),
                "q" | "q_operator" | "filter" | "sort" | "facets" | "fields" | "limit" | "offset"
            ) {
                return Err(bad(format!(
                    "unknown member {name:?} (known: q, q_operator, filter, sort, facets, fields, limit, offset)"
                )));
            }
        }
        let q = match members.get("q") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if text.len() > Q_BYTES_MAX => {
                return Err(bad(format!("q is longer than {Q_BYTES_MAX} bytes")));
            }
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => {
                return Err(bad(format!(
                    "q must be a string, not {}",
                    schema::kind(other)
                )));
            }
        };
        if q.is_some()
            && !schema
                .fields
                .iter()
                .any(|f| f.field_type == FieldType::Text)
        {
            return Err(bad("q searches text fields, and this index has none"));
        }
        let q_all = match members.get("q_operator") {
            None | Some(Value::Null) => true,
            Some(Value::String(op)) if op == "and" => true,
            Some(Value::String(op)) if op == "or" => false,
            Some(_) => return Err(bad("q_operator must be \"and\" or \"or\"")),
        };
        let filter = match members.get("filter") {
            None | Some(Value::Null) => None,
            Some(filter) => {
                let mut nodes = 0;
                Some(parse_filter(filter, schema, 0, &mut nodes)?)
            }
        };
        let sort = parse_sort(members.get("sort"), schema, q.is_some())?;
        let facets = match members.get("facets") {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => {
                let names = names(value, "facets")?;
                for name in &names {
                    let spec = field(schema, name)?;
                    if spec.field_type != FieldType::Keyword {
                        return Err(bad(format!(
                            "facets: field {name:?} is {}, and facets count keyword fields",
                            spec.field_type.as_str()
                        )));
                    }
                }
                names
            }
        };
        let fields = match members.get("fields") {
            None | Some(Value::Null) => None,
            Some(value) => {
                let names = names(value, "fields")?;
                for name in &names {
                    field(schema, name)?;
                }
                Some(names)
            }
        };
        let limit = count(members.get("limit"), "limit", LIMIT_DEFAULT)?;
        if limit > limit_max {
            return Err(bad(format!(
                "limit {limit} is over search_limit_max ({limit_max})"
            )));
        }
        let offset = count(members.get("offset"), "offset", 0)?;
        if offset > offset_max {
            return Err(bad(format!(
                "offset {offset} is over search_offset_max ({offset_max})"
            )));
        }
        Ok(Self {
            q,
            q_all,
            filter,
            sort,
            facets,
            fields,
            limit,
            offset,
        })
    }
}

fn count(value: Option<&Value>, what: &str, default: usize) -> Result<usize, RequestError> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value
            .as_u64()
            .and_then(|value| usize::try_from(value).ok())
            .ok_or_else(|| bad(format!("{what} must be a non-negative integer"))),
    }
}

fn names(value: &Value, what: &str) -> Result<Vec<String>, RequestError> {
    let Value::Array(items) = value else {
        return Err(bad(format!("{what} must be an array of field names")));
    };
    if items.len() > FIELDS_MAX {
        return Err(bad(format!("{what}: at most {FIELDS_MAX} names")));
    }
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("{what} must be an array of field names")))
        })
        .collect()
}

fn field<'a>(schema: &'a IndexSchema, name: &str) -> Result<&'a schema::FieldSpec, RequestError> {
    schema.field(name).ok_or_else(|| {
        let known: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
        bad(format!(
            "unknown field {name:?} (fields: {})",
            known.join(", ")
        ))
    })
}

/// A single-member object: `{"term": {...}}`.
fn single(value: &Value) -> Result<(&str, &Value), RequestError> {
    match value {
        Value::Object(members) if members.len() == 1 => {
            let (name, inner) = members.iter().next().ok_or_else(|| bad("empty filter"))?;
            Ok((name.as_str(), inner))
        }
        _ => Err(bad(
            "each filter is an object with one member: and, or, not, term, terms, range, exists or geo_distance",
        )),
    }
}

fn parse_filter(
    value: &Value,
    schema: &IndexSchema,
    depth: usize,
    nodes: &mut usize,
) -> Result<Filter, RequestError> {
    *nodes += 1;
    if *nodes > FILTER_NODES_MAX {
        return Err(bad(format!(
            "filter has more than {FILTER_NODES_MAX} nodes"
        )));
    }
    if depth > FILTER_DEPTH_MAX {
        return Err(bad(format!(
            "filter is nested deeper than {FILTER_DEPTH_MAX}"
        )));
    }
    let (operator, inner) = single(value)?;
    match operator {
        "and" | "or" => {
            let Value::Array(items) = inner else {
                return Err(bad(format!("{operator} takes an array of filters")));
            };
            let filters = items
                .iter()
                .map(|item| parse_filter(item, schema, depth + 1, nodes))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if operator == "and" {
                Filter::And(filters)
            } else {
                Filter::Or(filters)
            })
        }
        "not" => Ok(Filter::Not(Box::new(parse_filter(
            inner,
            schema,
            depth + 1,
            nodes,
        )?))),
        "term" => {
            let (name, raw) = single(inner).map_err(|_| bad("term takes {\"field\": value}"))?;
            let spec = field(schema, name)?;
            Ok(Filter::Term {
                field: name.to_owned(),
                value: scalar(spec, raw, "term")?,
            })
        }
        "terms" => {
            let (name, raw) =
                single(inner).map_err(|_| bad("terms takes {\"field\": [values]}"))?;
            let spec = field(schema, name)?;
            let Value::Array(items) = raw else {
                return Err(bad(format!("terms: {name:?} takes an array of values")));
            };
            if items.len() > TERMS_VALUES_MAX {
                return Err(bad(format!("terms: at most {TERMS_VALUES_MAX} values")));
            }
            Ok(Filter::Terms {
                field: name.to_owned(),
                values: items
                    .iter()
                    .map(|item| scalar(spec, item, "terms"))
                    .collect::<Result<_, _>>()?,
            })
        }
        "range" => {
            let (name, raw) =
                single(inner).map_err(|_| bad("range takes {\"field\": {\"gte\": ..}}"))?;
            let spec = field(schema, name)?;
            if !matches!(
                spec.field_type,
                FieldType::Integer | FieldType::Float | FieldType::Date
            ) {
                return Err(bad(format!(
                    "range: field {name:?} is {}; ranges apply to integer, float and date fields",
                    spec.field_type.as_str()
                )));
            }
            let Value::Object(bounds) = raw else {
                return Err(bad(format!(
                    "range: {name:?} takes an object of gt, gte, lt, lte"
                )));
            };
            let mut lower = None;
            let mut upper = None;
            for (bound, raw) in bounds {
                let value = scalar(spec, raw, "range")?;
                match bound.as_str() {
                    "gt" => lower = Some((value, false)),
                    "gte" => lower = Some((value, true)),
                    "lt" => upper = Some((value, false)),
                    "lte" => upper = Some((value, true)),
                    other => {
                        return Err(bad(format!(
                            "range: unknown bound {other:?} (gt, gte, lt, lte)"
                        )));
                    }
                }
            }
            if lower.is_none() && upper.is_none() {
                return Err(bad(format!("range: {name:?} has no bound")));
            }
            Ok(Filter::Range {
                field: name.to_owned(),
                lower,
                upper,
            })
        }
        "exists" => {
            let Value::String(name) = inner else {
                return Err(bad("exists takes a field name"));
            };
            field(schema, name)?;
            Ok(Filter::Exists(name.clone()))
        }
        "geo_distance" => {
            let Value::Object(members) = inner else {
                return Err(bad(
                    "geo_distance takes {\"field\", \"lat\", \"lon\", \"radius_m\"}",
                ));
            };
            let name = text_member(members, "field", "geo_distance")?;
            let spec = field(schema, name)?;
            if spec.field_type != FieldType::Geo {
                return Err(bad(format!(
                    "geo_distance: field {name:?} is {}, not geo",
                    spec.field_type.as_str()
                )));
            }
            let (lat, lon) = point(members, "geo_distance")?;
            let radius_m = number_member(members, "radius_m", "geo_distance")?;
            if !(radius_m > 0.0 && radius_m <= 20_100_000.0) {
                return Err(bad(
                    "geo_distance: radius_m must be > 0 and at most 20,100 km",
                ));
            }
            for name in members.keys() {
                if !matches!(name.as_str(), "field" | "lat" | "lon" | "radius_m") {
                    return Err(bad(format!("geo_distance: unknown member {name:?}")));
                }
            }
            Ok(Filter::GeoDistance {
                field: name.to_owned(),
                lat,
                lon,
                radius_m,
            })
        }
        other => Err(bad(format!(
            "unknown filter {other:?} (and, or, not, term, terms, range, exists, geo_distance)"
        ))),
    }
}

fn text_member<'a>(
    members: &'a Map<String, Value>,
    name: &str,
    what: &str,
) -> Result<&'a str, RequestError> {
    members
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{what}: {name} must be a string")))
}

fn number_member(
    members: &Map<String, Value>,
    name: &str,
    what: &str,
) -> Result<f64, RequestError> {
    members
        .get(name)
        .and_then(Value::as_f64)
        .ok_or_else(|| bad(format!("{what}: {name} must be a number")))
}

fn point(members: &Map<String, Value>, what: &str) -> Result<(f64, f64), RequestError> {
    let lat = number_member(members, "lat", what)?;
    let lon = number_member(members, "lon", what)?;
    schema::check_point(lat, lon).map_err(|message| bad(format!("{what}: {message}")))?;
    Ok((lat, lon))
}

/// A filter value of `spec`'s type.
fn scalar(spec: &schema::FieldSpec, raw: &Value, what: &str) -> Result<Scalar, RequestError> {
    let name = &spec.name;
    let wrong = |message: String| bad(format!("{what}: field {name:?}: {message}"));
    match spec.field_type {
        FieldType::Keyword => match raw {
            Value::String(text) => Ok(Scalar::Text(text.clone())),
            Value::Number(_) | Value::Bool(_) => Ok(Scalar::Text(raw.to_string())),
            other => Err(wrong(format!(
                "expected a string, got {}",
                schema::kind(other)
            ))),
        },
        FieldType::Integer => schema::integer(raw).map(Scalar::Integer).map_err(wrong),
        FieldType::Float => schema::float(raw).map(Scalar::Float).map_err(wrong),
        FieldType::Date => schema::date_ms(raw).map(Scalar::Integer).map_err(wrong),
        FieldType::Bool => match raw {
            Value::Bool(flag) => Ok(Scalar::Bool(*flag)),
            other => Err(wrong(format!(
                "expected true or false, got {}",
                schema::kind(other)
            ))),
        },
        FieldType::Text => Err(wrong(
            "is text: filter keyword, numeric, date or bool fields, and search text with q"
                .to_owned(),
        )),
        FieldType::Geo => Err(wrong("is geo: use geo_distance".to_owned())),
    }
}

fn parse_sort(
    value: Option<&Value>,
    schema: &IndexSchema,
    has_q: bool,
) -> Result<Sort, RequestError> {
    let default = if has_q { Sort::Relevance } else { Sort::None };
    let items = match value {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad("sort must be an array of one sort key")),
    };
    let item = match items.as_slice() {
        [] => return Ok(default),
        [item] => item,
        _ => return Err(bad("sort takes one key (ties keep index order)")),
    };
    let (name, raw) =
        single(item).map_err(|_| bad("a sort key is {\"field\": \"asc\" | \"desc\"}"))?;
    if name == "_geo_distance" {
        let Value::Object(members) = raw else {
            return Err(bad(
                "_geo_distance takes {\"field\", \"lat\", \"lon\", \"order\"}",
            ));
        };
        let field_name = text_member(members, "field", "_geo_distance")?;
        let spec = field(schema, field_name)?;
        if spec.field_type != FieldType::Geo {
            return Err(bad(format!(
                "_geo_distance: field {field_name:?} is not geo"
            )));
        }
        let (lat, lon) = point(members, "_geo_distance")?;
        let descending = match members.get("order").and_then(Value::as_str) {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => return Err(bad("_geo_distance: order must be \"asc\" or \"desc\"")),
        };
        return Ok(Sort::GeoDistance {
            field: field_name.to_owned(),
            lat,
            lon,
            descending,
        });
    }
    let descending = match raw.as_str() {
        Some("asc") => false,
        Some("desc") => true,
        _ => return Err(bad(format!("sort: {name:?} takes \"asc\" or \"desc\""))),
    };
    if name == "_score" {
        if !has_q {
            return Err(bad("sort by _score needs q"));
        }
        if !descending {
            return Err(bad("_score sorts best first: use \"desc\""));
        }
        return Ok(Sort::Relevance);
    }
    let spec = field(schema, name)?;
    if !matches!(
        spec.field_type,
        FieldType::Integer | FieldType::Float | FieldType::Date
    ) {
        return Err(bad(format!(
            "sort: field {name:?} is {}; sort by an integer, float or date field, _score or _geo_distance",
            spec.field_type.as_str()
        )));
    }
    Ok(Sort::Field {
        field: name.to_owned(),
        descending,
    })
}
