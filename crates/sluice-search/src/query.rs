//! A checked [`SearchRequest`] as a tantivy query: `q` over the text fields (prefixes on
//! autocomplete fields), the filter tree with constant scores, tombstones excluded, and a
//! geo-distance query of our own (a bounding box from the index, then the exact distance
//! from the fast fields).

use crate::request::{Filter, Scalar, SearchRequest};
use crate::schema::{self, FieldSpec, IndexSchema};
use sluice_core::config::FieldType;
use std::ops::Bound;
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, EmptyQuery, EnableScoring, Explanation,
    FuzzyTermQuery, Occur, Query, RangeQuery, Scorer, TermQuery, TermSetQuery, Weight,
};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TokenizerManager;
use tantivy::{DocId, DocSet, Score, SegmentReader, TERMINATED, Term};

/// The words of `text` as the `default` tokenizer indexes them (split on anything not
/// alphanumeric, lower-cased, words over 40 bytes dropped).
pub fn words(text: &str) -> Vec<String> {
    let Some(mut analyzer) = TokenizerManager::default().get("default") else {
        return Vec::new();
    };
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

pub(crate) fn build(request: &SearchRequest, schema: &IndexSchema) -> Box<dyn Query> {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    if let Some(q) = &request.q {
        let words = words(q);
        if !words.is_empty() {
            clauses.push((Occur::Must, text_query(&words, request.q_all, schema)));
        }
    }
    if let Some(filter) = &request.filter {
        clauses.push((
            Occur::Must,
            Box::new(ConstScoreQuery::new(filter_query(filter, schema), 0.0)),
        ));
    }
    if clauses.is_empty() {
        clauses.push((Occur::Must, Box::new(AllQuery)));
    }
    clauses.push((
        Occur::MustNot,
        Box::new(TermQuery::new(
            Term::from_field_bool(schema.tomb, true),
            IndexRecordOption::Basic,
        )),
    ));
    Box::new(BooleanQuery::new(clauses))
}

/// Each word in any text field (as a prefix too on autocomplete fields); all words or
/// any.
fn text_query(words: &[String], all: bool, schema: &IndexSchema) -> Box<dyn Query> {
    let per_word = words
        .iter()
        .map(|word| {
            let alternatives: Vec<Box<dyn Query>> = schema
                .fields
                .iter()
                .filter(|spec| spec.field_type == FieldType::Text)
                .map(|spec| -> Box<dyn Query> {
                    let term = Term::from_field_text(spec.field, word);
                    if spec.autocomplete {
                        Box::new(BooleanQuery::union(vec![
                            Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
                            Box::new(FuzzyTermQuery::new_prefix(term, 0, true)),
                        ]))
                    } else {
                        Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))
                    }
                })
                .collect();
            Box::new(BooleanQuery::union(alternatives)) as Box<dyn Query>
        })
        .collect();
    if all {
        Box::new(BooleanQuery::intersection(per_word))
    } else {
        Box::new(BooleanQuery::union(per_word))
    }
}

/// The term of a filter value on `spec` (the request was checked: the types agree).
fn term(spec: &FieldSpec, value: &Scalar) -> Term {
    match (spec.field_type, value) {
        (FieldType::Float, value) => {
            Term::from_field_f64(spec.field, value.as_f64().unwrap_or(f64::NAN))
        }
        (_, Scalar::Text(text)) => Term::from_field_text(spec.field, text),
        (_, Scalar::Integer(value)) => Term::from_field_i64(spec.field, *value),
        (_, Scalar::Float(value)) => Term::from_field_f64(spec.field, *value),
        (_, Scalar::Bool(value)) => Term::from_field_bool(spec.field, *value),
    }
}

fn filter_query(filter: &Filter, schema: &IndexSchema) -> Box<dyn Query> {
    // The request was checked against this schema; a field missing here matches nothing.
    let spec = |name: &str| schema.field(name);
    match filter {
        Filter::And(filters) if filters.is_empty() => Box::new(AllQuery),
        Filter::And(filters) => Box::new(BooleanQuery::intersection(
            filters.iter().map(|f| filter_query(f, schema)).collect(),
        )),
        Filter::Or(filters) if filters.is_empty() => Box::new(EmptyQuery),
        Filter::Or(filters) => Box::new(BooleanQuery::union(
            filters.iter().map(|f| filter_query(f, schema)).collect(),
        )),
        Filter::Not(inner) => Box::new(BooleanQuery::new(vec![
            (Occur::Must, Box::new(AllQuery)),
            (Occur::MustNot, filter_query(inner, schema)),
        ])),
        Filter::Term { field, value } => match spec(field) {
            Some(spec) => Box::new(TermQuery::new(term(spec, value), IndexRecordOption::Basic)),
            None => Box::new(EmptyQuery),
        },
        Filter::Terms { field, values } => match spec(field) {
            Some(spec) => Box::new(TermSetQuery::new(
                values.iter().map(|value| term(spec, value)),
            )),
            None => Box::new(EmptyQuery),
        },
        Filter::Range {
            field,
            lower,
            upper,
        } => match spec(field) {
            Some(spec) => {
                let bound = |bound: &Option<(Scalar, bool)>| match bound {
                    None => Bound::Unbounded,
                    Some((value, true)) => Bound::Included(term(spec, value)),
                    Some((value, false)) => Bound::Excluded(term(spec, value)),
                };
                Box::new(RangeQuery::new(bound(lower), bound(upper)))
            }
            None => Box::new(EmptyQuery),
        },
        Filter::Exists(field) => Box::new(TermQuery::new(
            Term::from_field_text(schema.present, field),
            IndexRecordOption::Basic,
        )),
        Filter::GeoDistance {
            field,
            lat,
            lon,
            radius_m,
        } => match spec(field) {
            Some(spec) => Box::new(GeoDistanceQuery::new(spec, *lat, *lon, *radius_m)),
            None => Box::new(EmptyQuery),
        },
    }
}

/// Documents whose point lies within `radius_m` of (`lat`, `lon`): the index finds those
/// in the bounding box, the fast fields give the exact distance.
#[derive(Clone, Debug)]
pub(crate) struct GeoDistanceQuery {
    lat_column: String,
    lon_column: String,
    bbox: BooleanQuery,
    lat: f64,
    lon: f64,
    radius_m: f64,
}

impl GeoDistanceQuery {
    fn new(spec: &FieldSpec, lat: f64, lon: f64, radius_m: f64) -> Self {
        const EARTH_RADIUS_M: f64 = 6_371_008.8;
        let angle = radius_m / EARTH_RADIUS_M;
        let dlat = angle.to_degrees() + 1e-9;
        let range = |field, low: f64, high: f64| -> Box<dyn Query> {
            Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_f64(field, low)),
                Bound::Included(Term::from_field_f64(field, high)),
            ))
        };
        let mut clauses = vec![range(spec.field, lat - dlat, lat + dlat)];
        // Near a pole or across the antimeridian the box would wrap: keep all longitudes.
        if lat.abs() + dlat < 89.0 && angle < 1.0 {
            let dlon = (angle.sin() / lat.to_radians().cos()).asin().to_degrees() + 1e-9;
            if lon - dlon >= -180.0
                && lon + dlon <= 180.0
                && let Some(lon_field) = spec.lon
            {
                clauses.push(range(lon_field, lon - dlon, lon + dlon));
            }
        }
        Self {
            lat_column: spec.column(),
            lon_column: schema::geo_lon_name(&spec.name),
            bbox: BooleanQuery::intersection(clauses),
            lat,
            lon,
            radius_m,
        }
    }
}

impl Query for GeoDistanceQuery {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(GeoDistanceWeight {
            bbox: self.bbox.weight(EnableScoring::Disabled {
                schema: enable_scoring.schema(),
                searcher_opt: enable_scoring.searcher(),
            })?,
            query: self.clone(),
        }))
    }
}

struct GeoDistanceWeight {
    bbox: Box<dyn Weight>,
    query: GeoDistanceQuery,
}

impl Weight for GeoDistanceWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let fast = reader.fast_fields();
        let mut scorer = GeoDistanceScorer {
            inner: self.bbox.scorer(reader, boost)?,
            lat: fast.f64(&self.query.lat_column)?,
            lon: fast.f64(&self.query.lon_column)?,
            center: (self.query.lat, self.query.lon),
            radius_m: self.query.radius_m,
        };
        scorer.skip_outside();
        Ok(Box::new(scorer))
    }

    fn explain(&self, _reader: &SegmentReader, _doc: DocId) -> tantivy::Result<Explanation> {
        Ok(Explanation::new("geo_distance", 1.0))
    }
}

struct GeoDistanceScorer {
    inner: Box<dyn Scorer>,
    lat: tantivy::columnar::Column<f64>,
    lon: tantivy::columnar::Column<f64>,
    center: (f64, f64),
    radius_m: f64,
}

impl GeoDistanceScorer {
    fn within(&self, doc: DocId) -> bool {
        match (self.lat.first(doc), self.lon.first(doc)) {
            (Some(lat), Some(lon)) => {
                schema::distance_m(self.center.0, self.center.1, lat, lon) <= self.radius_m
            }
            _ => false,
        }
    }

    /// Moves to the first document at or after the current one that is within.
    fn skip_outside(&mut self) -> DocId {
        let mut doc = self.inner.doc();
        while doc != TERMINATED && !self.within(doc) {
            doc = self.inner.advance();
        }
        doc
    }
}

impl DocSet for GeoDistanceScorer {
    fn advance(&mut self) -> DocId {
        if self.inner.advance() == TERMINATED {
            return TERMINATED;
        }
        self.skip_outside()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.inner.doc() < target && self.inner.seek(target) == TERMINATED {
            return TERMINATED;
        }
        self.skip_outside()
    }

    fn doc(&self) -> DocId {
        self.inner.doc()
    }

    fn size_hint(&self) -> u32 {
        self.inner.size_hint()
    }
}

impl Scorer for GeoDistanceScorer {
    fn score(&mut self) -> Score {
        1.0
    }
}
