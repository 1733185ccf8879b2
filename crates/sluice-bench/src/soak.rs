//! `--mode soak`: mixed load at fixed rates for `--duration-s`: NDJSON ingest at `--rate`
//! events/s over `--connections` connections (batches of `--batch-events`), document
//! reads at `--read-rate`/s, one change stream, a SQL query every `--sql-every-s`. Every
//! 10 s it prints what was done, the errors, the server's RSS (`--pid`) and the size of
//! its data directory (`--data-dir`), and the server's memory by owner from `/metrics`
//! (heap bytes in use, store caches, write buffers, document caches); at the end, the
//! RSS after warm-up (the first fifth of the run): its first, lowest, highest and last
//! values, the means of four equal windows after warm-up (the trend, which the write
//! buffers' fill-and-flush sawtooth does not decide), and the largest data directory.

use crate::{Args, Connection, event};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
struct Counts {
    events: AtomicU64,
    reads: AtomicU64,
    streamed: AtomicU64,
    queries: AtomicU64,
    errors: AtomicU64,
}

impl Counts {
    fn error(&self, what: &str, detail: &str) {
        let errors = self.errors.fetch_add(1, Ordering::Relaxed);
        if errors < 20 {
            eprintln!("soak: {what}: {detail}");
        }
    }
}

/// The server's resident set in MiB (printed as `rss_mb`, as before).
fn rss_mb(pid: Option<u32>) -> Option<f64> {
    Some(sluice_alloc::resident_bytes_of(pid?)? as f64 / (1024.0 * 1024.0))
}

/// The server's memory by owner from its `/metrics`, in MB, as `name=value` pairs for the
/// progress line: heap bytes in use, then each `sluice_memory_bytes` owner.
async fn memory_by_owner(connection: &mut Option<Connection>, args: &Args) -> String {
    // The server closes a keep-alive connection that idles between scrapes: a failed
    // scrape on a kept connection is tried once more on a new one.
    let mut fresh = false;
    loop {
        if connection.is_none() {
            *connection = Connection::open(&args.addr, args.token.as_deref())
                .await
                .ok();
            fresh = true;
        }
        let Some(open) = connection.as_mut() else {
            return "memory=?".to_owned();
        };
        if let Ok(200) = open.get("/metrics").await {
            break;
        }
        *connection = None;
        if fresh {
            return "memory=?".to_owned();
        }
    }
    let Some(open) = connection.as_ref() else {
        return "memory=?".to_owned();
    };
    let text = String::from_utf8_lossy(&open.body);
    let mut pairs = Vec::new();
    for line in text.lines() {
        let (name, value) = match line.rsplit_once(' ') {
            Some((name, value)) => (name, value),
            None => continue,
        };
        let name = if name == "sluice_heap_allocated_bytes" {
            "heap"
        } else if let Some(owner) = name
            .strip_prefix("sluice_memory_bytes{owner=\"")
            .and_then(|rest| rest.strip_suffix("\"}"))
        {
            owner
        } else {
            continue;
        };
        if let Ok(bytes) = value.parse::<f64>() {
            pairs.push(format!("{name}_mb={:.0}", bytes / 1e6));
        }
    }
    pairs.join(" ")
}

/// Windows after warm-up, for a reading of the resident set's trend that the sawtooth of
/// the write buffers (filled, then flushed) and of each compaction does not decide.
const RSS_WINDOWS: usize = 4;

/// The mean of the samples in each of [`RSS_WINDOWS`] equal windows of `[from_s, to_s)`
/// (a window without samples is left out).
fn window_means(samples: &[(f64, f64)], from_s: f64, to_s: f64) -> Vec<f64> {
    let width_s = ((to_s - from_s) / RSS_WINDOWS as f64).max(f64::MIN_POSITIVE);
    let mut sums = [(0.0f64, 0usize); RSS_WINDOWS];
    for &(at_s, mb) in samples {
        let window = (((at_s - from_s) / width_s).max(0.0) as usize).min(RSS_WINDOWS - 1);
        sums[window].0 += mb;
        sums[window].1 += 1;
    }
    sums.iter()
        .filter(|(_, count)| *count > 0)
        .map(|(sum, count)| sum / *count as f64)
        .collect()
}

/// Bytes in the files under `path` (0 for what cannot be read: files come and go).
fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A fixed schedule: `wait` sleeps until the next slot (a slow step does not lower the
/// rate the load is offered at), and says whether the run goes on.
struct Pacer {
    interval: Duration,
    started: Instant,
    index: u32,
    deadline: Instant,
}

impl Pacer {
    fn new(per_s: f64, deadline: Instant) -> Self {
        let per_s = if per_s > 0.0 { per_s } else { 1e-9 };
        Self {
            interval: Duration::from_secs_f64((1.0 / per_s).min(1e6)),
            started: Instant::now(),
            index: 0,
            deadline,
        }
    }

    async fn wait(&mut self) -> bool {
        let due = self.started + self.interval * self.index;
        if due >= self.deadline {
            return false;
        }
        tokio::time::sleep_until(due.into()).await;
        self.index = self.index.saturating_add(1);
        true
    }
}

async fn reconnect(args: &Args, connection: &mut Connection) {
    if let Ok(fresh) = Connection::open(&args.addr, args.token.as_deref()).await {
        *connection = fresh;
    }
}

pub async fn run(args: Args) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    let connections = args.connections.max(1);
    let batches_per_s = args.rate as f64 / args.batch_events.max(1) as f64 / connections as f64;
    for _ in 0..connections {
        let (args, counts) = (args.clone(), Arc::clone(&counts));
        tasks.push(tokio::spawn(async move {
            let path = format!("/v1/collections/{}/events", args.collection);
            let mut connection = Connection::open(&args.addr, args.token.as_deref()).await?;
            let mut body = String::new();
            let mut pacer = Pacer::new(batches_per_s, deadline);
            while pacer.wait().await {
                body.clear();
                for _ in 0..args.batch_events {
                    event(&mut body, args.keys);
                }
                match connection.post(&path, &body, "application/x-ndjson").await {
                    Ok(200) => {
                        counts
                            .events
                            .fetch_add(args.batch_events as u64, Ordering::Relaxed);
                    }
                    Ok(status) => counts.error(
                        "ingest",
                        &format!(
                            "status {status}: {}",
                            String::from_utf8_lossy(&connection.body)
                        ),
                    ),
                    Err(error) => {
                        counts.error("ingest", &error.to_string());
                        reconnect(&args, &mut connection).await;
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    {
        let (args, counts) = (args.clone(), Arc::clone(&counts));
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(&args.addr, args.token.as_deref()).await?;
            let mut key = 0u64;
            let mut pacer = Pacer::new(args.read_rate as f64, deadline);
            while pacer.wait().await {
                key = (key + 7919) % args.keys.max(1);
                let path = format!("/v1/collections/{}/docs/{key}", args.collection);
                match connection.get(&path).await {
                    Ok(200 | 404) => {
                        counts.reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(status) => counts.error("read", &format!("status {status}")),
                    Err(error) => {
                        counts.error("read", &error.to_string());
                        reconnect(&args, &mut connection).await;
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    {
        let (args, counts) = (args.clone(), Arc::clone(&counts));
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(&args.addr, args.token.as_deref()).await?;
            let body = r#"{"sql": "SELECT specialty, count(*) AS n, avg(rating) AS rating FROM doctor GROUP BY 1 ORDER BY 1"}"#;
            let mut pacer = Pacer::new(1.0 / args.sql_every_s.max(1) as f64, deadline);
            while pacer.wait().await {
                match connection.post("/v1/sql", body, "application/json").await {
                    Ok(200) => {
                        counts.queries.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(status) => counts.error(
                        "sql",
                        &format!("status {status}: {}", String::from_utf8_lossy(&connection.body)),
                    ),
                    Err(error) => {
                        counts.error("sql", &error.to_string());
                        reconnect(&args, &mut connection).await;
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    {
        let (args, counts) = (args.clone(), Arc::clone(&counts));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if let Err(error) = follow(&args, &counts, deadline).await {
                    counts.error("stream", &error.to_string());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    let warm_up = Duration::from_secs(args.duration_s / 5);
    let mut rss_after_warm_up: Option<f64> = None;
    let mut rss_max_after: f64 = 0.0;
    let mut rss_min_after: Option<f64> = None;
    let mut rss_last = None;
    // (seconds since the start, MB) of every sample after warm-up.
    let mut rss_samples_after: Vec<(f64, f64)> = Vec::new();
    let mut disk_max_after_mb = 0.0f64;
    let mut metrics_connection = None;
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_secs(10).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        let rss = rss_mb(args.pid);
        rss_last = rss.or(rss_last);
        let disk_mb = args
            .data_dir
            .as_deref()
            .map(|dir| dir_bytes(dir) as f64 / 1e6);
        if started.elapsed() >= warm_up {
            if let Some(rss) = rss {
                rss_after_warm_up.get_or_insert(rss);
                rss_max_after = rss_max_after.max(rss);
                rss_min_after = Some(rss_min_after.map_or(rss, |min| min.min(rss)));
                rss_samples_after.push((started.elapsed().as_secs_f64(), rss));
            }
            disk_max_after_mb = disk_max_after_mb.max(disk_mb.unwrap_or(0.0));
        }
        let memory = memory_by_owner(&mut metrics_connection, &args).await;
        println!(
            "soak t={:>5.0}s events={} reads={} streamed={} queries={} errors={} rss_mb={} disk_mb={} {memory}",
            started.elapsed().as_secs_f64(),
            counts.events.load(Ordering::Relaxed),
            counts.reads.load(Ordering::Relaxed),
            counts.streamed.load(Ordering::Relaxed),
            counts.queries.load(Ordering::Relaxed),
            counts.errors.load(Ordering::Relaxed),
            rss.map_or_else(|| "?".to_owned(), |rss| format!("{rss:.0}")),
            disk_mb.map_or_else(|| "?".to_owned(), |disk| format!("{disk:.0}")),
        );
    }
    for task in tasks {
        task.await.context("a soak task panicked")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let first = rss_after_warm_up.unwrap_or(0.0);
    let window_means = window_means(&rss_samples_after, warm_up.as_secs_f64(), seconds);
    let window_growth_pct = match (
        window_means.first(),
        window_means.iter().copied().reduce(f64::max),
    ) {
        (Some(&first), Some(max)) if first > 0.0 => (max - first) / first * 100.0,
        _ => 0.0,
    };
    let window_means_text = window_means
        .iter()
        .map(|mean| format!("{mean:.0}"))
        .collect::<Vec<_>>()
        .join("/");
    println!(
        "RESULT sluice-soak wall_s={seconds:.0} events={} events_per_s={:.0} reads={} streamed={} queries={} errors={} rss_after_warm_up_mb={first:.0} rss_min_mb={:.0} rss_max_mb={rss_max_after:.0} rss_last_mb={:.0} rss_growth_pct={:.1} rss_spread_pct={:.1} rss_window_means_mb={window_means_text} rss_window_growth_pct={window_growth_pct:.1} disk_max_mb={disk_max_after_mb:.0}",
        counts.events.load(Ordering::Relaxed),
        counts.events.load(Ordering::Relaxed) as f64 / seconds,
        counts.reads.load(Ordering::Relaxed),
        counts.streamed.load(Ordering::Relaxed),
        counts.queries.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
        rss_min_after.unwrap_or(0.0),
        rss_last.unwrap_or(0.0),
        if first > 0.0 {
            (rss_max_after - first) / first * 100.0
        } else {
            0.0
        },
        match rss_min_after {
            Some(min) if min > 0.0 => (rss_max_after - min) / min * 100.0,
            _ => 0.0,
        },
    );
    Ok(())
}

/// Follows the change stream until `deadline`, counting `change` events.
async fn follow(args: &Args, counts: &Counts, deadline: Instant) -> Result<()> {
    let mut stream = TcpStream::connect(&args.addr).await?;
    let authorization = crate::authorization(args.token.as_deref());
    stream
        .write_all(
            format!(
                "GET /v1/changes/stream?collection={} HTTP/1.1\r\nHost: sluice\r\n{authorization}\r\n",
                args.collection
            )
            .as_bytes(),
        )
        .await?;
    let mut buffer = vec![0u8; 1 << 16];
    let needle = b"event: change";
    let mut carry: Vec<u8> = Vec::new();
    while Instant::now() < deadline {
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer))
            .await
            .context("the stream went silent for 30 s")??;
        if read == 0 {
            anyhow::bail!("the stream ended");
        }
        carry.extend_from_slice(&buffer[..read]);
        let found = carry
            .windows(needle.len())
            .filter(|window| window == needle)
            .count();
        counts.streamed.fetch_add(found as u64, Ordering::Relaxed);
        // Keep a tail that may hold the start of the next needle.
        let keep = carry.len().min(needle.len() - 1);
        carry.drain(..carry.len() - keep);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn window_means_average_each_window_and_skip_empty_ones() {
        let samples = [(100.0, 1.0), (200.0, 3.0), (900.0, 5.0), (1_000.0, 7.0)];
        // Four windows of 250 s over [0, 1000): the sample at the end joins the last one.
        assert_eq!(super::window_means(&samples, 0.0, 1_000.0), vec![2.0, 6.0]);
        assert!(super::window_means(&[], 0.0, 1_000.0).is_empty());
    }
}
