//! store-choice: compare fjall 3.1 and redb 4.6 on Sluice's ingest write workload.
//!
//! Usage: `store-choice [fjall|redb|all]` (default `all`). Each (store, run) is executed
//! in a child process so that peak RSS (VmHWM) is per store; runs of the two stores are
//! interleaved and the median of 3 runs is printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const KEYS: u64 = 20_000;
const EVENTS: u64 = 200_000;
const BATCH: u64 = 1_000;
const READS: u64 = 100_000;
const SINGLE_COMMITS: u64 = 2_000;
const RUNS: usize = 3;
const DOC_LEN: usize = 250;
const CHANGE_LEN: usize = 350;
const PARTITIONS: u64 = 16;
const WORK_DIR: &str = "/work/main/bench-work/store-choice";

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn fill_ascii(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = b'a' + (self.next() % 26) as u8;
        }
    }
}

fn doc_key(id: u64) -> Vec<u8> {
    let mut k = b"doctor\0".to_vec();
    k.extend_from_slice(id.to_string().as_bytes());
    k
}

fn change_key(id: u64, offset: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(&((id % PARTITIONS) as u16).to_be_bytes());
    k[2..].copy_from_slice(&offset.to_be_bytes());
    k
}

/// Partial update: start from the old doc (or a fresh one), bump a version and patch a field.
fn new_doc(old: Option<&[u8]>, seq: u64, rng: &mut XorShift) -> Vec<u8> {
    let mut doc = match old {
        Some(o) if o.len() == DOC_LEN => o.to_vec(),
        _ => {
            let mut d = vec![0u8; DOC_LEN];
            rng.fill_ascii(&mut d);
            d
        }
    };
    doc[..8].copy_from_slice(&seq.to_be_bytes());
    let at = 8 + (rng.next() as usize % (DOC_LEN - 8 - 24));
    rng.fill_ascii(&mut doc[at..at + 24]);
    doc
}

fn change_value(seq: u64, rng: &mut XorShift) -> Vec<u8> {
    let mut v = vec![0u8; CHANGE_LEN];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    rng.fill_ascii(&mut v[8..]);
    v
}

/// The minimal store interface the workload needs.
trait Store {
    /// Apply one atomic, durable batch of events. For each event: get doc, put doc, append change.
    fn apply(&mut self, ids: &[u64], first_seq: u64, rng: &mut XorShift) -> Res<()>;
    /// Random point reads on docs; returns number of hits.
    fn point_reads(&self, n: u64, rng: &mut XorShift) -> Res<u64>;
}

struct Fjall {
    db: fjall::Database,
    docs: fjall::Keyspace,
    changes: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path) -> Res<Self> {
        let db = fjall::Database::builder(dir).open()?;
        let docs = db.keyspace("docs", fjall::KeyspaceCreateOptions::default)?;
        let changes = db.keyspace("changes", fjall::KeyspaceCreateOptions::default)?;
        Ok(Self { db, docs, changes })
    }
}

impl Store for Fjall {
    fn apply(&mut self, ids: &[u64], first_seq: u64, rng: &mut XorShift) -> Res<()> {
        let mut batch = self.db.batch();
        for (i, &id) in ids.iter().enumerate() {
            let seq = first_seq + i as u64;
            let key = doc_key(id);
            // Note: reads committed state only (a batch does not see its own writes).
            let old = self.docs.get(&key)?;
            let doc = new_doc(old.as_deref(), seq, rng);
            batch.insert(&self.docs, key, doc);
            batch.insert(&self.changes, change_key(id, seq).to_vec(), change_value(seq, rng));
        }
        batch.commit()?;
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }

    fn point_reads(&self, n: u64, rng: &mut XorShift) -> Res<u64> {
        let mut hits = 0;
        for _ in 0..n {
            if let Some(v) = self.docs.get(doc_key(rng.next() % KEYS))? {
                hits += u64::from(v.len() == DOC_LEN);
            }
        }
        Ok(hits)
    }
}

const DOCS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("docs");
const CHANGES: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("changes");

struct Redb {
    db: redb::Database,
}

impl Redb {
    fn open(dir: &Path) -> Res<Self> {
        let db = redb::Database::create(dir.join("sluice.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(DOCS)?;
        tx.open_table(CHANGES)?;
        tx.commit()?;
        Ok(Self { db })
    }
}

impl Store for Redb {
    fn apply(&mut self, ids: &[u64], first_seq: u64, rng: &mut XorShift) -> Res<()> {
        use redb::ReadableTable;
        let tx = self.db.begin_write()?; // default durability: Immediate (fsync on commit)
        {
            let mut docs = tx.open_table(DOCS)?;
            let mut changes = tx.open_table(CHANGES)?;
            for (i, &id) in ids.iter().enumerate() {
                let seq = first_seq + i as u64;
                let key = doc_key(id);
                let doc = {
                    let old = docs.get(key.as_slice())?;
                    new_doc(old.as_ref().map(|g| g.value()), seq, rng)
                };
                docs.insert(key.as_slice(), doc.as_slice())?;
                let ck = change_key(id, seq);
                changes.insert(ck.as_slice(), change_value(seq, rng).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn point_reads(&self, n: u64, rng: &mut XorShift) -> Res<u64> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let docs = tx.open_table(DOCS)?;
        let mut hits = 0;
        for _ in 0..n {
            if let Some(v) = docs.get(doc_key(rng.next() % KEYS).as_slice())? {
                hits += u64::from(v.value().len() == DOC_LEN);
            }
        }
        Ok(hits)
    }
}

/// Allocated bytes (st_blocks * 512), so sparse/preallocated file tails are not counted.
fn dir_size(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// One run in a fresh directory. Prints `RESULT key=value ...` on stdout.
fn run_child(store: &str, dir: &Path) -> Res<()> {
    let mut s: Box<dyn Store> = match store {
        "fjall" => Box::new(Fjall::open(dir)?),
        "redb" => Box::new(Redb::open(dir)?),
        other => return Err(format!("unknown store {other}").into()),
    };
    // Separate streams so both stores see exactly the same keys regardless of payload draws.
    let mut keys = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);

    // Phase 1: 200 durable batches of 1,000 events.
    let mut ids = Vec::with_capacity(BATCH as usize);
    let t = Instant::now();
    let mut seq = 0;
    while seq < EVENTS {
        ids.clear();
        ids.extend((0..BATCH).map(|_| keys.next() % KEYS));
        s.apply(&ids, seq, &mut rng)?;
        seq += BATCH;
    }
    let load_s = t.elapsed().as_secs_f64();

    // Phase 2: random point reads after the load.
    let t = Instant::now();
    let hits = s.point_reads(READS, &mut keys)?;
    let read_s = t.elapsed().as_secs_f64();
    // A few of the 20k ids are never drawn during the load, so not every read hits.
    if hits < READS * 99 / 100 {
        return Err(format!("only {hits} of {READS} reads hit").into());
    }
    let size_after_load = dir_size(dir);

    // Phase 3: single-event durable commits on the loaded store.
    let mut lat = Vec::with_capacity(SINGLE_COMMITS as usize);
    for _ in 0..SINGLE_COMMITS {
        let id = [keys.next() % KEYS];
        let t = Instant::now();
        s.apply(&id, seq, &mut rng)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        seq += 1;
    }
    lat.sort_by(f64::total_cmp);
    drop(s);

    println!(
        "RESULT load_s={load_s} read_s={read_s} hits={hits} size_mib={} size_closed_mib={} hwm_mib={} p50_ms={} p99_ms={}",
        size_after_load as f64 / 1048576.0,
        dir_size(dir) as f64 / 1048576.0,
        vm_hwm_kib() as f64 / 1024.0,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
    );
    Ok(())
}

/// Raw device baseline: p50/p99 of (append 4 KiB + fdatasync), in ms.
fn fsync_baseline(dir: &Path) -> Res<(f64, f64)> {
    use std::io::Write;
    let path = dir.join(format!("fsync-probe-{}", std::process::id()));
    let mut f = std::fs::File::create(&path)?;
    let buf = [7u8; 4096];
    let mut lat = Vec::with_capacity(SINGLE_COMMITS as usize);
    for _ in 0..SINGLE_COMMITS {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    std::fs::remove_file(&path)?;
    lat.sort_by(f64::total_cmp);
    Ok((percentile(&lat, 0.50), percentile(&lat, 0.99)))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__child") {
        return run_child(&args[2], Path::new(&args[3]));
    }
    let stores: Vec<&str> = match args.get(1).map(String::as_str).unwrap_or("all") {
        "all" => vec!["fjall", "redb"],
        s @ ("fjall" | "redb") => vec![s],
        _ => return Err("usage: store-choice [fjall|redb|all]".into()),
    };

    let exe = std::env::current_exe()?;
    let root = PathBuf::from(WORK_DIR);
    std::fs::create_dir_all(&root)?;
    let pid = std::process::id();
    // results[store][run] = parsed key/value pairs
    let mut results: Vec<Vec<Vec<(String, f64)>>> = vec![Vec::new(); stores.len()];
    for run in 0..RUNS {
        for (si, store) in stores.iter().enumerate() {
            let dir = root.join(format!("{store}-{pid}-{run}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let out = Command::new(&exe).args(["__child", store]).arg(&dir).output()?;
            let _ = std::fs::remove_dir_all(&dir);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout.lines().find(|l| l.starts_with("RESULT "));
            let Some(line) = line.filter(|_| out.status.success()) else {
                return Err(format!(
                    "{store} run {run} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
                .into());
            };
            eprintln!("{store} run {}: {}", run + 1, &line[7..]);
            let kv = line[7..]
                .split_whitespace()
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN)))
                .collect();
            results[si].push(kv);
        }
    }

    let med = |si: usize, key: &str| {
        let mut v: Vec<f64> = results[si]
            .iter()
            .filter_map(|r| r.iter().find(|(k, _)| k == key).map(|(_, v)| *v))
            .collect();
        median(&mut v)
    };
    let rows: [(&str, Box<dyn Fn(usize) -> String>); 9] = [
        ("load 200k events, 200 x 1k-event batches (s)", Box::new(|i| format!("{:.2}", med(i, "load_s")))),
        ("load throughput (events/s)", Box::new(|i| format!("{:.0}", EVENTS as f64 / med(i, "load_s")))),
        ("100k random point reads (s)", Box::new(|i| format!("{:.3}", med(i, "read_s")))),
        ("point reads/s", Box::new(|i| format!("{:.0}", READS as f64 / med(i, "read_s")))),
        ("single-event commit p50 (ms)", Box::new(|i| format!("{:.3}", med(i, "p50_ms")))),
        ("single-event commit p99 (ms)", Box::new(|i| format!("{:.3}", med(i, "p99_ms")))),
        ("disk allocated after load, store open (MiB)", Box::new(|i| format!("{:.1}", med(i, "size_mib")))),
        ("disk allocated at close, after +2k commits (MiB)", Box::new(|i| format!("{:.1}", med(i, "size_closed_mib")))),
        ("peak RSS, VmHWM (MiB)", Box::new(|i| format!("{:.1}", med(i, "hwm_mib")))),
    ];
    let (f50, f99) = fsync_baseline(&root)?;
    println!("\ndevice baseline, 4 KiB append + fdatasync: p50 {f50:.3} ms, p99 {f99:.3} ms");
    println!("median of {RUNS} runs");
    print!("| metric |");
    for s in &stores {
        print!(" {s} |");
    }
    print!("\n|---|");
    for _ in &stores {
        print!("---:|");
    }
    println!();
    for (name, f) in &rows {
        print!("| {name} |");
        for si in 0..stores.len() {
            print!(" {} |", f(si));
        }
        println!();
    }
    Ok(())
}
