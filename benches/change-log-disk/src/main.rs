//! Does change-log retention give disk back? An append-only log of 150 KB chunks over 4
//! partitions (Sluice's change log: one chunk per committed batch and partition), with
//! retention keeping the newest ~150 MB, in three layouts:
//!
//! - `tomb`: one keyspace for every partition, removed chunks deleted (tombstones only);
//! - `drop`: the same, plus `drop_range` over each partition's removed range;
//! - `perpart`: one keyspace per partition, tombstones plus `drop_range` (what Sluice does).
//!
//! `cargo run --release -- VARIANT [MEGABYTES]` prints the data directory's size as it goes.

use fjall::{AbstractTree, Database, KeyspaceCreateOptions};
use std::path::Path;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn dir_bytes(path: &Path) -> u64 {
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

fn key(partition: u16, offset: u64) -> [u8; 10] {
    let mut key = [0; 10];
    key[..2].copy_from_slice(&partition.to_be_bytes());
    key[2..].copy_from_slice(&offset.to_be_bytes());
    key
}

const PARTITIONS: u16 = 4;
const CHUNK_BYTES: u64 = 150_000;
/// Chunks kept per partition (4 × 250 × 150 KB = 150 MB).
const KEPT_CHUNKS: u64 = 250;
/// Chunks written between retention passes.
const PASS_EVERY_CHUNKS: u64 = 400;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let variant = args.next().ok_or("usage: change-log-disk tomb|drop|perpart [MEGABYTES]")?;
    let total_mb: u64 = args.next().map_or(Ok(2000), |text| text.parse())?;
    let path = Path::new("bench-work/change-log-disk").join(&variant);
    let _ = std::fs::remove_dir_all(&path);
    let db = Database::builder(&path)
        .cache_size(32 << 20)
        .max_journaling_size(64 << 20)
        .open()?;
    let open = |name: &str| {
        db.keyspace(name, || {
            KeyspaceCreateOptions::default().max_memtable_size(16 << 20)
        })
    };
    let shared = open("changes")?;
    let keyspaces = (0..PARTITIONS)
        .map(|partition| match variant.as_str() {
            "perpart" => open(&format!("changes_{partition}")),
            _ => Ok(shared.clone()),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let chunk = vec![7u8; CHUNK_BYTES as usize];
    let chunks_total = total_mb * 1_000_000 / CHUNK_BYTES;
    let mut oldest = vec![0u64; usize::from(PARTITIONS)];
    let started = std::time::Instant::now();
    for index in 0..chunks_total {
        let partition = (index % u64::from(PARTITIONS)) as u16;
        let offset = index / u64::from(PARTITIONS);
        let mut batch = db.batch();
        batch.insert(&keyspaces[usize::from(partition)], key(partition, offset), chunk.as_slice());
        batch.commit()?;
        if index % PASS_EVERY_CHUNKS == PASS_EVERY_CHUNKS - 1 {
            for partition in 0..PARTITIONS {
                let keyspace = &keyspaces[usize::from(partition)];
                let keep_from = offset.saturating_sub(KEPT_CHUNKS);
                let from = oldest[usize::from(partition)];
                let mut batch = db.batch();
                for removed in from..keep_from {
                    batch.remove(keyspace, key(partition, removed));
                }
                batch.commit()?;
                if variant != "tomb" && keep_from > from {
                    keyspace
                        .tree
                        .drop_range(key(partition, 0)..key(partition, keep_from))?;
                }
                oldest[usize::from(partition)] = keep_from.max(from);
            }
        }
        if index % 4000 == 0 {
            println!(
                "{variant} written_mb={} dir_mb={} t={:.0}s",
                index * CHUNK_BYTES / 1_000_000,
                dir_bytes(&path) / 1_000_000,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let scan = std::time::Instant::now();
    for (partition, keyspace) in keyspaces.iter().enumerate() {
        let _ = keyspace.prefix((partition as u16).to_be_bytes()).next();
    }
    println!(
        "{variant} END written_mb={total_mb} dir_mb={} first_key_scan={:?} elapsed={:.0}s",
        dir_bytes(&path) / 1_000_000,
        scan.elapsed(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
