//! `sluice ingest`: bulk load through the same processor the server uses, durably.
//! The file is read in blocks cut at line ends; each block is parsed on this thread and
//! submitted while the writers commit earlier ones.

use crate::open_engine;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sluice_core::Config;
use sluice_engine::input::{self, Input};
use sluice_engine::{ItemResult, Status};
use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::time::Instant;
use tokio::task::JoinHandle;

/// Blocks parsed and submitted but not yet committed: enough to keep the writers busy
/// while this thread parses the next block, few enough to bound memory (a parsed block
/// takes several times its text).
const IN_FLIGHT_BLOCKS: usize = 2;

type Pending = JoinHandle<Result<Vec<ItemResult>, sluice_engine::EngineError>>;

pub fn run(
    config: &Config,
    data_dir: &Path,
    collection: &str,
    file: &Path,
    chunk_bytes: usize,
) -> Result<()> {
    let engine = open_engine(config, data_dir)?;
    let spec = engine.collection(collection)?.clone();
    let limits = engine.event_limits();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (mut reader, length): (Box<dyn Read>, u64) = if file == Path::new("-") {
        (Box::new(std::io::stdin().lock()), 0)
    } else {
        let opened =
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let length = opened
            .metadata()
            .map(|metadata| metadata.len())
            .unwrap_or(0);
        (Box::new(opened), length)
    };
    let progress = if length > 0 {
        ProgressBar::new(length)
    } else {
        ProgressBar::new_spinner()
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        progress.set_style(style);
    }

    let started = Instant::now();
    let in_flight_max = IN_FLIGHT_BLOCKS;
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut counts = Counts::default();
    let mut blocks = LineBlocks::new(chunk_bytes, limits.event_bytes_max);
    let mut next_line = 1;
    while let Some(block) = blocks
        .next_block(&mut reader)
        .with_context(|| format!("reading {}", file.display()))?
    {
        progress.inc(block.bytes as u64);
        let mut inputs = input::parse_lines_lenient(&spec, &block.text, next_line, limits);
        inputs.extend(block.oversized.into_iter().map(Input::Reject));
        next_line += block.lines;
        if pending.len() >= in_flight_max
            && let Some(oldest) = pending.pop_front()
        {
            counts.add(&runtime.block_on(oldest)??);
        }
        let engine = engine.clone();
        let collection = collection.to_owned();
        pending.push_back(runtime.spawn(async move { engine.submit(&collection, inputs).await }));
    }
    for handle in pending {
        counts.add(&runtime.block_on(handle)??);
    }
    progress.finish_and_clear();
    drop(engine); // joins the writers: everything is durable and closed
    let seconds = started.elapsed().as_secs_f64();
    let events = counts.total();
    println!(
        "ingested {events} events from {} into {collection} in {seconds:.3} s ({:.0} events/s): {} applied, {} noop, {} stale, {} rejected",
        file.display(),
        events as f64 / seconds.max(1e-9),
        counts.applied,
        counts.noop,
        counts.stale,
        counts.rejected,
    );
    Ok(())
}

#[derive(Default)]
struct Counts {
    applied: u64,
    noop: u64,
    stale: u64,
    rejected: u64,
}

impl Counts {
    fn add(&mut self, results: &[ItemResult]) {
        for result in results {
            match result.status {
                Status::Applied => self.applied += 1,
                Status::Noop => self.noop += 1,
                Status::Stale => self.stale += 1,
                Status::Rejected => self.rejected += 1,
            }
        }
    }

    fn total(&self) -> u64 {
        self.applied + self.noop + self.stale + self.rejected
    }
}

struct Block {
    text: String,
    /// Lines in the block, for numbering the next one.
    lines: usize,
    bytes: usize,
    /// Lines over the event size limit, cut short and rejected without being buffered.
    oversized: Vec<input::Rejection>,
}

/// Reads blocks of whole lines. A line longer than `line_bytes_max` is not kept in
/// memory: its head is kept for the rejected log and the rest skipped.
struct LineBlocks {
    block_bytes: usize,
    line_bytes_max: usize,
    carry: Vec<u8>,
    eof: bool,
}

impl LineBlocks {
    fn new(block_bytes: usize, line_bytes_max: usize) -> Self {
        Self {
            block_bytes: block_bytes.max(4096),
            line_bytes_max,
            carry: Vec::new(),
            eof: false,
        }
    }

    fn next_block(&mut self, reader: &mut dyn Read) -> std::io::Result<Option<Block>> {
        if self.eof && self.carry.is_empty() {
            return Ok(None);
        }
        let mut buffer = std::mem::take(&mut self.carry);
        let mut oversized = Vec::new();
        let mut skipped_lines = 0;
        let mut skipped_bytes = 0;
        loop {
            if !self.eof && buffer.len() < self.block_bytes {
                let start = buffer.len();
                buffer.resize(self.block_bytes.max(start + 4096), 0);
                let read = reader.read(&mut buffer[start..])?;
                buffer.truncate(start + read);
                self.eof = read == 0;
            }
            let cut = if self.eof {
                Some(buffer.len())
            } else {
                buffer.iter().rposition(|b| *b == b'\n').map(|i| i + 1)
            };
            match cut {
                Some(cut) => {
                    self.carry = buffer.split_off(cut);
                    break;
                }
                None if buffer.len() > self.line_bytes_max => {
                    // One line bigger than any event may be: keep its head, skip the rest.
                    let head = String::from_utf8_lossy(
                        &buffer[..input::REJECTED_TEXT_BYTES_MAX.min(buffer.len())],
                    )
                    .into_owned();
                    let (skipped, rest) = skip_line(reader, &mut self.eof)?;
                    skipped_bytes += buffer.len() + skipped;
                    let reason = format!("line is over the limit of {} bytes", self.line_bytes_max);
                    oversized.push(input::rejection(reason, &head, "oversized line"));
                    skipped_lines += 1;
                    buffer = rest;
                }
                None => {}
            }
        }
        let bytes = buffer.len() + skipped_bytes;
        let lines = buffer.iter().filter(|b| **b == b'\n').count() + skipped_lines;
        let text = match String::from_utf8(buffer) {
            Ok(text) => text,
            Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
        };
        Ok(Some(Block {
            text,
            lines,
            bytes,
            oversized,
        }))
    }
}

/// Discards input up to and including the next newline; returns the bytes skipped and
/// what was read after the newline.
fn skip_line(reader: &mut dyn Read, eof: &mut bool) -> std::io::Result<(usize, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    let mut skipped = 0;
    loop {
        let read = reader.read(&mut chunk)?;
        if read == 0 {
            *eof = true;
            return Ok((skipped, Vec::new()));
        }
        if let Some(position) = chunk[..read].iter().position(|b| *b == b'\n') {
            skipped += position + 1;
            return Ok((skipped, chunk[position + 1..read].to_vec()));
        }
        skipped += read;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(input: &str, block_bytes: usize, line_max: usize) -> Vec<(String, usize, usize)> {
        let mut reader = input.as_bytes();
        let mut blocks = LineBlocks::new(block_bytes, line_max);
        blocks.block_bytes = block_bytes;
        let mut out = Vec::new();
        while let Some(block) = blocks.next_block(&mut reader).unwrap() {
            out.push((block.text, block.lines, block.oversized.len()));
        }
        out
    }

    #[test]
    fn blocks_end_at_line_ends_and_skip_oversized_lines() {
        let got = blocks("a\nbb\nccc\n", 5, 100);
        let joined: String = got.iter().map(|(text, _, _)| text.as_str()).collect();
        assert_eq!(joined, "a\nbb\nccc\n");
        assert!(
            got.iter()
                .all(|(text, _, _)| text.is_empty() || text.ends_with('\n'))
        );
        assert_eq!(got.iter().map(|(_, lines, _)| lines).sum::<usize>(), 3);

        let long = "x".repeat(50_000);
        let got = blocks(&format!("a\n{long}\nb\n"), 4096, 1000);
        let joined: String = got.iter().map(|(text, _, _)| text.as_str()).collect();
        assert_eq!(joined, "a\nb\n");
        assert_eq!(
            got.iter().map(|(_, _, oversized)| oversized).sum::<usize>(),
            1
        );
        assert_eq!(got.iter().map(|(_, lines, _)| lines).sum::<usize>(), 3);
        assert_eq!(
            blocks("no newline at end", 4096, 100)[0].0,
            "no newline at end"
        );
    }
}
