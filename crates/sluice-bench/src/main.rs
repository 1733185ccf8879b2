//! `sluice-load`: an HTTP/1.1 keep-alive load generator for Sluice's ingest endpoint.
//!
//! - `--mode batch`: closed loop, each connection POSTs NDJSON batches back to back;
//!   reports events/s.
//! - `--mode single`: open loop at a fixed request rate, one event per POST; latency is
//!   measured from each request's *scheduled* time, so a stalled server cannot hide its
//!   queueing delay (no coordinated omission).
//! - `--mode freshness`: the single-event load, plus a client on the change stream
//!   (server-sent events); reports the time from each event's scheduled POST to its
//!   arrival on the stream.

mod soak;

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Parser, Clone)]
#[command(about = "HTTP load generator for POST /v1/collections/{name}/events")]
pub(crate) struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: String,
    #[arg(long, default_value = "doctor")]
    collection: String,
    /// `batch` (throughput) or `single` (fixed rate, latency).
    #[arg(long, default_value = "batch")]
    mode: String,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Events per POST in batch mode.
    #[arg(long, default_value_t = 1000)]
    batch_events: usize,
    /// Requests per second in single mode.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Distinct document keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Soak mode: document reads per second.
    #[arg(long, default_value_t = 500)]
    read_rate: u64,
    /// Soak mode: seconds between SQL queries.
    #[arg(long, default_value_t = 5)]
    sql_every_s: u64,
    /// Soak mode: the server's process id, whose RSS is sampled.
    #[arg(long)]
    pid: Option<u32>,
    /// Soak mode: the server's data directory, whose size is sampled.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// An API token sent as `Authorization: Bearer` on every request (measures the cost
    /// of checking it).
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// The `Authorization` header line for `token`, or nothing.
fn authorization(token: Option<&str>) -> String {
    token.map_or_else(String::new, |token| {
        format!("Authorization: Bearer {token}\r\n")
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    match args.mode.as_str() {
        "batch" => batch(args).await,
        "single" => single(args).await,
        "freshness" => freshness(args).await,
        "soak" => soak::run(args).await,
        other => bail!("unknown mode {other:?}: use batch, single, freshness or soak"),
    }
}

/// Versions increase across the whole run, so every event is new.
static VERSION: AtomicU64 = AtomicU64::new(1);

pub(crate) fn event(out: &mut String, keys: u64) {
    let version = VERSION.fetch_add(1, Ordering::Relaxed);
    let key = version.wrapping_mul(0x9E37_79B9_7F4A_7C15) % keys;
    let specialty = ["cardiology", "oncology", "pediatrics", "neurology"][(version % 4) as usize];
    out.push_str(&format!(
        "{{\"doctor_id\":{key},\"updated_at\":{version},\"specialty\":\"{specialty}\",\"rating\":{}.{}}}\n",
        1 + version % 5,
        version % 10
    ));
}

pub(crate) struct Connection {
    stream: BufReader<TcpStream>,
    /// Extra header lines sent with every request.
    headers: String,
    request: Vec<u8>,
    body: Vec<u8>,
}

impl Connection {
    pub(crate) async fn open(addr: &str, token: Option<&str>) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            headers: authorization(token),
            request: Vec::new(),
            body: Vec::new(),
        })
    }

    /// POSTs `body` and reads the whole answer; returns the status code.
    pub(crate) async fn post(&mut self, path: &str, body: &str, content_type: &str) -> Result<u16> {
        self.send("POST", path, Some((body, content_type))).await
    }

    /// GETs `path` and reads the whole answer (into `body`); returns the status code.
    pub(crate) async fn get(&mut self, path: &str) -> Result<u16> {
        self.send("GET", path, None).await
    }

    async fn send(&mut self, method: &str, path: &str, body: Option<(&str, &str)>) -> Result<u16> {
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: sluice\r\n{}",
                self.headers
            )
            .as_bytes(),
        );
        match body {
            Some((body, content_type)) => {
                self.request.extend_from_slice(
                    format!(
                        "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                self.request.extend_from_slice(body.as_bytes());
            }
            None => self.request.extend_from_slice(b"\r\n"),
        }
        self.stream.get_mut().write_all(&self.request).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .context("bad status line")?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("connection closed");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().context("bad content-length")?;
            }
        }
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await?;
        Ok(status)
    }
}

async fn batch(args: Args) -> Result<()> {
    let path = format!("/v1/collections/{}/events", args.collection);
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let events = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..args.connections {
        let (args, path, events) = (args.clone(), path.clone(), Arc::clone(&events));
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(&args.addr, args.token.as_deref()).await?;
            let mut body = String::new();
            while Instant::now() < deadline {
                body.clear();
                for _ in 0..args.batch_events {
                    event(&mut body, args.keys);
                }
                let status = connection
                    .post(&path, &body, "application/x-ndjson")
                    .await?;
                if status != 200 {
                    bail!(
                        "status {status}: {}",
                        String::from_utf8_lossy(&connection.body)
                    );
                }
                events.fetch_add(args.batch_events as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = events.load(Ordering::Relaxed);
    println!(
        "RESULT sluice-http-batch events={total} wall_s={seconds:.2} events_per_s={:.0} batch_events={} connections={}",
        total as f64 / seconds,
        args.batch_events,
        args.connections
    );
    Ok(())
}

async fn single(args: Args) -> Result<()> {
    let path = format!("/v1/collections/{}/events", args.collection);
    let total = args.rate * args.duration_s;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (args, path, next) = (args.clone(), path.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(&args.addr, args.token.as_deref()).await?;
            let mut latencies_us = Vec::new();
            let mut body = String::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return anyhow::Ok(latencies_us);
                }
                let scheduled = started + interval * index as u32;
                tokio::time::sleep_until(scheduled.into()).await;
                body.clear();
                event(&mut body, args.keys);
                let status = connection
                    .post(&path, body.trim_end(), "application/json")
                    .await?;
                if status != 200 {
                    bail!(
                        "status {status}: {}",
                        String::from_utf8_lossy(&connection.body)
                    );
                }
                latencies_us.push(scheduled.elapsed().as_micros() as u64);
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "RESULT sluice-http-single requests={} wall_s={seconds:.2} req_per_s={:.0} target_rate={} {} connections={}",
        latencies.len(),
        latencies.len() as f64 / seconds,
        args.rate,
        percentiles_ms(&latencies),
        args.connections
    );
    Ok(())
}

/// Reads a chunked server-sent-event body and reports, per change, the delay since the
/// `sent_us` its document carries.
async fn follow_stream(
    addr: String,
    collection: String,
    authorization: String,
    started: Instant,
    expected: u64,
) -> Result<Vec<u64>> {
    let stream = TcpStream::connect(&addr).await?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(
            format!(
                "GET /v1/changes/stream?collection={collection} HTTP/1.1\r\nHost: sluice\r\n{authorization}\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut line = String::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        if line == "\r\n" {
            break;
        }
    }
    let mut text = String::new();
    let mut delays_us = Vec::with_capacity(expected as usize);
    let mut chunk = Vec::new();
    while (delays_us.len() as u64) < expected {
        line.clear();
        stream.read_line(&mut line).await?;
        let size = usize::from_str_radix(line.trim(), 16).context("chunk size")?;
        chunk.resize(size + 2, 0);
        stream.read_exact(&mut chunk).await?;
        text.push_str(std::str::from_utf8(&chunk[..size])?);
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|line| line.strip_prefix("data: ")) else {
                continue;
            };
            // `"sent_us":<digits>` inside the document.
            let Some(position) = data.find("\"sent_us\":") else {
                continue;
            };
            let digits: String = data[position + 10..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let sent_us: u64 = digits.parse().context("sent_us")?;
            let now_us = started.elapsed().as_micros() as u64;
            delays_us.push(now_us.saturating_sub(sent_us));
        }
    }
    Ok(delays_us)
}

async fn freshness(args: Args) -> Result<()> {
    let path = format!("/v1/collections/{}/events", args.collection);
    let total = args.rate * args.duration_s;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let origin = Instant::now();
    let started = origin + Duration::from_millis(300);
    let follower = tokio::spawn(follow_stream(
        args.addr.clone(),
        args.collection.clone(),
        authorization(args.token.as_deref()),
        origin,
        total,
    ));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (args, path, next) = (args.clone(), path.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(&args.addr, args.token.as_deref()).await?;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return anyhow::Ok(());
                }
                let scheduled = started + interval * index as u32;
                tokio::time::sleep_until(scheduled.into()).await;
                // The scheduled time, so that a stalled client or server shows as delay.
                let sent_us = (scheduled - origin).as_micros() as u64;
                let version = VERSION.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    "{{\"doctor_id\":{},\"updated_at\":{version},\"sent_us\":{sent_us}}}",
                    version % args.keys
                );
                let status = connection.post(&path, &body, "application/json").await?;
                if status != 200 {
                    bail!(
                        "status {status}: {}",
                        String::from_utf8_lossy(&connection.body)
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut delays = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .context("stream stalled")???;
    delays.sort_unstable();
    println!(
        "RESULT sluice-freshness events={} rate={} {} connections={}",
        delays.len(),
        args.rate,
        percentiles_ms(&delays),
        args.connections
    );
    Ok(())
}

/// `p50_ms=… p90_ms=… p99_ms=… max_ms=…` of sorted microsecond samples.
fn percentiles_ms(sorted_us: &[u64]) -> String {
    let at = |p: f64| match sorted_us.len() {
        0 => 0.0,
        len => sorted_us[((len as f64 * p) as usize).min(len - 1)] as f64 / 1000.0,
    };
    format!(
        "p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    )
}
