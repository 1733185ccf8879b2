//! A search over every shard of an index: each shard finds its total, facet counts and
//! best `offset + limit` hits from one searcher; the answer merges them and reads the
//! page's documents from the same searchers.

use crate::collect::{self, RankedHit, SearchCollector};
use crate::query;
use crate::request::{Filter, SearchRequest, Sort};
use crate::schema::IndexSchema;
use crate::shard::{Shard, ShardError};
use serde_json::{Map, Value, json};
use sluice_core::config::FieldType;
use std::collections::HashMap;
use std::sync::Arc;
use tantivy::query::{BooleanQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value as _};
use tantivy::{DocAddress, Searcher, TantivyDocument, Term};

/// Values returned per facet, most frequent first.
pub const FACET_VALUES_MAX: usize = 100;
/// Documents an autocomplete reads to find its suggestions.
const AUTOCOMPLETE_READ_MAX: usize = 1_000;
pub const AUTOCOMPLETE_LIMIT_MAX: usize = 100;

/// Where distances are measured from: the geo sort, else the first geo filter.
fn distance_from(request: &SearchRequest) -> Option<(&str, f64, f64)> {
    if let Sort::GeoDistance {
        field, lat, lon, ..
    } = &request.sort
    {
        return Some((field, *lat, *lon));
    }
    fn first(filter: &Filter) -> Option<(&str, f64, f64)> {
        match filter {
            Filter::GeoDistance {
                field, lat, lon, ..
            } => Some((field, *lat, *lon)),
            Filter::And(filters) | Filter::Or(filters) => filters.iter().find_map(first),
            _ => None,
        }
    }
    request.filter.as_ref().and_then(first)
}

pub fn search(
    shards: &[Arc<Shard>],
    schema: &IndexSchema,
    request: &SearchRequest,
) -> Result<Value, ShardError> {
    let query = query::build(request, schema);
    let top_n = request.offset.saturating_add(request.limit);
    let from = distance_from(request);
    let searchers: Vec<Searcher> = shards.iter().map(|shard| shard.searcher()).collect();
    let mut total = 0;
    let mut facets: Vec<HashMap<String, u64>> = vec![HashMap::new(); request.facets.len()];
    let mut hits: Vec<RankedHit> = Vec::new();
    for (position, searcher) in searchers.iter().enumerate() {
        let collector = SearchCollector::new(
            schema,
            position as u32,
            top_n,
            &request.sort,
            from,
            &request.facets,
        );
        let found = searcher.search(&*query, &collector)?;
        total += found.total;
        hits.extend(found.hits);
        collect::add_counts(&mut facets, found.facets);
    }
    hits.sort_by(RankedHit::order);
    let mut out_hits = Vec::with_capacity(request.limit);
    for hit in hits.into_iter().skip(request.offset).take(request.limit) {
        let Some(searcher) = searchers.get(hit.shard as usize) else {
            continue;
        };
        let document: TantivyDocument = searcher.doc(DocAddress::new(hit.segment, hit.doc))?;
        let (key, doc) = key_and_doc(&document, schema);
        let mut out = Map::new();
        out.insert("key".into(), key);
        if matches!(request.sort, Sort::Relevance) {
            out.insert("score".into(), json!(hit.score));
        }
        if let Some(distance_m) = hit.distance_m {
            out.insert(
                "distance_m".into(),
                json!((distance_m * 10.0).round() / 10.0),
            );
        }
        out.insert(
            "doc".into(),
            select(schema, &doc, request.fields.as_deref()),
        );
        out_hits.push(Value::Object(out));
    }
    let mut out_facets = Map::new();
    for (name, counts) in request.facets.iter().zip(facets) {
        let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts.truncate(FACET_VALUES_MAX);
        let values: Map<String, Value> = counts
            .into_iter()
            .map(|(value, count)| (value, json!(count)))
            .collect();
        out_facets.insert(name.clone(), Value::Object(values));
    }
    Ok(json!({"total": total, "hits": out_hits, "facets": out_facets}))
}

/// The source key and document of a search document.
fn key_and_doc(document: &TantivyDocument, schema: &IndexSchema) -> (Value, Value) {
    let key = document
        .get_first(schema.key)
        .and_then(|value| value.as_str())
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    let doc = document
        .get_first(schema.doc)
        .and_then(|value| value.as_bytes())
        .and_then(|bytes| serde_json::from_slice(bytes).ok())
        .unwrap_or(Value::Null);
    (key, doc)
}

/// The requested declared fields of a source document (all of them by default), each
/// read at its path.
fn select(schema: &IndexSchema, doc: &Value, fields: Option<&[String]>) -> Value {
    let mut out = Map::new();
    for spec in &schema.fields {
        if fields.is_some_and(|fields| !fields.contains(&spec.name)) {
            continue;
        }
        if let Some(value) = spec.pointer.get(doc).filter(|value| !value.is_null()) {
            out.insert(spec.name.clone(), value.clone());
        }
    }
    Value::Object(out)
}

/// Values of text field `field` in which every word of `prefix` starts a word (the last
/// word may be partial, and so may the others): "jo sm" completes to "John Smith".
pub fn autocomplete(
    shards: &[Arc<Shard>],
    schema: &IndexSchema,
    field: &str,
    prefix: &str,
    limit: usize,
) -> Result<Result<Value, String>, ShardError> {
    let Some(spec) = schema.field(field) else {
        let known: Vec<&str> = schema
            .fields
            .iter()
            .filter(|f| f.autocomplete)
            .map(|f| f.name.as_str())
            .collect();
        return Ok(Err(format!(
            "unknown field {field:?} (autocomplete fields: {})",
            known.join(", ")
        )));
    };
    if spec.field_type != FieldType::Text || !spec.autocomplete {
        return Ok(Err(format!(
            "field {field:?} has no autocomplete (declare it text with autocomplete = true)"
        )));
    }
    let words = query::words(prefix);
    if words.is_empty() {
        return Ok(Ok(json!({"suggestions": []})));
    }
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = words
        .iter()
        .map(|word| -> (Occur, Box<dyn Query>) {
            (
                Occur::Must,
                Box::new(FuzzyTermQuery::new_prefix(
                    Term::from_field_text(spec.field, word),
                    0,
                    true,
                )),
            )
        })
        .collect();
    clauses.push((
        Occur::MustNot,
        Box::new(TermQuery::new(
            Term::from_field_bool(schema.tomb, true),
            IndexRecordOption::Basic,
        )),
    ));
    let query = BooleanQuery::new(clauses);
    let mut suggestions: Vec<String> = Vec::new();
    for (position, shard) in shards.iter().enumerate() {
        let searcher = shard.searcher();
        let collector = SearchCollector::new(
            schema,
            position as u32,
            AUTOCOMPLETE_READ_MAX,
            &Sort::None,
            None,
            &[],
        );
        let found = searcher.search(&query, &collector)?;
        for hit in found.hits {
            let document: TantivyDocument = searcher.doc(DocAddress::new(hit.segment, hit.doc))?;
            let (_, doc) = key_and_doc(&document, schema);
            let values = match spec.pointer.get(&doc) {
                Some(Value::String(text)) => vec![text.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            for value in values {
                if completes(&words, &value) && !suggestions.contains(&value) {
                    suggestions.push(value);
                }
            }
        }
    }
    suggestions.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    suggestions.truncate(limit);
    Ok(Ok(json!({"suggestions": suggestions})))
}

/// Every word of the prefix starts some word of `value`.
pub fn completes(prefix_words: &[String], value: &str) -> bool {
    let words = query::words(value);
    prefix_words
        .iter()
        .all(|prefix| words.iter().any(|word| word.starts_with(prefix.as_str())))
}
