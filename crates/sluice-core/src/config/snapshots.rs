//! `[snapshots]`: archiving the change log to object storage, compacting it into Parquet
//! snapshots, and SQL over them (the `sluice-snapshot` crate).

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsConfig {
    /// `false` turns archiving, snapshots and SQL off (they are on by default).
    #[serde(default = "defaults::enabled")]
    pub enabled: bool,
    /// Where segments and snapshots go: a directory (relative paths are relative to the
    /// data directory; default `snapshots` inside it) or `s3://bucket/prefix`.
    #[serde(default = "defaults::store")]
    pub store: String,
    /// S3-compatible endpoint (e.g. `http://127.0.0.1:5000`); AWS itself when absent.
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    #[serde(default)]
    pub s3_region: Option<String>,
    /// Credentials; when absent, the usual AWS environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...). Never logged.
    #[serde(default)]
    pub s3_access_key_id: Option<String>,
    #[serde(default)]
    pub s3_secret_access_key: Option<String>,
    /// Allow `http://` endpoints (local S3-compatible servers).
    #[serde(default)]
    pub s3_allow_http: bool,
    /// The archiver's consumer name (its durable cursor).
    #[serde(default = "defaults::archiver_consumer")]
    pub archiver_consumer: String,
    /// The archiver's CPU priority (Unix nice, 0..=19; 0: the server's). Archiving yields
    /// the CPU to ingest: under full load it falls behind (its lag is in `/metrics`, and
    /// retention keeps the log until it is archived) and catches up when the load eases.
    #[serde(default = "defaults::archiver_nice")]
    pub archiver_nice: u8,
    /// A segment is written once its records reach this size ...
    #[serde(default = "defaults::segment_bytes_max")]
    pub segment_bytes_max: usize,
    /// ... or its oldest record is this old.
    #[serde(default = "defaults::segment_age_max_s")]
    pub segment_age_max_s: u64,
    /// How often a new snapshot is compacted (0: only on demand).
    #[serde(default = "defaults::compact_interval_s")]
    pub compact_interval_s: u64,
    /// Snapshots kept per collection; older ones are deleted after a new one is in place.
    #[serde(default = "defaults::snapshots_kept")]
    pub snapshots_kept: usize,
    /// Memory a compaction or query may use before it spills to disk or fails.
    #[serde(default = "defaults::query_memory_bytes_max")]
    pub query_memory_bytes_max: usize,
    /// Rows a query may return.
    #[serde(default = "defaults::query_rows_max")]
    pub query_rows_max: usize,
    /// Time a query may take.
    #[serde(default = "defaults::query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// Bytes a query's result may hold (Arrow memory, before rendering).
    #[serde(default = "defaults::query_result_bytes_max")]
    pub query_result_bytes_max: usize,
    /// Bytes one value a SQL function builds may have (`repeat`, `lpad`, `rpad`, ...):
    /// DataFusion's memory pool does not see scalar results, so they are bounded here.
    #[serde(default = "defaults::query_value_bytes_max")]
    pub query_value_bytes_max: usize,
    /// Queries running at once; more are answered 503.
    #[serde(default = "defaults::queries_max")]
    pub queries_max: usize,
    /// Queries per second one token (or, without auth, everyone) may start after a burst
    /// of twice as many; more are answered 429.
    #[serde(default = "defaults::queries_per_token_per_s")]
    pub queries_per_token_per_s: u32,
    /// How long object-store operations are retried (with backoff) before the archiver
    /// reports itself down and starts over; the change log keeps the data meanwhile.
    #[serde(default = "defaults::retry_delay_max_ms")]
    pub retry_delay_max_ms: u64,
}

/// Types of the extra columns a collection declares (`columns = { rating = "double" }`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    String,
    Long,
    Double,
    Boolean,
}

mod defaults {
    pub fn enabled() -> bool {
        true
    }
    pub fn store() -> String {
        "snapshots".into()
    }
    pub fn archiver_consumer() -> String {
        "snapshot-archiver".into()
    }
    pub fn archiver_nice() -> u8 {
        10
    }
    pub fn segment_bytes_max() -> usize {
        64 << 20
    }
    pub fn segment_age_max_s() -> u64 {
        60
    }
    pub fn compact_interval_s() -> u64 {
        3600
    }
    pub fn snapshots_kept() -> usize {
        3
    }
    pub fn query_memory_bytes_max() -> usize {
        512 << 20
    }
    pub fn query_rows_max() -> usize {
        100_000
    }
    pub fn query_timeout_ms() -> u64 {
        30_000
    }
    pub fn query_result_bytes_max() -> usize {
        64 << 20
    }
    pub fn query_value_bytes_max() -> usize {
        1 << 20
    }
    pub fn queries_max() -> usize {
        4
    }
    pub fn queries_per_token_per_s() -> u32 {
        10
    }
    pub fn retry_delay_max_ms() -> u64 {
        10_000
    }
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        Self {
            enabled: defaults::enabled(),
            store: defaults::store(),
            s3_endpoint: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_allow_http: false,
            archiver_consumer: defaults::archiver_consumer(),
            archiver_nice: defaults::archiver_nice(),
            segment_bytes_max: defaults::segment_bytes_max(),
            segment_age_max_s: defaults::segment_age_max_s(),
            compact_interval_s: defaults::compact_interval_s(),
            snapshots_kept: defaults::snapshots_kept(),
            query_memory_bytes_max: defaults::query_memory_bytes_max(),
            query_rows_max: defaults::query_rows_max(),
            query_timeout_ms: defaults::query_timeout_ms(),
            query_result_bytes_max: defaults::query_result_bytes_max(),
            query_value_bytes_max: defaults::query_value_bytes_max(),
            queries_max: defaults::queries_max(),
            queries_per_token_per_s: defaults::queries_per_token_per_s(),
            retry_delay_max_ms: defaults::retry_delay_max_ms(),
        }
    }
}

impl SnapshotsConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.store.trim().is_empty() {
            return Err("snapshots.store is empty".into());
        }
        if self.segment_bytes_max < 1024 {
            return Err("snapshots.segment_bytes_max must be at least 1024".into());
        }
        if self.archiver_nice > 19 {
            return Err("snapshots.archiver_nice must be 0..=19".into());
        }
        if self.snapshots_kept == 0 {
            return Err("snapshots.snapshots_kept must be at least 1".into());
        }
        if self.query_rows_max == 0 || self.query_timeout_ms == 0 {
            return Err("snapshots.query_rows_max and query_timeout_ms must be > 0".into());
        }
        Ok(())
    }
}
