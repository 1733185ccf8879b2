//! `sluice get`, `sluice export` and `sluice subscriptions`: over HTTP when a server holds
//! the data directory, on the directory itself when none does. Both ways print the same.

use crate::client::{Reach, ServerArgs, SourceArgs, reach};
use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;

/// Documents per page of `export` over HTTP.
const EXPORT_PAGE_DOCS: usize = 1_000;
/// Documents per read of `export` from the data directory.
const EXPORT_READ_DOCS: usize = 10_000;

pub fn get(
    source: &SourceArgs,
    server: &ServerArgs,
    collection: &str,
    key: &[String],
) -> Result<()> {
    let out = match reach(source, server)? {
        Reach::Server(client) => {
            let mut segments = vec!["v1", "collections", collection, "docs"];
            segments.extend(key.iter().map(String::as_str));
            let url = client.url(&segments, &[]);
            client.call(Method::GET, url, None)?.json()?
        }
        Reach::Local { engine, .. } => {
            let spec = engine.collection(collection)?;
            let segments: Vec<&str> = key.iter().map(String::as_str).collect();
            let key = sluice_core::Key::from_segments(&segments, spec.key.len())?;
            let Some(stored) = engine.get(collection, &key)? else {
                bail!("no document {key} in {collection}");
            };
            let doc: Value = serde_json::from_slice(&stored.doc)?;
            let version = stored
                .version
                .map_or(Value::Null, sluice_core::Version::to_json);
            json!({"key": stored.key, "version": version, "doc": doc})
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub fn export(source: &SourceArgs, server: &ServerArgs, collection: &str) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut after: Option<String> = None;
    match reach(source, server)? {
        Reach::Server(client) => loop {
            let limit = EXPORT_PAGE_DOCS.to_string();
            let mut query = vec![("limit", limit.as_str())];
            if let Some(after) = &after {
                query.push(("after", after));
            }
            let url = client.url(&["v1", "collections", collection, "docs"], &query);
            let page = client.call(Method::GET, url, None)?.json()?;
            let docs = page["docs"]
                .as_array()
                .context("the server's page has no docs")?;
            for doc in docs {
                serde_json::to_writer(&mut out, &doc["doc"])?;
                out.write_all(b"\n")?;
            }
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        },
        Reach::Local { engine, .. } => loop {
            let (docs, next) = engine.list(collection, after.as_deref(), EXPORT_READ_DOCS)?;
            for stored in &docs {
                out.write_all(&stored.doc)?;
                out.write_all(b"\n")?;
            }
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        },
    }
    out.flush()?;
    Ok(())
}

pub fn subscriptions(source: &SourceArgs, server: &ServerArgs) -> Result<()> {
    let subscriptions: Vec<Value> = match reach(source, server)? {
        Reach::Server(client) => {
            let url = client.url(&["v1", "subscriptions"], &[]);
            let list = client.call(Method::GET, url, None)?.json()?;
            list["subscriptions"]
                .as_array()
                .context("the server's answer has no subscriptions")?
                .clone()
        }
        Reach::Local { engine, .. } => engine
            .subscriptions()?
            .into_iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?,
    };
    if subscriptions.is_empty() {
        println!("no subscriptions");
        return Ok(());
    }
    println!(
        "{:<24} {:<16} {:<20} {:>12}  position",
        "name", "collection", "changed_path", "lag_records"
    );
    for subscription in &subscriptions {
        let text = |field: &str| subscription[field].as_str().unwrap_or("*").to_owned();
        println!(
            "{:<24} {:<16} {:<20} {:>12}  {}",
            text("name"),
            text("collection"),
            text("changed_path"),
            subscription["lag_records"].as_u64().unwrap_or_default(),
            text("position"),
        );
    }
    Ok(())
}
