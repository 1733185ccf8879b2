//! Search correctness: random queries (text words, nested filters, ranges, geo radius,
//! sorts, facets, paging) over random doctors in three shards, each answer compared
//! with a brute-force evaluation over the source documents.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use sluice_core::config::{FieldType, IndexConfig};
use sluice_search::request::{Filter, Scalar, SearchRequest, Sort};
use sluice_search::schema::{IndexSchema, distance_m};
use sluice_search::search;
use sluice_search::shard::{Outcome, Shard, ShardState, Write};
use sluice_search::words;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const NAMES: &[&str] = &[
    "anna", "andrew", "bella", "boris", "carla", "chen", "diego", "dana",
];
const SURNAMES: &[&str] = &["smith", "smythe", "garcia", "gupta", "kim", "kowalski"];
const BIO: &[&str] = &[
    "asthma",
    "allergies",
    "skin",
    "heart",
    "sports",
    "children",
    "sleep",
];
const SPECIALTIES: &[&str] = &["Dermatology", "Cardiology", "Pediatrics", "Allergy"];
const LANGUAGES: &[&str] = &["English", "Spanish", "French", "Mandarin"];
const PLANS: &[&str] = &["P1", "P2", "P3", "P4", "P5"];

pub fn index_config() -> IndexConfig {
    serde_json::from_value(json!({
        "name": "doctors",
        "source": "doctor",
        "fields": {
            "name": {"type": "text", "autocomplete": true},
            "bio": {"type": "text"},
            "specialty": {"type": "keyword"},
            "languages": {"type": "keyword"},
            "plans": {"type": "keyword", "path": "/insurance/plans"},
            "rating": {"type": "float"},
            "years": {"type": "integer"},
            "active": {"type": "bool"},
            "next_slot": {"type": "date"},
            "location": {"type": "geo"}
        }
    }))
    .expect("a valid index config")
}

fn doctor(rng: &mut Rng, id: u64) -> Value {
    let mut doc = serde_json::Map::new();
    doc.insert("doctor_id".into(), json!(id));
    doc.insert(
        "name".into(),
        json!(format!("{} {}", rng.pick(NAMES), rng.pick(SURNAMES))),
    );
    let bio: Vec<&str> = (0..1 + rng.below(4)).map(|_| *rng.pick(BIO)).collect();
    doc.insert("bio".into(), json!(bio.join(" ")));
    doc.insert("specialty".into(), json!(rng.pick(SPECIALTIES)));
    let languages: Vec<&str> = LANGUAGES
        .iter()
        .copied()
        .filter(|_| rng.chance(40))
        .collect();
    doc.insert("languages".into(), json!(languages));
    if rng.chance(80) {
        let plans: Vec<&str> = PLANS.iter().copied().filter(|_| rng.chance(35)).collect();
        doc.insert("insurance".into(), json!({"plans": plans}));
    }
    if rng.chance(85) {
        doc.insert("rating".into(), json!((10 + rng.below(41)) as f64 / 10.0));
    }
    if rng.chance(90) {
        doc.insert("years".into(), json!(rng.below(40) as i64));
    }
    doc.insert("active".into(), json!(rng.chance(80)));
    if rng.chance(85) {
        let day = 1 + rng.below(10);
        let hour = rng.below(24);
        doc.insert(
            "next_slot".into(),
            json!(format!("2026-12-{day:02}T{hour:02}:00:00Z")),
        );
    }
    if rng.chance(90) {
        let lat = 40.60 + rng.below(3_000) as f64 / 10_000.0;
        let lon = -74.10 + rng.below(3_000) as f64 / 10_000.0;
        if rng.chance(50) {
            doc.insert("location".into(), json!({"lat": lat, "lon": lon}));
        } else {
            doc.insert("location".into(), json!([lat, lon]));
        }
    }
    if rng.chance(3) {
        // Wrong types: indexed without the field.
        doc.insert("rating".into(), json!("excellent"));
    }
    Value::Object(doc)
}

/// A field's typed values in a source document, as the index should see them.
fn values(doc: &Value, schema: &IndexSchema, name: &str) -> Vec<Value> {
    let Some(spec) = schema.field(name) else {
        return Vec::new();
    };
    let Some(value) = spec.pointer.get(doc) else {
        return Vec::new();
    };
    let ok = match spec.field_type {
        FieldType::Float => value.is_number(),
        FieldType::Integer => value.is_i64(),
        FieldType::Bool => value.is_boolean(),
        FieldType::Date => value.is_string(),
        _ => true,
    };
    if !ok || value.is_null() {
        return Vec::new();
    }
    match value {
        Value::Array(items) if spec.field_type != FieldType::Geo => {
            items.iter().filter(|v| !v.is_null()).cloned().collect()
        }
        other => vec![other.clone()],
    }
}

fn date_ms(text: &str) -> i64 {
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("test dates are valid");
    (parsed.unix_timestamp_nanos() / 1_000_000) as i64
}

fn number(value: &Value, field_type: FieldType) -> Option<f64> {
    match field_type {
        FieldType::Date => value.as_str().map(|text| date_ms(text) as f64),
        _ => value.as_f64(),
    }
}

fn point(value: &Value) -> Option<(f64, f64)> {
    match value {
        Value::Object(m) => Some((m.get("lat")?.as_f64()?, m.get("lon")?.as_f64()?)),
        Value::Array(items) => Some((items.first()?.as_f64()?, items.get(1)?.as_f64()?)),
        _ => None,
    }
}

fn scalar_matches(value: &Value, scalar: &Scalar, field_type: FieldType) -> bool {
    match scalar {
        Scalar::Text(text) => match value {
            Value::String(s) => s == text,
            other => &other.to_string() == text,
        },
        Scalar::Bool(flag) => value.as_bool() == Some(*flag),
        Scalar::Integer(_) | Scalar::Float(_) => number(value, field_type) == scalar.as_f64(),
    }
}

fn eval(filter: &Filter, doc: &Value, schema: &IndexSchema) -> bool {
    let field_type = |name: &str| {
        schema
            .field(name)
            .map(|f| f.field_type)
            .unwrap_or(FieldType::Text)
    };
    match filter {
        Filter::And(filters) => filters.iter().all(|f| eval(f, doc, schema)),
        Filter::Or(filters) => filters.iter().any(|f| eval(f, doc, schema)),
        Filter::Not(inner) => !eval(inner, doc, schema),
        Filter::Term { field, value } => values(doc, schema, field)
            .iter()
            .any(|v| scalar_matches(v, value, field_type(field))),
        Filter::Terms {
            field,
            values: wanted,
        } => values(doc, schema, field).iter().any(|v| {
            wanted
                .iter()
                .any(|w| scalar_matches(v, w, field_type(field)))
        }),
        Filter::Range {
            field,
            lower,
            upper,
        } => values(doc, schema, field).iter().any(|v| {
            let Some(x) = number(v, field_type(field)) else {
                return false;
            };
            let low_ok = lower.as_ref().is_none_or(|(bound, inclusive)| {
                let b = bound.as_f64().unwrap_or(f64::NAN);
                if *inclusive { x >= b } else { x > b }
            });
            let high_ok = upper.as_ref().is_none_or(|(bound, inclusive)| {
                let b = bound.as_f64().unwrap_or(f64::NAN);
                if *inclusive { x <= b } else { x < b }
            });
            low_ok && high_ok
        }),
        Filter::Exists(field) => !values(doc, schema, field).is_empty(),
        Filter::GeoDistance {
            field,
            lat,
            lon,
            radius_m,
        } => values(doc, schema, field)
            .first()
            .and_then(point)
            .is_some_and(|(plat, plon)| distance_m(*lat, *lon, plat, plon) <= *radius_m),
    }
}

fn text_matches(doc: &Value, schema: &IndexSchema, q_words: &[String], all: bool) -> bool {
    let per_word = |word: &String| {
        schema
            .fields
            .iter()
            .filter(|f| f.field_type == FieldType::Text)
            .any(|f| {
                values(doc, schema, &f.name).iter().any(|v| {
                    words(v.as_str().unwrap_or_default())
                        .iter()
                        .any(|w| w == word || (f.autocomplete && w.starts_with(word.as_str())))
                })
            })
    };
    if all {
        q_words.iter().all(per_word)
    } else {
        q_words.iter().any(per_word)
    }
}

fn random_scalar(rng: &mut Rng, field: &str) -> Value {
    match field {
        "specialty" => json!(rng.pick(SPECIALTIES)),
        "languages" => json!(rng.pick(LANGUAGES)),
        "plans" => json!(rng.pick(PLANS)),
        "rating" => json!((10 + rng.below(41)) as f64 / 10.0),
        "years" => json!(rng.below(40)),
        "active" => json!(rng.chance(50)),
        _ => json!(format!(
            "2026-12-{:02}T{:02}:00:00Z",
            1 + rng.below(10),
            rng.below(24)
        )),
    }
}

fn random_filter(rng: &mut Rng, depth: u32) -> Value {
    let choice = if depth >= 3 {
        3 + rng.below(6)
    } else {
        rng.below(9)
    };
    match choice {
        0 => {
            json!({"and": (0..1 + rng.below(3)).map(|_| random_filter(rng, depth + 1)).collect::<Vec<_>>()})
        }
        1 => {
            json!({"or": (0..1 + rng.below(3)).map(|_| random_filter(rng, depth + 1)).collect::<Vec<_>>()})
        }
        2 => json!({"not": random_filter(rng, depth + 1)}),
        3 | 4 => {
            let field = *rng.pick(&[
                "specialty",
                "languages",
                "plans",
                "active",
                "years",
                "rating",
            ]);
            json!({"term": {field: random_scalar(rng, field)}})
        }
        5 => {
            let field = *rng.pick(&["specialty", "languages", "plans"]);
            let values: Vec<Value> = (0..1 + rng.below(3))
                .map(|_| random_scalar(rng, field))
                .collect();
            json!({"terms": {field: values}})
        }
        6 => {
            let field = *rng.pick(&["rating", "years", "next_slot"]);
            let mut bounds = serde_json::Map::new();
            if rng.chance(70) {
                bounds.insert(
                    (*rng.pick(&["gt", "gte"])).into(),
                    random_scalar(rng, field),
                );
            }
            if bounds.is_empty() || rng.chance(50) {
                bounds.insert(
                    (*rng.pick(&["lt", "lte"])).into(),
                    random_scalar(rng, field),
                );
            }
            json!({"range": {field: bounds}})
        }
        7 => json!({"exists": rng.pick(&["rating", "plans", "location", "next_slot", "name"])}),
        _ => json!({"geo_distance": {
            "field": "location",
            "lat": 40.60 + rng.below(3_000) as f64 / 10_000.0,
            "lon": -74.10 + rng.below(3_000) as f64 / 10_000.0,
            "radius_m": 500 + rng.below(8_000)
        }}),
    }
}

fn random_request(rng: &mut Rng) -> Value {
    let mut request = serde_json::Map::new();
    if rng.chance(50) {
        let mut q: Vec<String> = Vec::new();
        for _ in 0..1 + rng.below(2) {
            let word = match rng.below(3) {
                0 => rng.pick(BIO).to_string(),
                1 => rng.pick(SURNAMES).to_string(),
                // A prefix: matches on the autocomplete name only.
                _ => rng.pick(NAMES)[..2].to_string(),
            };
            q.push(word);
        }
        request.insert("q".into(), json!(q.join(" ")));
        if rng.chance(30) {
            request.insert("q_operator".into(), json!("or"));
        }
    }
    if rng.chance(80) {
        request.insert("filter".into(), random_filter(rng, 0));
    }
    match rng.below(4) {
        0 => {}
        1 => {
            let field = *rng.pick(&["rating", "years", "next_slot"]);
            request.insert("sort".into(), json!([{field: rng.pick(&["asc", "desc"])}]));
        }
        2 => {
            request.insert(
                "sort".into(),
                json!([{"_geo_distance": {"field": "location", "lat": 40.7, "lon": -74.0,
                        "order": rng.pick(&["asc", "desc"])}}]),
            );
        }
        _ => {
            request.insert("sort".into(), json!([{"rating": "desc"}]));
        }
    }
    if rng.chance(60) {
        request.insert("facets".into(), json!(["specialty", "languages"]));
    }
    request.insert("limit".into(), json!(1 + rng.below(30)));
    request.insert("offset".into(), json!(rng.below(40)));
    Value::Object(request)
}

/// The value a hit is sorted by, as the brute force computes it (smaller first).
fn sort_value(doc: &Value, schema: &IndexSchema, sort: &Sort) -> f64 {
    match sort {
        Sort::Field { field, descending } => {
            let spec = schema.field(field).expect("sorted field");
            match values(doc, schema, field)
                .first()
                .and_then(|v| number(v, spec.field_type))
            {
                Some(x) if *descending => -x,
                Some(x) => x,
                None => f64::INFINITY,
            }
        }
        Sort::GeoDistance {
            field,
            lat,
            lon,
            descending,
        } => match values(doc, schema, field).first().and_then(point) {
            Some((plat, plon)) => {
                let d = distance_m(*lat, *lon, plat, plon);
                if *descending { -d } else { d }
            }
            None => f64::INFINITY,
        },
        _ => 0.0,
    }
}

fn open_shards(dir: &std::path::Path, schema: &Arc<IndexSchema>, count: usize) -> Vec<Arc<Shard>> {
    (0..count)
        .map(|n| {
            let (shard, _) =
                Shard::open(&dir.join(format!("p{n}")), Arc::clone(schema), 15 << 20, 32)
                    .expect("open shard");
            Arc::new(shard)
        })
        .collect()
}

#[test]
fn random_queries_agree_with_a_brute_force_evaluation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = Arc::new(IndexSchema::new(&index_config()));
    let shards = open_shards(dir.path(), &schema, 3);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut source: BTreeMap<u64, Value> = BTreeMap::new();
    // Three rounds of writes (creates, updates, deletes), each committed, so that the
    // index has several segments, replaced documents and tombstones.
    let mut version = 0;
    for round in 0..3 {
        let mut writes: Vec<Vec<Write>> = vec![Vec::new(); shards.len()];
        for _ in 0..400 {
            let id = rng.below(600);
            version += 1;
            let shard = (id % shards.len() as u64) as usize;
            if round > 0 && rng.chance(10) {
                source.remove(&id);
                writes[shard].push(Write::Delete {
                    key: id.to_string(),
                    version,
                });
            } else {
                let doc = doctor(&mut rng, id);
                writes[shard].push(Write::Upsert {
                    key: id.to_string(),
                    version,
                    doc: serde_json::to_vec(&doc).expect("json"),
                });
                source.insert(id, doc);
            }
        }
        for (shard, writes) in shards.iter().zip(writes) {
            // Each key at most once per batch here: a later write of the same key in the
            // same batch is newer and must win, which `write` guarantees in order.
            let (outcomes, _) = shard.write(&writes).expect("write");
            assert!(outcomes.iter().all(|o| *o == Outcome::Applied));
            shard.commit(&ShardState::default()).expect("commit");
        }
    }
    let documents: u64 = shards.iter().map(|s| s.documents()).sum();
    assert_eq!(documents, source.len() as u64);
    for round in 0..400 {
        let body = random_request(&mut rng);
        let request = SearchRequest::parse(&body, &schema, 1_000, 10_000)
            .unwrap_or_else(|error| panic!("request {body} refused: {error}"));
        let answer = search::search(&shards, &schema, &request).expect("search");
        let q_words = request.q.as_deref().map(words).unwrap_or_default();
        let mut matching: Vec<(&u64, &Value)> = source
            .iter()
            .filter(|(_, doc)| {
                q_words.is_empty() || text_matches(doc, &schema, &q_words, request.q_all)
            })
            .filter(|(_, doc)| {
                request
                    .filter
                    .as_ref()
                    .is_none_or(|f| eval(f, doc, &schema))
            })
            .collect();
        let context = format!("round {round}, request {body}");
        assert_eq!(answer["total"], json!(matching.len()), "{context}");
        for facet in &request.facets {
            let mut counts: HashMap<String, u64> = HashMap::new();
            for (_, doc) in &matching {
                for value in values(doc, &schema, facet) {
                    *counts
                        .entry(value.as_str().unwrap_or_default().to_owned())
                        .or_default() += 1;
                }
            }
            let expected: serde_json::Map<String, Value> =
                counts.into_iter().map(|(k, v)| (k, json!(v))).collect();
            assert_eq!(
                answer["facets"][facet],
                Value::Object(expected),
                "{context}"
            );
        }
        let hits = answer["hits"].as_array().expect("hits");
        let expected_len = matching
            .len()
            .saturating_sub(request.offset)
            .min(request.limit);
        assert_eq!(hits.len(), expected_len, "{context}");
        let keys: Vec<u64> = hits
            .iter()
            .map(|h| h["key"].as_u64().expect("key"))
            .collect();
        for (hit, key) in hits.iter().zip(&keys) {
            let doc = source
                .get(key)
                .unwrap_or_else(|| panic!("{context}: hit {key} is not a source document"));
            assert!(
                matching.iter().any(|(k, _)| *k == key),
                "{context}: hit {key} does not match"
            );
            assert_eq!(hit["doc"]["name"], doc["name"], "{context}");
        }
        if matches!(request.sort, Sort::Field { .. } | Sort::GeoDistance { .. }) {
            matching.sort_by(|a, b| {
                sort_value(a.1, &schema, &request.sort).total_cmp(&sort_value(
                    b.1,
                    &schema,
                    &request.sort,
                ))
            });
            let expected: Vec<f64> = matching
                .iter()
                .skip(request.offset)
                .take(request.limit)
                .map(|(_, doc)| sort_value(doc, &schema, &request.sort))
                .collect();
            let got: Vec<f64> = keys
                .iter()
                .map(|key| sort_value(&source[key], &schema, &request.sort))
                .collect();
            assert_eq!(got, expected, "{context}");
        }
        if matches!(request.sort, Sort::Relevance) {
            let scores: Vec<f64> = hits
                .iter()
                .map(|h| h["score"].as_f64().expect("score"))
                .collect();
            assert!(
                scores.windows(2).all(|w| w[0] >= w[1]),
                "{context}: scores {scores:?}"
            );
        }
    }
}

#[test]
fn bad_requests_name_the_problem() {
    let schema = IndexSchema::new(&index_config());
    for (body, expected) in [
        (
            json!({"filter": {"term": {"nope": 1}}}),
            "unknown field \"nope\"",
        ),
        (
            json!({"filter": {"range": {"specialty": {"gte": 1}}}}),
            "ranges apply to",
        ),
        (
            json!({"filter": {"term": {"rating": "high"}}}),
            "expected a number",
        ),
        (json!({"filter": {"term": {"bio": "x"}}}), "is text"),
        (json!({"limit": 5000}), "search_limit_max"),
        (json!({"offset": 50000}), "search_offset_max"),
        (
            json!({"filter": {"geo_distance": {"field": "location", "lat": 91, "lon": 0, "radius_m": 10}}}),
            "out of range",
        ),
        (
            json!({"filter": {"geo_distance": {"field": "rating", "lat": 1, "lon": 0, "radius_m": 10}}}),
            "not geo",
        ),
        (
            json!({"sort": [{"specialty": "asc"}]}),
            "sort by an integer",
        ),
        (json!({"facets": ["rating"]}), "facets count keyword"),
        (json!({"filter": {"xor": []}}), "unknown filter"),
        (json!({"q": 3}), "q must be a string"),
        (
            json!({"filter": {"range": {"next_slot": {"lte": "tomorrow"}}}}),
            "RFC 3339",
        ),
        (json!([1]), "JSON object"),
        (json!({"what": 1}), "unknown member"),
    ] {
        let error = SearchRequest::parse(&body, &schema, 1_000, 10_000)
            .expect_err(&format!("{body} should be refused"));
        assert!(
            error.0.contains(expected),
            "{body}: {error} should say {expected:?}"
        );
    }
}

#[test]
fn autocomplete_completes_every_word() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = Arc::new(IndexSchema::new(&index_config()));
    let shards = open_shards(dir.path(), &schema, 2);
    let names = ["John Smith", "Joanna Smythe", "John Garcia", "Bella Smith"];
    for (id, name) in names.iter().enumerate() {
        let shard = &shards[id % 2];
        let doc = json!({"name": name});
        shard
            .write(&[Write::Upsert {
                key: id.to_string(),
                version: 1,
                doc: serde_json::to_vec(&doc).expect("json"),
            }])
            .expect("write");
    }
    for shard in &shards {
        shard.commit(&ShardState::default()).expect("commit");
    }
    let complete = |prefix: &str| {
        search::autocomplete(&shards, &schema, "name", prefix, 10)
            .expect("search")
            .expect("valid")["suggestions"]
            .clone()
    };
    assert_eq!(complete("jo sm"), json!(["John Smith", "Joanna Smythe"]));
    assert_eq!(complete("john"), json!(["John Smith", "John Garcia"]));
    assert_eq!(complete("smi"), json!(["John Smith", "Bella Smith"]));
    assert_eq!(complete("zz"), json!([]));
    assert!(
        search::autocomplete(&shards, &schema, "bio", "a", 10)
            .expect("search")
            .is_err()
    );
}
