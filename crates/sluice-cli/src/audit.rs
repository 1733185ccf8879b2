//! `sluice audit`: compares a collection with its source of truth, a PostgreSQL query.
//! Both sides stream in key order (Sluice's order: the key's text, byte by byte, field
//! after field; PostgreSQL's `ORDER BY key::text COLLATE "C"` is the same order), so
//! memory holds a page of each side, whatever the table's size. Reports documents missing
//! from Sluice, extra in Sluice, and differing, with counts, a sample of each and the
//! differing fields.

use crate::client::{Client, Reach, ServerArgs, SourceArgs, reach};
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use std::cmp::Ordering;
use std::collections::VecDeque;

/// Source rows fetched per round trip (a server-side portal: bounded memory).
const SOURCE_BATCH_ROWS: i32 = 10_000;
/// Documents per page read from Sluice.
const DOCS_PAGE: usize = 5_000;

pub struct AuditOptions<'a> {
    pub collection: &'a str,
    pub source_url: &'a str,
    pub query: &'a str,
    /// Fields to compare (top-level names, or JSON pointers); default: every column of
    /// the query but the key's.
    pub fields: Option<&'a [String]>,
    pub sample_max: usize,
    pub json: bool,
}

/// One side's row: the key's text per field (what both sides are ordered by), the key as
/// JSON (for the report), and the fields.
struct Row {
    key_texts: Vec<String>,
    key: Value,
    fields: Map<String, Value>,
}

#[derive(Default, serde::Serialize)]
struct Tally {
    count: u64,
    sample: Vec<Value>,
}

impl Tally {
    fn add(&mut self, sample_max: usize, item: impl FnOnce() -> Value) {
        self.count += 1;
        if self.sample.len() < sample_max {
            self.sample.push(item());
        }
    }
}

#[derive(Default, serde::Serialize)]
pub struct Report {
    source_rows: u64,
    documents: u64,
    matching: u64,
    /// In the source, not in Sluice.
    missing: Tally,
    /// In Sluice, not in the source.
    extra: Tally,
    differing: Tally,
    /// Per field, how many documents differ in it.
    differing_fields: std::collections::BTreeMap<String, u64>,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.missing.count == 0 && self.extra.count == 0 && self.differing.count == 0
    }
}

/// Runs the audit and prints its report; `Ok(false)` when anything differs.
pub fn run(source: &SourceArgs, server: &ServerArgs, options: &AuditOptions<'_>) -> Result<bool> {
    let started = std::time::Instant::now();
    // The key's fields name the source's key columns (the last token of each pointer).
    let Some(config) = &source.config else {
        bail!("audit needs --config: the collection's key fields name the source's key columns");
    };
    let (config, _) = crate::load_config(&crate::ConfigArgs {
        config: config.clone(),
        data_dir: source.data_dir.clone(),
    })?;
    let collection = config
        .collection(options.collection)
        .with_context(|| format!("no collection {:?} in the config", options.collection))?;
    let key_columns: Vec<String> = collection
        .key
        .iter()
        .map(|pointer| column_of(pointer))
        .collect();
    let report = match reach(source, server)? {
        Reach::Server(client) => client.block_on(audit(
            &mut Docs::Server(&client, None),
            &key_columns,
            options,
        ))?,
        Reach::Local { engine, .. } => crate::runtime()?.block_on(audit(
            &mut Docs::Local(&engine, None),
            &key_columns,
            options,
        ))?,
    };
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, options, started.elapsed().as_secs_f64());
    }
    Ok(report.clean())
}

/// Where Sluice's documents come from, page by page in key order (`after` cursor).
enum Docs<'a> {
    Local(&'a sluice_engine::Engine, Option<String>),
    Server(&'a Client, Option<String>),
}

impl Docs<'_> {
    /// The next page (empty when done).
    async fn next_page(&mut self, collection: &str, done: &mut bool) -> Result<Vec<Row>> {
        if *done {
            return Ok(Vec::new());
        }
        let mut rows = Vec::new();
        match self {
            Docs::Local(engine, after) => {
                let (docs, next) = engine.list(collection, after.as_deref(), DOCS_PAGE)?;
                for stored in docs {
                    let doc: Map<String, Value> = serde_json::from_slice(&stored.doc)
                        .context("a stored document is not a JSON object")?;
                    rows.push(row_of(stored.key, doc));
                }
                *done = next.is_none();
                *after = next;
            }
            Docs::Server(client, after) => {
                let limit = DOCS_PAGE.to_string();
                let mut query = vec![("limit", limit.as_str())];
                if let Some(after) = after.as_deref() {
                    query.push(("after", after));
                }
                let url = client.url(&["v1", "collections", collection, "docs"], &query);
                let response = client.send(reqwest::Method::GET, url, None).await?;
                let bytes = response.bytes().await.context("a page of documents")?;
                let mut page: Value =
                    serde_json::from_slice(&bytes).context("a page of documents")?;
                let Some(docs) = page["docs"].as_array_mut() else {
                    bail!("the server's page has no docs");
                };
                for item in docs.iter_mut() {
                    let key = item["key"].take();
                    let Value::Object(doc) = item["doc"].take() else {
                        bail!("a document of the server's page is not an object");
                    };
                    rows.push(row_of(key, doc));
                }
                let next = page["next"].as_str().map(str::to_owned);
                *done = next.is_none();
                *after = next;
            }
        }
        Ok(rows)
    }
}

fn row_of(key: Value, fields: Map<String, Value>) -> Row {
    let key_texts = match &key {
        Value::Array(parts) => parts.iter().map(key_text).collect(),
        single => vec![key_text(single)],
    };
    Row {
        key_texts,
        key,
        fields,
    }
}

/// A key field's text: what identity and order are made of.
fn key_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Compares key texts the way the store orders keys: field by field, bytes.
fn compare_keys(a: &[String], b: &[String]) -> Ordering {
    a.iter()
        .map(|text| text.as_bytes())
        .cmp(b.iter().map(|text| text.as_bytes()))
}

async fn audit(
    docs: &mut Docs<'_>,
    key_columns: &[String],
    options: &AuditOptions<'_>,
) -> Result<Report> {
    let (mut pg, connection) = tokio_postgres::connect(options.source_url, tokio_postgres::NoTls)
        .await
        .map_err(|error| {
            crate::client::Unreachable(format!(
                "the source database {} does not answer ({error}): check --source",
                redact(options.source_url)
            ))
        })?;
    let connection = tokio::spawn(connection);
    let order: Vec<String> = key_columns
        .iter()
        .map(|column| format!("({}::text) COLLATE \"C\"", quote(column)))
        .collect();
    let texts: Vec<String> = key_columns
        .iter()
        .map(|column| format!("{}::text", quote(column)))
        .collect();
    let sql = format!(
        "SELECT to_jsonb(sluice_source), {} FROM ({}) AS sluice_source ORDER BY {}",
        texts.join(", "),
        options.query,
        order.join(", ")
    );
    let transaction = pg
        .transaction()
        .await
        .context("starting a read transaction")?;
    let statement = transaction
        .prepare(&sql)
        .await
        .with_context(|| format!("the source query (as run: {sql})"))?;
    let portal = transaction
        .bind(&statement, &[])
        .await
        .context("running the source query")?;
    let mut report = Report::default();
    let mut source: VecDeque<Row> = VecDeque::new();
    let mut source_done = false;
    let mut sluice: VecDeque<Row> = VecDeque::new();
    let mut sluice_done = false;
    let mut previous_source: Option<Vec<String>> = None;
    loop {
        if source.is_empty() && !source_done {
            let rows = transaction
                .query_portal(&portal, SOURCE_BATCH_ROWS)
                .await
                .context("reading the source query's rows")?;
            source_done = rows.is_empty();
            for row in rows {
                let fields: Value = row.try_get(0).context("a source row as JSON")?;
                let Value::Object(fields) = fields else {
                    bail!("a source row is not a JSON object");
                };
                let mut key_texts = Vec::with_capacity(key_columns.len());
                for (index, column) in key_columns.iter().enumerate() {
                    let text: Option<String> = row
                        .try_get(index + 1)
                        .context("a source row's key column")?;
                    let Some(text) = text else {
                        bail!("a source row has a null {column}: every row needs its key");
                    };
                    key_texts.push(text);
                }
                if let Some(previous) = &previous_source
                    && compare_keys(previous, &key_texts) != Ordering::Less
                {
                    bail!(
                        "the source query returns key {} twice: a collection holds one document per key",
                        key_texts.join("/")
                    );
                }
                previous_source = Some(key_texts.clone());
                let key = match key_columns.len() {
                    1 => fields.get(&key_columns[0]).cloned().unwrap_or(Value::Null),
                    _ => Value::Array(
                        key_columns
                            .iter()
                            .map(|column| fields.get(column).cloned().unwrap_or(Value::Null))
                            .collect(),
                    ),
                };
                source.push_back(Row {
                    key_texts,
                    key,
                    fields,
                });
            }
        }
        if sluice.is_empty() && !sluice_done {
            sluice.extend(docs.next_page(options.collection, &mut sluice_done).await?);
        }
        let ordering = match (source.front(), sluice.front()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(expected), Some(found)) => compare_keys(&expected.key_texts, &found.key_texts),
        };
        match ordering {
            Ordering::Less => {
                if let Some(expected) = source.pop_front() {
                    report.source_rows += 1;
                    report
                        .missing
                        .add(options.sample_max, || expected.key.clone());
                }
            }
            Ordering::Greater => {
                if let Some(found) = sluice.pop_front() {
                    report.documents += 1;
                    report.extra.add(options.sample_max, || found.key.clone());
                }
            }
            Ordering::Equal => {
                if let (Some(expected), Some(found)) = (source.pop_front(), sluice.pop_front()) {
                    report.source_rows += 1;
                    report.documents += 1;
                    compare(&expected, &found, key_columns, options, &mut report);
                }
            }
        }
    }
    drop(portal);
    transaction
        .commit()
        .await
        .context("ending the read transaction")?;
    drop(pg);
    let _ = connection.await;
    Ok(report)
}

/// The source column of a key field: the last token of its pointer (`/doctor_id`).
fn column_of(pointer: &str) -> String {
    pointer
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .replace("~1", "/")
        .replace("~0", "~")
}

fn compare(
    expected: &Row,
    found: &Row,
    key_columns: &[String],
    options: &AuditOptions<'_>,
    report: &mut Report,
) {
    let names: Vec<&str> = match options.fields {
        Some(fields) => fields.iter().map(String::as_str).collect(),
        None => expected
            .fields
            .keys()
            .map(String::as_str)
            .filter(|name| !key_columns.iter().any(|key| key == name))
            .collect(),
    };
    let mut differences = Vec::new();
    for name in names {
        let source = lookup(&expected.fields, name);
        let sluice = lookup(&found.fields, name);
        if !same(source, sluice) {
            differences.push(json!({"field": name, "source": source, "sluice": sluice}));
        }
    }
    if differences.is_empty() {
        report.matching += 1;
        return;
    }
    for difference in &differences {
        if let Some(field) = difference["field"].as_str() {
            *report.differing_fields.entry(field.to_owned()).or_default() += 1;
        }
    }
    report.differing.add(
        options.sample_max,
        || json!({"key": found.key, "fields": differences}),
    );
}

/// A field by top-level name, or by JSON pointer (`/address/city`).
fn lookup<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if name.starts_with('/') {
        let mut value: Option<&Value> = None;
        for (index, token) in name.split('/').skip(1).enumerate() {
            let token = token.replace("~1", "/").replace("~0", "~");
            value = match (index, value) {
                (0, _) => fields.get(&token),
                (_, Some(Value::Object(map))) => map.get(&token),
                (_, Some(Value::Array(items))) => {
                    token.parse::<usize>().ok().and_then(|at| items.get(at))
                }
                _ => None,
            };
        }
        value
    } else {
        fields.get(name)
    }
}

/// Equal as data: a missing field is null; numbers compare by value (17 = 17.0).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    let a = a.unwrap_or(&Value::Null);
    let b = b.unwrap_or(&Value::Null);
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The source URL without its password, for messages.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(the --source URL)".to_owned(),
    }
}

fn print_report(report: &Report, options: &AuditOptions<'_>, seconds: f64) {
    println!(
        "audit of {} against {}: {} source rows, {} documents, in {seconds:.1} s",
        options.collection,
        redact(options.source_url),
        report.source_rows,
        report.documents
    );
    println!("  matching   {}", report.matching);
    let sample = |tally: &Tally| -> String {
        if tally.sample.is_empty() {
            return String::new();
        }
        let keys: Vec<String> = tally
            .sample
            .iter()
            .map(|item| item.get("key").unwrap_or(item).to_string())
            .collect();
        format!("   e.g. {}", keys.join(", "))
    };
    println!(
        "  missing    {}   (in the source, not in Sluice){}",
        report.missing.count,
        sample(&report.missing)
    );
    println!(
        "  extra      {}   (in Sluice, not in the source){}",
        report.extra.count,
        sample(&report.extra)
    );
    println!(
        "  differing  {}{}",
        report.differing.count,
        sample(&report.differing)
    );
    for (field, count) in &report.differing_fields {
        println!("    {field}: {count}");
    }
    for item in &report.differing.sample {
        if let Some(fields) = item["fields"].as_array() {
            for field in fields {
                println!(
                    "    {} {}: source {} / sluice {}",
                    item["key"], field["field"], field["source"], field["sluice"]
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_the_stores_order() {
        let key = |parts: &[&str]| {
            parts
                .iter()
                .map(|part| (*part).to_owned())
                .collect::<Vec<_>>()
        };
        // Textual: "10" before "9", as the store keeps them.
        assert_eq!(compare_keys(&key(&["10"]), &key(&["9"])), Ordering::Less);
        assert_eq!(
            compare_keys(&key(&["a", "z"]), &key(&["ab", "a"])),
            Ordering::Less
        );
        assert_eq!(compare_keys(&key(&["a"]), &key(&["a"])), Ordering::Equal);
        assert_eq!(row_of(json!(17), Map::new()).key_texts, ["17"]);
        assert_eq!(row_of(json!([17, "x"]), Map::new()).key_texts, ["17", "x"]);
    }

    #[test]
    fn values_compare_as_data() {
        assert!(same(Some(&json!(17)), Some(&json!(17.0))));
        assert!(same(None, Some(&Value::Null)));
        assert!(!same(Some(&json!("17")), Some(&json!(17))));
        let doc = json!({"address": {"city": "Chicago"}});
        let Value::Object(doc) = doc else {
            unreachable!()
        };
        assert_eq!(lookup(&doc, "/address/city"), Some(&json!("Chicago")));
        assert_eq!(
            redact("postgres://u:secret@127.0.0.1/db"),
            "postgres://u:***@127.0.0.1/db"
        );
    }
}
