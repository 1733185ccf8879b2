//! `sluice-search-bench`: the search benchmarks of BENCHMARKS.md.
//!
//! - `freshness`: doctors changing at a fixed rate, most of it low-lane renames (a
//!   backlog builds up in the low lane), and for a sample of high-lane changes the time
//!   from the submit's acknowledgement to the change being searchable.
//! - `queries`: the demo query (dermatologists near a point, speaking a language,
//!   accepting a plan, a slot soon, best rated first, with facets) with random points
//!   and values, paced at a fixed rate over N indexed doctors; latency percentiles.
//! - `throughput`: N doctor documents indexed by Sluice (the backfill of an index over
//!   a collection that already holds them, and the live path: the same documents
//!   arriving as changes) against a bare tantivy bulk index of the same documents with
//!   the same schema, in the same run.

use anyhow::{Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use sluice_core::Config;
use sluice_engine::{Engine, input};
use sluice_search::Runtime;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// freshness, queries or throughput.
    mode: String,
    #[arg(long, default_value = "bench-work/search")]
    dir: PathBuf,
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    #[arg(long, default_value_t = 10_000)]
    doctors: u64,
    /// queries: searches per second.
    #[arg(long, default_value_t = 200)]
    qps: u64,
}

const FIELDS: &str = r#"
[indexes.fields]
name = { type = "text", autocomplete = true }
bio = { type = "text" }
specialty = { type = "keyword" }
languages = { type = "keyword" }
plans = { type = "keyword" }
rating = { type = "float" }
active = { type = "bool" }
seq = { type = "integer" }
next_slot = { type = "date" }
location = { type = "geo" }
"#;

fn config_text() -> String {
    let mut text = r#"
[engine]
partitions = 4
[[collections]]
name = "doctor"
key = ["/doctor_id"]
"#
    .to_owned();
    text.push_str("[[indexes]]\nname = \"doctors\"\nsource = \"doctor\"\n");
    text.push_str(FIELDS);
    text.push_str(
        "[indexes.lanes.high]\npaths = [\"/active\", \"/next_slot\", \"/seq\"]\nmax_delay_ms = 500\nbatch_size = 1000\n\
         [indexes.lanes.low]\nmax_delay_ms = 900000\nbatch_size = 10000\n",
    );
    text
}

fn open(dir: &Path) -> Result<Engine> {
    std::fs::create_dir_all(dir)?;
    let config = Config::from_toml(&config_text())?;
    Ok(Engine::open(&config, &dir.join("data"))?)
}

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
}

const SPECIALTIES: &[&str] = &[
    "Dermatology",
    "Cardiology",
    "Pediatrics",
    "Neurology",
    "Oncology",
    "Surgery",
];
const LANGUAGES: &[&str] = &["English", "Spanish", "Mandarin", "Polish", "Arabic"];
const WORDS: &[&str] = &[
    "asthma",
    "allergies",
    "skin",
    "heart",
    "sports",
    "children",
    "sleep",
    "care",
    "clinic",
];
const FIRST: &[&str] = &[
    "ana", "ben", "chen", "dara", "eli", "fatima", "gus", "hana", "ivan", "jo",
];
const LAST: &[&str] = &[
    "smith", "okafor", "nguyen", "garcia", "kowalski", "haddad", "ito", "berg",
];

fn doctor(rng: &mut Rng, id: u64) -> Value {
    let pick =
        |rng: &mut Rng, items: &[&'static str]| items[rng.below(items.len() as u64) as usize];
    let languages: Vec<&str> = LANGUAGES
        .iter()
        .copied()
        .filter(|_| rng.below(100) < 35)
        .collect();
    let plans: Vec<String> = (0..1 + rng.below(3))
        .map(|_| format!("P{}", rng.below(20)))
        .collect();
    let bio: Vec<&str> = (0..3 + rng.below(6)).map(|_| pick(rng, WORDS)).collect();
    json!({
        "doctor_id": id,
        "name": format!("{} {}", pick(rng, FIRST), pick(rng, LAST)),
        "bio": bio.join(" "),
        "specialty": pick(rng, SPECIALTIES),
        "languages": languages,
        "plans": plans,
        "rating": (10 + rng.below(41)) as f64 / 10.0,
        "active": rng.below(10) != 0,
        "next_slot": format!("2026-12-{:02}T{:02}:00:00Z", 1 + rng.below(28), 8 + rng.below(10)),
        "location": {"lat": 40.55 + rng.below(3_000) as f64 / 10_000.0,
                     "lon": -74.15 + rng.below(3_000) as f64 / 10_000.0},
    })
}

async fn submit(engine: &Engine, lines: &str) -> Result<()> {
    let spec = engine.collection("doctor")?;
    let inputs = input::parse_lines_lenient(spec, lines, 1, engine.event_limits());
    for result in engine.submit("doctor", inputs).await? {
        if result.status == sluice_engine::Status::Rejected {
            bail!("rejected: {result:?}");
        }
    }
    Ok(())
}

async fn seed(engine: &Engine, doctors: u64) -> Result<()> {
    let mut rng = Rng(0x5eed_0001);
    let mut lines = String::new();
    for id in 0..doctors {
        lines.push_str(&doctor(&mut rng, id).to_string());
        lines.push('\n');
        if (id + 1) % 5_000 == 0 {
            submit(engine, &lines).await?;
            lines.clear();
        }
    }
    if !lines.is_empty() {
        submit(engine, &lines).await?;
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn wait_caught_up(runtime: &Runtime) -> Result<()> {
    if !runtime
        .wait_caught_up("doctors", Duration::from_secs(600))
        .await?
    {
        bail!("the index did not catch up: {}", runtime.list());
    }
    Ok(())
}

/// High-lane changes sampled while the load runs; the rest are low-lane renames.
async fn freshness(args: &Args) -> Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    let engine = open(&args.dir)?;
    let runtime = Runtime::start(engine.clone(), &args.dir.join("data"))?;
    seed(&engine, args.doctors).await?;
    wait_caught_up(&runtime).await?;
    let per_tick = (args.rate / 100).max(1);
    let ticks = args.duration_s * 100;
    let mut rng = Rng(0x5eed_0002);
    let mut latencies_ms = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    // Outstanding samples by their seq value: each a high-lane change of its own doctor.
    let mut outstanding: std::collections::BTreeMap<u64, Instant> = Default::default();
    let mut sent = 0u64;
    let started = Instant::now();
    for tick in 0..ticks {
        ticker.tick().await;
        let mut lines = String::new();
        // One in five changes is urgent (active flips); the rest rename (low lane).
        for _ in 0..per_tick {
            let id = rng.below(args.doctors);
            let event = if rng.below(5) == 0 {
                json!({"doctor_id": id, "active": rng.below(2) == 0})
            } else {
                json!({"doctor_id": id, "bio": format!("care {}", rng.below(1_000_000))})
            };
            lines.push_str(&event.to_string());
            lines.push('\n');
        }
        // A sample every 5 ticks (20 a second), on doctors no other sample is on.
        let sampled = tick % 5 == 0;
        if sampled {
            let seq = tick + 1;
            let id = (seq / 5) % args.doctors;
            lines.push_str(&json!({"doctor_id": id, "seq": seq}).to_string());
            lines.push('\n');
        }
        submit(&engine, &lines).await?;
        if sampled {
            outstanding.insert(tick + 1, Instant::now());
        }
        sent += per_tick;
        // Polled until the next tick is due: one search finds every sample visible.
        while let Some((&oldest, &at)) = outstanding.iter().next() {
            let found = runtime.search(
                "doctors",
                &json!({"filter": {"range": {"seq": {"gte": oldest}}}, "fields": ["seq"], "limit": 500}),
            )?;
            let now = Instant::now();
            for hit in found["hits"].as_array().into_iter().flatten() {
                if let Some(seq) = hit["doc"]["seq"].as_u64()
                    && let Some(at) = outstanding.remove(&seq)
                {
                    latencies_ms.push(now.duration_since(at).as_secs_f64() * 1000.0);
                }
            }
            if at.elapsed() > Duration::from_secs(30) {
                bail!(
                    "a high-lane change was not searchable after 30 s: {}",
                    runtime.list()
                );
            }
            if ticker_due(&started, tick) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let status = runtime.list();
    let low_pending = status[0]["active"]["lanes"]
        .as_array()
        .and_then(|lanes| lanes.iter().find(|lane| lane["name"] == "low"))
        .map(|lane| lane["pending"].clone())
        .unwrap_or_default();
    latencies_ms.sort_by(f64::total_cmp);
    println!(
        "RESULT search-freshness rate={} changes={sent} elapsed_s={elapsed:.1} samples={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} low_lane_pending_at_end={low_pending}",
        args.rate,
        latencies_ms.len(),
        percentile(&latencies_ms, 0.50),
        percentile(&latencies_ms, 0.99),
        latencies_ms.last().copied().unwrap_or(f64::NAN),
    );
    runtime.shutdown();
    Ok(())
}

/// True once the next 10 ms tick is due.
fn ticker_due(started: &Instant, tick: u64) -> bool {
    started.elapsed() >= Duration::from_millis((tick + 1) * 10)
}

fn demo_query(rng: &mut Rng) -> Value {
    json!({
        "filter": {"and": [
            {"term": {"specialty": SPECIALTIES[rng.below(2) as usize]}},
            {"term": {"languages": LANGUAGES[rng.below(LANGUAGES.len() as u64) as usize]}},
            {"terms": {"plans": [format!("P{}", rng.below(20)), format!("P{}", rng.below(20))]}},
            {"range": {"next_slot": {"lte": format!("2026-12-{:02}T00:00:00Z", 4 + rng.below(20))}}},
            {"geo_distance": {"field": "location", "lat": 40.60 + rng.below(2_000) as f64 / 10_000.0,
                              "lon": -74.10 + rng.below(2_000) as f64 / 10_000.0, "radius_m": 5000}},
            {"not": {"term": {"active": false}}}
        ]},
        "sort": [{"rating": "desc"}],
        "facets": ["specialty", "languages"],
        "fields": ["name", "specialty", "rating"],
        "limit": 20
    })
}

async fn queries(args: &Args) -> Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    let engine = open(&args.dir)?;
    let runtime = Runtime::start(engine.clone(), &args.dir.join("data"))?;
    seed(&engine, args.doctors).await?;
    wait_caught_up(&runtime).await?;
    let mut rng = Rng(0x5eed_0003);
    // Warm the page cache and the code paths.
    for _ in 0..200 {
        runtime.search("doctors", &demo_query(&mut rng))?;
    }
    let total = args.qps * args.duration_s;
    let interval = Duration::from_secs_f64(1.0 / args.qps as f64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    let mut hits = 0u64;
    for n in 0..total {
        let at = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        let query = demo_query(&mut rng);
        let runtime = Arc::clone(&runtime);
        // Open loop: each query starts on time whatever the previous ones do, and its
        // latency counts from when it was due.
        tasks.push(tokio::task::spawn_blocking(
            move || -> Result<(f64, u64)> {
                let answer = runtime.search("doctors", &query)?;
                Ok((
                    at.elapsed().as_secs_f64() * 1000.0,
                    answer["total"].as_u64().unwrap_or(0),
                ))
            },
        ));
    }
    let mut latencies_ms = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (latency, total) = task.await??;
        latencies_ms.push(latency);
        hits += total;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies_ms.sort_by(f64::total_cmp);
    println!(
        "RESULT search-queries doctors={} qps={} queries={} elapsed_s={elapsed:.1} mean_total={:.1} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        args.doctors,
        args.qps,
        latencies_ms.len(),
        hits as f64 / latencies_ms.len().max(1) as f64,
        percentile(&latencies_ms, 0.50),
        percentile(&latencies_ms, 0.99),
        latencies_ms.last().copied().unwrap_or(f64::NAN),
    );
    runtime.shutdown();
    Ok(())
}

/// The same documents in a bare tantivy index with the same schema: one writer with a
/// thread per core, added as fast as it takes them, one commit.
fn bare_tantivy(dir: &Path, docs: &[(String, Vec<u8>)]) -> Result<f64> {
    let config = Config::from_toml(&config_text())?;
    let index_config = config
        .indexes
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no index"))?;
    let schema = sluice_search::schema::IndexSchema::new(&index_config);
    let path = dir.join("bare");
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path)?;
    let started = Instant::now();
    let index = tantivy::Index::create_in_dir(&path, schema.tantivy_schema().clone())?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(threads, 64 << 20)?;
    for (key, doc) in docs {
        let (document, _) = schema.document(key, 1, doc)?;
        writer.add_document(document)?;
    }
    writer.commit()?;
    Ok(started.elapsed().as_secs_f64())
}

async fn throughput(args: &Args) -> Result<()> {
    let mut rng = Rng(0x5eed_0001);
    let docs: Vec<(String, Vec<u8>)> = (0..args.doctors)
        .map(|id| {
            (
                id.to_string(),
                doctor(&mut rng, id).to_string().into_bytes(),
            )
        })
        .collect();
    let bare_s = bare_tantivy(&args.dir, &docs)?;
    // Backfill: the collection holds the documents before the index starts.
    let backfill_dir = args.dir.join("backfill");
    let _ = std::fs::remove_dir_all(&backfill_dir);
    let engine = open(&backfill_dir)?;
    seed(&engine, args.doctors).await?;
    let started = Instant::now();
    let runtime = Runtime::start(engine.clone(), &backfill_dir.join("data"))?;
    wait_caught_up(&runtime).await?;
    let backfill_s = started.elapsed().as_secs_f64();
    runtime.shutdown();
    drop(runtime);
    drop(engine);
    // Live: the documents arrive as changes with the index running; from the first
    // submit to everything searchable.
    let live_dir = args.dir.join("live");
    let _ = std::fs::remove_dir_all(&live_dir);
    let engine = open(&live_dir)?;
    let runtime = Runtime::start(engine.clone(), &live_dir.join("data"))?;
    wait_caught_up(&runtime).await?;
    let started = Instant::now();
    seed(&engine, args.doctors).await?;
    let ingest_s = started.elapsed().as_secs_f64();
    wait_caught_up(&runtime).await?;
    let live_s = started.elapsed().as_secs_f64();
    runtime.shutdown();
    let n = args.doctors as f64;
    println!(
        "RESULT search-throughput doctors={} bare_tantivy_s={bare_s:.2} bare_docs_per_s={:.0} backfill_s={backfill_s:.2} backfill_docs_per_s={:.0} backfill_vs_bare={:.2} live_s={live_s:.2} live_docs_per_s={:.0} live_vs_bare={:.2} live_ingest_s={ingest_s:.2}",
        args.doctors,
        n / bare_s,
        n / backfill_s,
        bare_s / backfill_s,
        n / live_s,
        bare_s / live_s,
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    match args.mode.as_str() {
        "freshness" => freshness(&args).await,
        "queries" => queries(&args).await,
        "throughput" => throughput(&args).await,
        other => bail!("unknown mode {other:?}: freshness, queries or throughput"),
    }
}
