//! `sluice-projection-bench`: the projection benchmarks of BENCHMARKS.md.
//!
//! - `freshness`: doctor updates at a fixed rate; for a sample of them, the time from
//!   the submit to the profile showing the update (the entry polled in process).
//! - `fanout`: a location read by N profiles is renamed; the time until every one of
//!   them shows the new name, per rename.
//! - `throughput`: a burst of doctor events (one lookup each) as fast as the engine takes
//!   them; then the time until the projection has caught up.
//! - `backfill-seed` / `backfill`: a data directory with N doctors (one lookup each) and
//!   no projection; then the time and peak RSS of building the projection over it.
//! - `reads`: closed-loop HTTP GETs of entries from a running server, C connections.

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;
use sluice_core::Config;
use sluice_engine::{Engine, input};
use sluice_projections::Runtime;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    /// freshness, fanout, throughput, backfill-seed, backfill or reads.
    mode: String,
    /// Where the data directory and the script go.
    #[arg(long, default_value = "bench-work/projections")]
    dir: PathBuf,
    /// `js` (the example-like script) or `native` (native:doctor_profile).
    #[arg(long, default_value = "js")]
    projector: String,
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    #[arg(long, default_value_t = 10_000)]
    doctors: u64,
    #[arg(long, default_value_t = 1_000)]
    fanout: u64,
    #[arg(long, default_value_t = 20)]
    renames: u64,
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// reads: the server and its projection.
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: String,
    #[arg(long, default_value_t = 50)]
    connections: usize,
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
}

const SCRIPT: &str = r#"
export default function project(doctor, ctx) {
  const l = doctor.location_id == null ? null : ctx.get("location", doctor.location_id);
  return { key: doctor.doctor_id, value: { name: doctor.name, specialty: doctor.specialty, seq: doctor.seq ?? null,
           locations: l ? [{ id: l.location_id, name: l.name, city: l.city }] : [] } };
}
"#;

fn config_text(projector: &str) -> String {
    let script = if projector == "native" {
        "native:doctor_profile".to_owned()
    } else {
        "profile.js".to_owned()
    };
    format!(
        r#"
[engine]
partitions = 4
[[collections]]
name = "doctor"
key = ["/doctor_id"]
[[collections]]
name = "location"
key = ["/location_id"]
[[collections]]
name = "insurance_plan"
key = ["/plan_id"]
[[projections]]
name = "profile"
source = "doctor"
script = "{script}"
"#
    )
}

fn open(args: &Args, with_projection: bool) -> Result<Engine> {
    std::fs::create_dir_all(&args.dir)?;
    std::fs::write(args.dir.join("profile.js"), SCRIPT)?;
    let mut text = config_text(&args.projector);
    if !with_projection {
        text = text
            .split("[[projections]]")
            .next()
            .unwrap_or_default()
            .to_owned();
    }
    let config = Config::from_toml(&text)?;
    Ok(Engine::open(&config, &args.dir.join("data"))?)
}

async fn submit(engine: &Engine, collection: &str, lines: &str) -> Result<()> {
    let spec = engine.collection(collection)?;
    let inputs = input::parse_lines_lenient(spec, lines, 1, engine.event_limits());
    engine.submit(collection, inputs).await?;
    Ok(())
}

async fn seed(engine: &Engine, doctors: u64, locations: u64) -> Result<()> {
    let mut lines = String::new();
    for id in 0..locations {
        lines.push_str(
            &json!({"location_id": id, "name": format!("L{id}"), "city": "Chicago"}).to_string(),
        );
        lines.push('\n');
    }
    submit(engine, "location", &lines).await?;
    let mut start = 0;
    while start < doctors {
        let end = (start + 10_000).min(doctors);
        let mut lines = String::with_capacity(100 * 10_000);
        for id in start..end {
            lines.push_str(
                &json!({"doctor_id": id, "name": format!("doctor {id}"), "specialty": "surgery", "location_id": id % locations.max(1)})
                    .to_string(),
            );
            lines.push('\n');
        }
        submit(engine, "doctor", &lines).await?;
        start = end;
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples_ms: Vec<f64>) {
    samples_ms.sort_by(f64::total_cmp);
    println!(
        "{name}: samples={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        samples_ms.len(),
        percentile(&samples_ms, 0.5),
        percentile(&samples_ms, 0.99),
        samples_ms.last().copied().unwrap_or(f64::NAN)
    );
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn wait_caught_up(runtime: &Runtime) -> Result<Duration> {
    let started = Instant::now();
    if !runtime
        .wait_caught_up("profile", Duration::from_secs(600))
        .await?
    {
        bail!(
            "the projection did not catch up: {:?}",
            runtime.status("profile")
        );
    }
    Ok(started.elapsed())
}

async fn freshness(args: &Args) -> Result<()> {
    let engine = open(args, true)?;
    let runtime = Runtime::start(engine.clone(), &args.dir).map_err(anyhow::Error::msg)?;
    seed(&engine, args.doctors, 100).await?;
    wait_caught_up(&runtime).await?;
    let tick = Duration::from_millis(10);
    let per_tick = (args.rate * 10 / 1000).max(1);
    let mut ticker = tokio::time::interval(tick);
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let mut seq = 0u64;
    let mut samples = Vec::new();
    let mut pollers = Vec::new();
    while Instant::now() < deadline {
        ticker.tick().await;
        let mut lines = String::with_capacity(80 * per_tick as usize);
        let sampled_key = (seq * 7919) % args.doctors;
        let mut sampled_seq = 0;
        for index in 0..per_tick {
            seq += 1;
            let key = if index == 0 {
                sampled_seq = seq;
                sampled_key
            } else {
                (seq * 104_729) % args.doctors
            };
            lines.push_str(&json!({"doctor_id": key, "seq": seq}).to_string());
            lines.push('\n');
        }
        let sent = Instant::now();
        let engine = engine.clone();
        let runtime = Arc::clone(&runtime);
        // Submit and watch concurrently: the next tick's submit must not wait.
        pollers.push(tokio::spawn(async move {
            if submit(&engine, "doctor", &lines).await.is_err() {
                return None;
            }
            let key = sampled_key.to_string();
            let marker = format!("\"seq\":{sampled_seq}");
            loop {
                if let Ok(Some(text)) = runtime.get("profile", &key)
                    && (text.contains(&marker) || newer(&text, sampled_seq))
                {
                    return Some(sent.elapsed().as_secs_f64() * 1000.0);
                }
                if sent.elapsed() > Duration::from_secs(10) {
                    return None;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }));
    }
    for poller in pollers {
        if let Some(ms) = poller.await? {
            samples.push(ms);
        }
    }
    println!(
        "freshness: rate={} events/s duration={} s projector={}",
        args.rate, args.duration_s, args.projector
    );
    report("event to profile", samples);
    runtime.shutdown();
    Ok(())
}

/// A later update of the same doctor hides the sampled one: it counts as visible.
fn newer(text: &str, seq: u64) -> bool {
    text.split("\"seq\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse::<u64>().ok())
        .is_some_and(|seen| seen > seq)
}

async fn fanout(args: &Args) -> Result<()> {
    let engine = open(args, true)?;
    let runtime = Runtime::start(engine.clone(), &args.dir).map_err(anyhow::Error::msg)?;
    // Location 0 is read by `fanout` doctors; others by the rest.
    seed(&engine, args.doctors.max(args.fanout), 1).await?;
    let mut lines = String::new();
    for id in 0..args.fanout {
        lines.push_str(&json!({"doctor_id": id, "location_id": 0}).to_string());
        lines.push('\n');
    }
    for id in args.fanout..args.doctors {
        lines.push_str(&json!({"doctor_id": id, "location_id": 1}).to_string());
        lines.push('\n');
    }
    submit(&engine, "doctor", &lines).await?;
    wait_caught_up(&runtime).await?;
    let mut samples = Vec::new();
    for rename in 0..args.renames {
        let name = format!("renamed {rename}");
        let sent = Instant::now();
        submit(
            &engine,
            "location",
            &format!("{}\n", json!({"location_id": 0, "name": name})),
        )
        .await?;
        let marker = format!("\"name\":\"{name}\"");
        let mut pending: Vec<String> = (0..args.fanout).map(|id| id.to_string()).collect();
        while !pending.is_empty() {
            pending.retain(|key| {
                !matches!(runtime.get("profile", key), Ok(Some(text)) if text.contains(&marker))
            });
            if sent.elapsed() > Duration::from_secs(30) {
                bail!(
                    "rename {rename}: {} profiles never showed it",
                    pending.len()
                );
            }
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
        samples.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "fanout: {} profiles read the renamed location, {} renames, projector={}",
        args.fanout, args.renames, args.projector
    );
    report("rename to every profile", samples);
    runtime.shutdown();
    Ok(())
}

async fn throughput(args: &Args) -> Result<()> {
    // `--projector none`: the same load with no projection, the peer of the others.
    let with_projection = args.projector != "none";
    let engine = open(args, with_projection)?;
    let runtime = if with_projection {
        Some(Runtime::start(engine.clone(), &args.dir).map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    seed(&engine, args.doctors, 100).await?;
    if let Some(runtime) = &runtime {
        wait_caught_up(runtime).await?;
    }
    let started = Instant::now();
    let mut sent = 0;
    while sent < args.events {
        let count = (args.events - sent).min(1_000);
        let mut lines = String::with_capacity(80 * count as usize);
        for index in sent..sent + count {
            let key = (index * 104_729) % args.doctors;
            // As `sluice gen` picks fields: one update in eight moves the doctor.
            let event = if index % 8 == 0 {
                json!({"doctor_id": key, "seq": index, "location_id": index % 100})
            } else {
                json!({"doctor_id": key, "seq": index, "name": format!("doctor {key} v{index}")})
            };
            lines.push_str(&event.to_string());
            lines.push('\n');
        }
        submit(&engine, "doctor", &lines).await?;
        sent += count;
    }
    let load_s = started.elapsed().as_secs_f64();
    let Some(runtime) = runtime else {
        println!(
            "throughput: {} events in {load_s:.2} s ({:.0} events/s) with no projection",
            args.events,
            args.events as f64 / load_s
        );
        return Ok(());
    };
    let drain = wait_caught_up(&runtime).await?;
    let status = runtime.status("profile")?;
    println!(
        "throughput: {} events in {load_s:.2} s ({:.0} events/s) with the projection running; lag back to 0 {:.3} s after the load ended; calls={} projector={}",
        args.events,
        args.events as f64 / load_s,
        drain.as_secs_f64(),
        status.calls,
        args.projector
    );
    runtime.shutdown();
    Ok(())
}

async fn backfill_seed(args: &Args) -> Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    let engine = open(args, false)?;
    let started = Instant::now();
    seed(&engine, args.doctors, 1_000).await?;
    println!(
        "seeded {} doctors and 1000 locations in {:.1} s",
        args.doctors,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn backfill(args: &Args) -> Result<()> {
    let engine = open(args, true)?;
    let started = Instant::now();
    let runtime = Runtime::start(engine.clone(), &args.dir).map_err(anyhow::Error::msg)?;
    wait_caught_up(&runtime).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let status = runtime.status("profile")?;
    let entries = status.version.as_ref().map_or(0, |version| version.entries);
    println!(
        "backfill: {entries} entries from {} documents in {elapsed:.1} s ({:.0} documents/s), peak RSS {:.0} MB, projector={}",
        args.doctors,
        entries as f64 / elapsed,
        peak_rss_mb(),
        args.projector
    );
    runtime.shutdown();
    Ok(())
}

async fn reads(args: &Args) -> Result<()> {
    let addr: std::net::SocketAddr = args.addr.parse().context("--addr")?;
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let mut tasks = Vec::new();
    for connection in 0..args.connections {
        let keys = args.keys;
        tasks.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut latencies = Vec::new();
            let mut buffer = vec![0u8; 64 << 10];
            let mut key = connection as u64 * 7919;
            while Instant::now() < deadline {
                key = (key + 104_729) % keys;
                let request =
                    format!("GET /v1/projections/profile/{key} HTTP/1.1\r\nHost: x\r\n\r\n");
                let sent = Instant::now();
                stream.write_all(request.as_bytes()).await?;
                // Read one response: headers, then Content-Length bytes.
                let mut filled = 0;
                loop {
                    let read = stream.read(&mut buffer[filled..]).await?;
                    if read == 0 {
                        bail!("the server closed the connection");
                    }
                    filled += read;
                    let text = &buffer[..filled];
                    if let Some(end) = memfind(text, b"\r\n\r\n") {
                        if !text.starts_with(b"HTTP/1.1 200") {
                            bail!("answer: {}", String::from_utf8_lossy(&text[..end.min(80)]));
                        }
                        // hyper writes header names in lower case.
                        let length = memfind(&text[..end], b"content-length: ")
                            .map(|at| {
                                text[at + 16..end]
                                    .iter()
                                    .take_while(|byte| byte.is_ascii_digit())
                                    .fold(0usize, |number, digit| {
                                        number * 10 + usize::from(digit - b'0')
                                    })
                            })
                            .unwrap_or(0);
                        if filled >= end + 4 + length {
                            break;
                        }
                    }
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    println!(
        "reads: {} GETs in {} s over {} connections: {:.0} requests/s",
        all.len(),
        args.duration_s,
        args.connections,
        all.len() as f64 / args.duration_s as f64
    );
    report("GET /v1/projections/profile/{key}", all);
    Ok(())
}

fn memfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The HTTP API's view of the runtime, for `reads-serve` (what the binary plugs in, cut
/// to the reads the benchmark makes).
struct ServedProjections(Arc<Runtime>);

fn refused(
    error: sluice_projections::RuntimeError,
) -> sluice_server::projections::ProjectionsError {
    use sluice_server::projections::ProjectionsErrorKind;
    let kind = match error {
        sluice_projections::RuntimeError::UnknownProjection(_) => {
            ProjectionsErrorKind::UnknownProjection
        }
        sluice_projections::RuntimeError::NotReady(_) => ProjectionsErrorKind::NotReady,
        _ => ProjectionsErrorKind::Internal,
    };
    sluice_server::projections::ProjectionsError {
        kind,
        message: error.to_string(),
    }
}

impl sluice_server::Projections for ServedProjections {
    fn list(&self) -> serde_json::Value {
        serde_json::to_value(self.0.list()).unwrap_or_default()
    }
    fn get(
        &self,
        name: &str,
        key: &str,
    ) -> Result<Option<String>, sluice_server::projections::ProjectionsError> {
        self.0.get(name, key).map_err(refused)
    }
    fn get_many(
        &self,
        name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, sluice_server::projections::ProjectionsError> {
        self.0.get_many(name, keys).map_err(refused)
    }
    fn errors(
        &self,
        name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(serde_json::Value, Option<String>), sluice_server::projections::ProjectionsError>
    {
        let (errors, next) = self.0.errors(name, after, limit).map_err(refused)?;
        Ok((serde_json::to_value(errors).unwrap_or_default(), next))
    }
    fn reload(
        &self,
        name: String,
    ) -> sluice_server::analytics::BoxFuture<
        Result<serde_json::Value, sluice_server::projections::ProjectionsError>,
    > {
        let runtime = Arc::clone(&self.0);
        Box::pin(async move {
            let outcome = runtime.reload(&name).await.map_err(refused)?;
            Ok(serde_json::to_value(outcome).unwrap_or_default())
        })
    }
    fn render_metrics(&self, out: &mut String) {
        self.0.render_metrics(out);
    }
}

/// Serves the HTTP API (the server crate's own `serve`) over the data of `reads-seed`.
async fn reads_serve(args: &Args) -> Result<()> {
    let engine = open(args, true)?;
    let runtime = Runtime::start(engine.clone(), &args.dir).map_err(anyhow::Error::msg)?;
    wait_caught_up(&runtime).await?;
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    let options = sluice_server::ServerOptions::for_address(listener.local_addr()?, false, false);
    let plugins = sluice_server::Plugins {
        analytics: None,
        projections: Some(Arc::new(ServedProjections(Arc::clone(&runtime)))),
        search: None,
    };
    println!("serving on {}", listener.local_addr()?);
    sluice_server::serve(engine, plugins, listener, options, None, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    runtime.shutdown();
    Ok(())
}

/// Seeds a data directory for `reads` (run a server on it afterwards).
async fn reads_seed(args: &Args) -> Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    let engine = open(args, true)?;
    let runtime = Runtime::start(engine.clone(), &args.dir).map_err(anyhow::Error::msg)?;
    seed(&engine, args.keys, 100).await?;
    wait_caught_up(&runtime).await?;
    let sample = runtime.get("profile", "1")?.unwrap_or_default();
    println!(
        "seeded {} profiles; an entry is {} bytes: {sample}",
        args.keys,
        sample.len()
    );
    std::fs::write(
        args.dir.join("sluice.toml"),
        config_text(&args.projector) + "\n[server]\ndata_dir = \"data\"\n",
    )?;
    runtime.shutdown();
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The read load runs on one thread, as redis-benchmark does, leaving the other core
    // to the server.
    let runtime = if args.mode == "reads" {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        match args.mode.as_str() {
            "freshness" => freshness(&args).await,
            "fanout" => fanout(&args).await,
            "throughput" => throughput(&args).await,
            "backfill-seed" => backfill_seed(&args).await,
            "backfill" => backfill(&args).await,
            "reads-seed" => reads_seed(&args).await,
            "reads" => reads(&args).await,
            "reads-serve" => reads_serve(&args).await,
            other => bail!("unknown mode {other:?}"),
        }
    })
}
