//! `sluice-nats-bench`: inbound throughput from JetStream, Sluice against its peer in the
//! same run. Fills a stream with `--messages` doctor events, then drains it twice with
//! consumers of the same configuration (explicit acks, batches of what is ready):
//!
//! 1. the peer, a bare async-nats loop: pull, acknowledge each message, nothing else;
//! 2. Sluice's inbound reader: pull, parse, merge and commit durably (fsync), then
//!    acknowledge each message.
//!
//! Prints messages/s for both and Sluice's share of the peer's rate.

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::pull};
use clap::Parser;
use futures_util::StreamExt;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Distinct doctors.
    #[arg(long, default_value_t = 20_000)]
    keys: u64,
    /// Messages per pull (and per batch Sluice commits).
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Batches Sluice queues before the oldest is durable.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Keep the stream for another run instead of deleting it.
    #[arg(long)]
    keep: bool,
}

const STREAM: &str = "SLUICE_BENCH_IN";
const SUBJECT: &str = "bench.in.doctor";

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = async_nats::connect(args.url.as_str())
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let js = jetstream::new(client);
    fill(&js, &args).await?;
    let bare = drain_bare(&js, &args).await?;
    let sluice = drain_sluice(&args).await?;
    let rate = |seconds: f64| args.messages as f64 / seconds;
    println!(
        "bare async-nats pull+ack: {:.3} s, {:.0} msg/s",
        bare,
        rate(bare)
    );
    println!(
        "sluice inbound (parse, merge, fsync, ack): {:.3} s, {:.0} msg/s",
        sluice,
        rate(sluice)
    );
    println!("sluice / bare: {:.1} %", 100.0 * bare / sluice);
    if !args.keep {
        js.delete_stream(STREAM)
            .await
            .context("deleting the stream")?;
    }
    Ok(())
}

/// A doctor event: partial, versioned, about 120 bytes.
fn event(sequence: u64, keys: u64) -> String {
    const SPECIALTIES: [&str; 6] = [
        "cardiology",
        "dermatology",
        "oncology",
        "pediatrics",
        "neurology",
        "radiology",
    ];
    let doctor = sequence % keys;
    let specialty = SPECIALTIES[(sequence % 6) as usize];
    format!(
        r#"{{"doctor_id": {doctor}, "updated_at": {sequence}, "specialty": "{specialty}", "location_id": {}, "rating": {}.{}}}"#,
        sequence % 97,
        sequence % 5,
        sequence % 10
    )
}

async fn fill(js: &jetstream::Context, args: &Args) -> Result<()> {
    let _ = js.delete_stream(STREAM).await;
    js.create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        ..Default::default()
    })
    .await
    .context("creating the stream")?;
    let started = Instant::now();
    let mut acks = Vec::with_capacity(4096);
    for sequence in 1..=args.messages {
        acks.push(
            js.publish(SUBJECT, event(sequence, args.keys).into())
                .await?,
        );
        if acks.len() == 4096 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    eprintln!(
        "filled {STREAM} with {} messages in {:.1} s",
        args.messages,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The consumer configuration both sides use (Sluice's reader creates the same).
fn consumer_config(name: &str, batch: usize) -> pull::Config {
    pull::Config {
        durable_name: Some(name.into()),
        filter_subject: SUBJECT.into(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: (batch * 18) as i64,
        ..Default::default()
    }
}

async fn drain_bare(js: &jetstream::Context, args: &Args) -> Result<f64> {
    let stream = js.get_stream(STREAM).await?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(consumer_config("bare", args.batch))
        .await?;
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(args.batch)
        .messages()
        .await?
        .ready_chunks(args.batch);
    let mut seen = 0;
    while seen < args.messages {
        let Some(batch) = messages.next().await else {
            bail!("the message stream ended after {seen}");
        };
        for message in batch {
            let message = message.map_err(|error| anyhow::anyhow!("{error}"))?;
            message
                .ack()
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            seen += 1;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn drain_sluice(args: &Args) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let config = sluice_core::Config::from_toml(&format!(
        r#"
[[collections]]
name = "doctor"
key = ["/doctor_id"]
version = "/updated_at"

[nats]
url = "{}"

[[nats.inbound]]
stream = "{STREAM}"
subject = "{SUBJECT}"
collection = "doctor"
consumer = "sluice"
fetch_messages_max = {}
batches_in_flight_max = {}
"#,
        args.url, args.batch, args.in_flight
    ))?;
    let engine = sluice_engine::Engine::open(&config, dir.path())?;
    let component = engine.component(&format!("nats-inbound:{STREAM}:sluice"));
    let handled = || {
        let counts = component.status().counts;
        ["applied", "noop", "stale", "rejected"]
            .iter()
            .filter_map(|name| counts.get(name))
            .sum::<u64>()
    };
    let started = Instant::now();
    let nats = config.nats.clone().context("the [nats] section")?;
    let connectors = sluice_nats::start(engine.clone(), nats).await?;
    // Poll the reader's counters: 1 ms is small against the seconds measured.
    while handled() < args.messages {
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "only {} of {} messages after 10 minutes",
                handled(),
                args.messages
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    connectors.stop().await;
    let counts = component.status().counts;
    eprintln!("sluice outcomes: {counts:?}");
    Ok(elapsed)
}
