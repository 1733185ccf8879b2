//! `sluice demo`: the healthcare example on a fresh data directory, fed by the generator.

use crate::{generator, open_engine, runtime, serve_with_connectors};
use anyhow::{Context, Result, bail};
use sluice_core::Config;
use sluice_engine::{Engine, input};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const EXAMPLE_CONFIG: &str = include_str!("../../../examples/healthcare/sluice.toml");
/// The example's projection script, written beside the demo's data: the config names it
/// relative to the config file, and the demo's config is built in.
const EXAMPLE_PROFILE_SCRIPT: &str =
    include_str!("../../../examples/healthcare/projections/doctor_profile.js");
/// One event in this many is sent without its key, to show the rejected log.
const BAD_EVENT_EVERY: u64 = 500;
const TICK_MS: u64 = 100;

pub fn run(
    data_dir: Option<PathBuf>,
    listen: SocketAddr,
    rate: u64,
    nats: Option<String>,
) -> Result<()> {
    if !listen.ip().is_loopback() {
        bail!("the demo has no access tokens; listen on a loopback address (127.0.0.1 or ::1)");
    }
    let mut config = Config::from_toml(EXAMPLE_CONFIG).context("the built-in example config")?;
    if let Some(url) = &nats {
        // The example config plus a publisher with every default.
        let text = format!(
            "{EXAMPLE_CONFIG}\n[nats]\nurl = {}\n[nats.outbound]\n",
            serde_json::Value::from(url.as_str())
        );
        config = Config::from_toml(&text).context("--nats")?;
    }
    let data_dir = data_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()))
    });
    let script = data_dir.join("projections").join("doctor_profile.js");
    std::fs::create_dir_all(data_dir.join("projections"))
        .and_then(|()| std::fs::write(&script, EXAMPLE_PROFILE_SCRIPT))
        .with_context(|| format!("writing the example projection to {}", script.display()))?;
    let engine = open_engine(&config, &data_dir)?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let local = listener.local_addr()?;
        print_banner(local, &data_dir, rate);
        if let Some(url) = &nats {
            println!(
                "Changes are published to NATS at {} (stream SLUICE_CHANGES, subjects sluice.changes.<collection>);\n  \
                 nats sub 'sluice.changes.>' shows them, {local}/healthz says whether NATS answers.\n",
                sluice_nats::redact_url(url)
            );
        }
        let feeder = tokio::spawn(feed(engine.clone(), rate));
        let serving = crate::Serving {
            listener,
            options: sluice_server::ServerOptions::for_address(local, false, false),
            tls: None,
        };
        serve_with_connectors(engine, serving, config.nats.clone(), &data_dir, &data_dir).await?;
        feeder.abort();
        println!(
            "sluice demo: stopped; the data stays in {}",
            data_dir.display()
        );
        Ok(())
    })
}

fn print_banner(local: SocketAddr, data_dir: &std::path::Path, rate: u64) {
    let base = format!("http://{local}");
    println!(
        "Sluice demo: {base}  (data in {}, fed {rate} generated events/s)\n\n\
         Open {base}/v1/collections/doctor/docs?limit=5 or {base}/metrics in a browser, or try:\n  \
         curl -s {base}/v1/collections/doctor/docs/17\n  \
         curl -s '{base}/v1/collections/doctor/docs?limit=3'\n  \
         curl -s '{base}/v1/collections/availability/docs?limit=3'\n  \
         curl -s '{base}/v1/changes?after=now&wait_ms=5000'\n  \
         curl -s {base}/v1/projections/doctor_profile/17   (the doctor with its locations and plans)\n  \
         curl -s {base}/v1/projections\n  \
         curl -s {base}/v1/indexes/doctors/search -d '{{\"filter\": {{\"and\": [{{\"term\": {{\"specialty\": \"cardiology\"}}}}, {{\"term\": {{\"languages\": \"Spanish\"}}}}, {{\"term\": {{\"plans\": \"4\"}}}}, {{\"range\": {{\"next_slot\": {{\"lte\": \"2026-12-10T00:00:00Z\"}}}}}}, {{\"geo_distance\": {{\"field\": \"location\", \"lat\": 40.71, \"lon\": -74.0, \"radius_m\": 5000}}}}]}}, \"sort\": [{{\"rating\": \"desc\"}}], \"facets\": [\"languages\"], \"fields\": [\"name\", \"rating\", \"next_slot\"], \"limit\": 5}}'\n  \
         curl -s '{base}/v1/indexes/doctors/autocomplete?field=name&prefix=an%20sm'\n  \
         curl -s {base}/v1/indexes\n  \
         curl -s {base}/v1/collections/doctor/stats\n  \
         curl -s {base}/v1/collections/doctor/rejected\n  \
         curl -s {base}/metrics\n  \
         curl -s -XPOST {base}/v1/collections/doctor/snapshot\n  \
         curl -s {base}/v1/sql -d '{{\"sql\": \"SELECT specialty, count(*) AS doctors, avg(rating) AS rating FROM doctor GROUP BY 1 ORDER BY 2 DESC\", \"format\": \"table\"}}'\n  \
         curl -s -XPOST {base}/v1/collections/doctor/events -d '{{\"doctor_id\": 17, \"updated_at\": 1000000, \"location_id\": 3}}'\n\n\
         Ctrl-C stops.",
        data_dir.display()
    );
}

async fn feed(engine: Engine, rate: u64) {
    let mut generator = generator::Generator::new(42, 1_000);
    let mut seeds: BTreeMap<&str, String> = BTreeMap::new();
    for (collection, event) in generator.seed_events() {
        let lines = seeds.entry(collection).or_default();
        lines.push_str(&event.to_string());
        lines.push('\n');
    }
    for (collection, lines) in seeds {
        submit(&engine, collection, &lines).await;
    }
    let per_tick = (rate * TICK_MS / 1000).max(1);
    let mut ticker = tokio::time::interval(Duration::from_millis(TICK_MS));
    let mut sent = 0u64;
    loop {
        ticker.tick().await;
        let mut by_collection: BTreeMap<&str, String> = BTreeMap::new();
        for _ in 0..per_tick {
            let (collection, mut event) = generator.next_event();
            sent += 1;
            if sent.is_multiple_of(BAD_EVENT_EVERY)
                && let Some(members) = event.as_object_mut()
            {
                members.retain(|name, _| !name.ends_with("_id"));
            }
            let lines = by_collection.entry(collection).or_default();
            lines.push_str(&event.to_string());
            lines.push('\n');
        }
        for (collection, lines) in by_collection {
            submit(&engine, collection, &lines).await;
        }
    }
}

async fn submit(engine: &Engine, collection: &str, lines: &str) {
    let Ok(spec) = engine.collection(collection) else {
        return;
    };
    let inputs = input::parse_lines_lenient(spec, lines, 1, engine.event_limits());
    if let Err(error) = engine.submit(collection, inputs).await {
        tracing::warn!(%error, collection, "Demo feed could not submit.");
    }
}
