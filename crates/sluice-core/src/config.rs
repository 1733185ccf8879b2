//! `sluice.toml`: the one config struct. Unknown keys are errors that name the key and
//! the line (serde's `deny_unknown_fields` plus toml's positioned errors).

mod indexes;
mod nats;
mod projections;
mod snapshots;

pub use indexes::{DEFAULT_LANE, FieldConfig, FieldType, IndexConfig, LaneConfig};
pub use nats::{InboundConfig, NatsConfig, OutboundConfig, OutboundStart};
pub use projections::{
    CALL_STACK_BYTES_LIMIT, ProjectionConfig, ProjectionRedisConfig, ProjectionTarget,
};
pub use snapshots::{ColumnType, SnapshotsConfig};

use crate::pointer::Pointer;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

pub const LISTEN_DEFAULT: &str = "127.0.0.1:7070";
pub const PARTITIONS_DEFAULT: u16 = 4;
pub const PARTITIONS_MAX: u16 = 256;
pub const KEY_FIELDS_MAX: usize = 8;
/// Columns every snapshot row has; declared columns cannot take these names.
pub const RESERVED_COLUMNS: &[&str] = &[
    "key",
    "version",
    "doc",
    "op",
    "partition",
    "offset",
    "ts_ms",
];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub collections: Vec<CollectionConfig>,
    /// The NATS JetStream connector (`sluice-nats`); off when absent.
    #[serde(default)]
    pub nats: Option<NatsConfig>,
    /// Archive, Parquet snapshots and SQL (`sluice-snapshot`): on by default, with a
    /// local store under the data directory; `None` once `enabled = false`.
    #[serde(default = "snapshots_on")]
    pub snapshots: Option<SnapshotsConfig>,
    /// Read models computed by small functions (`sluice-projections`).
    #[serde(default)]
    pub projections: Vec<ProjectionConfig>,
    /// Live search indexes (`sluice-search`).
    #[serde(default)]
    pub indexes: Vec<IndexConfig>,
}

fn snapshots_on() -> Option<SnapshotsConfig> {
    Some(SnapshotsConfig::default())
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API listens on. On a loopback address with no access token the
    /// API is open; anywhere else, or once a token exists, every request needs a token.
    pub listen: SocketAddr,
    /// Directory of the embedded store. Relative paths are relative to the config file.
    pub data_dir: PathBuf,
    /// HTTPS with these PEM files; plain HTTP when absent.
    pub tls: Option<TlsConfig>,
    /// A file holding the bootstrap admin token (kept in memory only, never in the data
    /// directory); `SLUICE_ADMIN_TOKEN` does the same. Relative to the config file.
    pub admin_token_file: Option<PathBuf>,
    /// Open connections at once; more are closed as soon as they are accepted.
    pub connections_max: usize,
    /// Time a client has to send a request's headers (and a TLS handshake), so that
    /// half-open connections cannot pile up.
    pub header_read_timeout_ms: u64,
    /// Failed authentications one client address may make in a burst ...
    pub auth_failures_burst: u32,
    /// ... and per second after it; beyond that its requests are answered 429.
    pub auth_failures_per_s: u32,
    /// Lifetime of a browser session made by the login page (never past its token's).
    pub session_ttl_s: u64,
    /// Browser sessions kept at once; the oldest goes first.
    pub sessions_max: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, relative to the config file.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1), PEM, relative to the config file.
    pub key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: LISTEN_DEFAULT
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7070))),
            data_dir: PathBuf::from("data"),
            tls: None,
            admin_token_file: None,
            connections_max: 4096,
            header_read_timeout_ms: 10_000,
            auth_failures_burst: 20,
            auth_failures_per_s: 2,
            session_ttl_s: 12 * 3600,
            sessions_max: 10_000,
        }
    }
}

/// Limits on what a client may send and ask for.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub event_bytes_max: usize,
    pub request_bytes_max: usize,
    pub request_events_max: usize,
    /// Nesting depth of an event's JSON (objects and arrays).
    pub event_depth_max: usize,
    pub changes_limit_max: usize,
    pub docs_limit_max: usize,
    pub wait_ms_max: u64,
    /// Rejected events kept per collection; older ones are dropped first.
    pub rejected_kept_max: u64,
    /// Ingest requests being read or processed at once; more are answered 503, so that
    /// request bodies cannot pile up in memory.
    pub ingest_requests_max: usize,
    /// Time an ingest request may take, body upload included; a client that sends its
    /// body too slowly would otherwise hold one of `ingest_requests_max` forever.
    pub ingest_request_timeout_ms: u64,
    /// Server-sent-event streams open at once; more are answered 503.
    pub streams_max: usize,
    /// Interval of the comment lines that keep an idle event stream open.
    pub stream_heartbeat_ms: u64,
    /// Keys one `POST /v1/projections/{name}/get` may ask for.
    pub projection_get_keys_max: usize,
    /// Hits one search may ask for (`limit`).
    pub search_limit_max: usize,
    /// How deep a search may page (`offset`).
    pub search_offset_max: usize,
    /// Searches (and autocompletes) running at once; more are answered 503.
    pub searches_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            event_bytes_max: 1 << 20,
            request_bytes_max: 64 << 20,
            request_events_max: 200_000,
            event_depth_max: 64,
            changes_limit_max: 10_000,
            docs_limit_max: 10_000,
            wait_ms_max: 60_000,
            rejected_kept_max: 100_000,
            ingest_requests_max: 64,
            ingest_request_timeout_ms: 30_000,
            streams_max: 256,
            stream_heartbeat_ms: 15_000,
            projection_get_keys_max: 1_000,
            search_limit_max: 1_000,
            search_offset_max: 10_000,
            searches_max: 32,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Writer partitions. Fixed when the data directory is created: per-key order
    /// depends on it.
    pub partitions: u16,
    /// Events one writer applies and commits together.
    pub batch_events_max: usize,
    /// Submissions (requests' slices) waiting per partition before callers wait.
    pub queue_submissions_max: usize,
    /// How long a request waits for queue space before it is answered 503.
    pub enqueue_timeout_ms: u64,
    /// Encoded document states the writers keep in memory (all partitions together), so
    /// that most events need no store read.
    pub doc_cache_bytes_max: usize,
    /// Block cache of the embedded store.
    pub store_cache_bytes: u64,
    /// In-memory table size per keyspace of the embedded store, before it is flushed.
    pub store_memtable_bytes: u64,
    /// Journal the store keeps before it forces its in-memory tables to disk; this
    /// bounds the memory writes take (at least 64 MiB).
    pub store_journal_bytes_max: u64,
    /// In-memory tables (active and waiting for their flush) above which writers pause
    /// after a commit until the store's flushes catch up: the memory bound for writes.
    pub store_write_buffer_bytes_max: u64,
    /// Change-log retention: a record is removed only once every consumer and
    /// subscription has passed it, it is older than this, and at least
    /// `changes_kept_min_records` newer records remain in its partition.
    pub changes_kept_min_age_s: u64,
    pub changes_kept_min_records: u64,
    /// How often retention runs.
    pub retention_interval_ms: u64,
    /// Event ids (CloudEvents `id`, inbound message positions) remembered per document in
    /// collections without a version field: a redelivery of one of the last this many
    /// events of a document is dropped as a no-op.
    pub seen_ids_per_document_max: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            partitions: PARTITIONS_DEFAULT,
            batch_events_max: 4096,
            queue_submissions_max: 1024,
            enqueue_timeout_ms: 2_000,
            doc_cache_bytes_max: 64 << 20,
            store_cache_bytes: 32 << 20,
            store_memtable_bytes: 16 << 20,
            store_journal_bytes_max: 64 << 20,
            store_write_buffer_bytes_max: 96 << 20,
            changes_kept_min_age_s: 7 * 24 * 3600,
            changes_kept_min_records: 1_000_000,
            retention_interval_ms: 60_000,
            seen_ids_per_document_max: 32,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Versions per JSON path: the result depends only on the set of events.
    #[default]
    Field,
    /// One version per document: an event not newer than the document is stale.
    Document,
}

/// The declared type of a key field.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Integer,
    String,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Integer => "integer",
            KeyType::String => "string",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    pub name: String,
    /// JSON pointers to the key fields; values must be strings or integers.
    pub key: Vec<String>,
    /// One type per key field (`["integer"]`, `["string"]`): an event whose key field has
    /// another type is rejected, and snapshots type the column so. Without it, snapshots
    /// make a key column an integer column when all its values are integers.
    #[serde(default)]
    pub key_types: Option<Vec<KeyType>>,
    /// JSON pointer to the version (integer or RFC 3339 time). Without it, arrival order
    /// is the version.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub ordering: Ordering,
    /// Top-level fields copied into typed columns of the Parquet snapshots, beside the
    /// document's JSON: `columns = { specialty = "string", rating = "double" }`.
    #[serde(default)]
    pub columns: std::collections::BTreeMap<String, ColumnType>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Parses and validates a config file's text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text)?;
        config.validate()?;
        if config
            .snapshots
            .as_ref()
            .is_some_and(|snapshots| !snapshots.enabled)
        {
            config.snapshots = None;
        }
        Ok(config)
    }

    /// The first problem of [`Config::problems`], as an error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(ConfigError::Invalid(problem.message)),
            None => Ok(()),
        }
    }

    /// Every problem of a config that parsed, each with where it is (`sluice validate`
    /// turns that into a line).
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |at: String, message: String| problems.push(Problem { at, message });
        let engine = &self.engine;
        if engine.partitions == 0 || engine.partitions > PARTITIONS_MAX {
            problem(
                "engine.partitions".into(),
                format!("engine.partitions must be 1..={PARTITIONS_MAX}"),
            );
        }
        if engine.batch_events_max == 0 {
            problem(
                "engine.batch_events_max".into(),
                "engine.batch_events_max must be > 0".into(),
            );
        }
        if engine.queue_submissions_max == 0 {
            problem(
                "engine.queue_submissions_max".into(),
                "engine.queue_submissions_max must be > 0".into(),
            );
        }
        let limits = &self.limits;
        if limits.event_bytes_max == 0 || limits.request_bytes_max < limits.event_bytes_max {
            problem(
                "limits.request_bytes_max".into(),
                "limits.request_bytes_max must be >= limits.event_bytes_max > 0".into(),
            );
        }
        let mut names = HashSet::new();
        for (index, collection) in self.collections.iter().enumerate() {
            let at = format!("collections[{index}]");
            for (field, message) in collection.problems() {
                problem(format!("{at}.{field}"), message);
            }
            if !names.insert(collection.name.as_str()) {
                problem(
                    format!("{at}.name"),
                    format!("collection {:?} is defined twice", collection.name),
                );
            }
        }
        if let Some(snapshots) = &self.snapshots
            && let Err(message) = snapshots.validate()
        {
            problem("snapshots".into(), message);
        }
        let names: Vec<&str> = self
            .collections
            .iter()
            .map(|collection| collection.name.as_str())
            .collect();
        if let Some(nats) = &self.nats
            && let Err(message) = nats.validate(&names)
        {
            problem("nats".into(), message);
        }
        let mut projection_names = HashSet::new();
        for (index, projection) in self.projections.iter().enumerate() {
            let at = format!("projections[{index}]");
            for (field, message) in projection.problems(&names) {
                problem(format!("{at}.{field}"), message);
            }
            if !projection_names.insert(projection.name.as_str()) {
                problem(
                    format!("{at}.name"),
                    format!("projection {:?} is defined twice", projection.name),
                );
            }
        }
        let mut index_names = HashSet::new();
        for (position, index) in self.indexes.iter().enumerate() {
            let at = format!("indexes[{position}]");
            for (field, message) in index.problems(&names) {
                problem(format!("{at}.{field}"), message);
            }
            if !index_names.insert(index.name.as_str()) {
                problem(
                    format!("{at}.name"),
                    format!("index {:?} is defined twice", index.name),
                );
            }
        }
        problems
    }

    pub fn collection(&self, name: &str) -> Option<&CollectionConfig> {
        self.collections
            .iter()
            .find(|collection| collection.name == name)
    }
}

/// A collection or projection name: 1 to 64 characters of a-z, A-Z, 0-9, '_' or '-'.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl CollectionConfig {
    /// Every problem of this collection, by field.
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !is_valid_name(&self.name) {
            problems.push((
                "name",
                format!(
                    "collection name {:?} must be 1 to 64 characters of a-z, A-Z, 0-9, '_' or '-'",
                    self.name
                ),
            ));
        }
        if self.key.is_empty() || self.key.len() > KEY_FIELDS_MAX {
            problems.push((
                "key",
                format!(
                    "collection {:?}: key needs 1 to {KEY_FIELDS_MAX} JSON pointers",
                    self.name
                ),
            ));
        }
        if let Some(types) = &self.key_types
            && types.len() != self.key.len()
        {
            problems.push((
                "key_types",
                format!(
                    "collection {:?}: key_types has {} type(s) for {} key field(s)",
                    self.name,
                    types.len(),
                    self.key.len()
                ),
            ));
        }
        for name in self.columns.keys() {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !RESERVED_COLUMNS.contains(&name.as_str());
            if !valid {
                problems.push((
                    "columns",
                    format!(
                        "collection {:?}: column {name:?} must be 1 to 64 characters of a-z, A-Z, 0-9 or '_', and not one of {RESERVED_COLUMNS:?}",
                        self.name
                    ),
                ));
            }
        }
        let pointers = self
            .key
            .iter()
            .map(|text| ("key", text))
            .chain(self.version.iter().map(|text| ("version", text)));
        for (field, text) in pointers {
            match Pointer::parse(text) {
                Err(error) => {
                    problems.push((field, format!("collection {:?}: {error}", self.name)))
                }
                Ok(pointer) if pointer.tokens().is_empty() => problems.push((
                    field,
                    format!(
                        "collection {:?}: the root pointer \"\" cannot be a key or version",
                        self.name
                    ),
                )),
                Ok(_) => {}
            }
        }
        problems
    }
}

/// One problem of a config: where (a TOML path such as `collections[1].key`) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub at: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_parse_with_defaults_and_every_problem_is_named() {
        let base = "[[collections]]\nname = \"doctor\"\nkey = [\"/doctor_id\"]\n";
        let config = Config::from_toml(&format!(
            "{base}[[projections]]\nname = \"doctor_profile\"\nsource = \"doctor\"\nscript = \"projections/doctor_profile.js\"\n\
             [[projections]]\nname = \"cache\"\nsource = \"doctor\"\nscript = \"native:doctor_profile\"\ntarget = \"redis\"\n\
             [projections.redis]\nurl = \"redis://127.0.0.1:6379\"\n"
        ))
        .unwrap();
        let [profile, cache] = &config.projections[..] else {
            panic!("{:?}", config.projections);
        };
        assert_eq!(profile.target, ProjectionTarget::Embedded);
        assert_eq!(
            (profile.call_time_ms_max, profile.projection_entries_max),
            (100, 1_000)
        );
        assert_eq!(cache.target, ProjectionTarget::Redis);
        assert_eq!(
            cache.redis.as_ref().map(|redis| redis.key_prefix.as_str()),
            Some("sluice:")
        );
        let problems = |extra: &str| match toml::from_str::<Config>(&format!("{base}{extra}")) {
            Ok(config) => config.problems(),
            Err(error) => panic!("{extra}: {error}"),
        };
        let one = "[[projections]]\nname = \"p\"\nsource = \"doctor\"\nscript = \"p.js\"\n";
        for (extra, at, needle) in [
            (
                "[[projections]]\nname = \"p\"\nsource = \"nurse\"\nscript = \"p.js\"\n",
                "projections[0].source",
                "unknown source collection \"nurse\"",
            ),
            (
                "[[projections]]\nname = \"p q\"\nsource = \"doctor\"\nscript = \"p.js\"\n",
                "projections[0].name",
                "1 to 64 characters",
            ),
            (
                "[[projections]]\nname = \"p\"\nsource = \"doctor\"\nscript = \" \"\n",
                "projections[0].script",
                "names no file",
            ),
            (
                &format!("{one}target = \"redis\"\n"),
                "projections[0].redis",
                "needs [projections.redis]",
            ),
            (
                &format!("{one}[projections.redis]\nurl = \"redis://x\"\n"),
                "projections[0].redis",
                "target is \"embedded\"",
            ),
            (
                &format!("{one}target = \"redis\"\n[projections.redis]\nurl = \"http://x\"\n"),
                "projections[0].redis",
                "redis://",
            ),
            (
                &format!("{one}call_time_ms_max = 0\n"),
                "projections[0].call_time_ms_max",
                "1..=60000",
            ),
            (
                &format!("{one}call_stack_bytes_max = 100000000\n"),
                "projections[0].call_stack_bytes_max",
                "1..=",
            ),
            (
                &format!("{one}{one}"),
                "projections[1].name",
                "defined twice",
            ),
        ] {
            let problems = problems(extra);
            assert!(
                problems
                    .iter()
                    .any(|problem| problem.at == at && problem.message.contains(needle)),
                "{extra}: {problems:?}"
            );
        }
        assert!(Config::from_toml(&format!("{base}{one}targets = 1\n")).is_err());
    }

    #[test]
    fn snapshots_are_on_by_default_and_off_when_disabled() {
        let base = "[[collections]]\nname = \"doctor\"\nkey = [\"/doctor_id\"]\n";
        let config = Config::from_toml(base).unwrap();
        assert_eq!(
            config.snapshots.map(|snapshots| snapshots.store),
            Some("snapshots".to_owned())
        );
        let off = Config::from_toml(&format!("{base}[snapshots]\nenabled = false\n")).unwrap();
        assert!(off.snapshots.is_none());
    }

    #[test]
    fn every_problem_is_reported_with_where_it_is() {
        let config: Config = toml::from_str(
            "[engine]\npartitions = 0\n[[collections]]\nname = \"a b\"\nkey = []\n[[collections]]\nname = \"a b\"\nkey = [\"/id\"]\n",
        )
        .unwrap();
        let at: Vec<String> = config
            .problems()
            .into_iter()
            .map(|problem| problem.at)
            .collect();
        assert_eq!(
            at,
            [
                "engine.partitions",
                "collections[0].name",
                "collections[0].key",
                "collections[1].name",
                "collections[1].name",
            ]
        );
        assert!(config.validate().is_err());
    }

    #[test]
    fn parses_the_issue_example() {
        let config = Config::from_toml(
            r#"
[server]
listen = "127.0.0.1:7070"
data_dir = "data"
[[collections]]
name = "doctor"
key = ["/doctor_id"]
version = "/updated_at"
ordering = "field"
"#,
        )
        .unwrap();
        assert_eq!(config.collections[0].ordering, Ordering::Field);
        assert_eq!(config.engine.partitions, PARTITIONS_DEFAULT);
    }

    #[test]
    fn nats_section_is_checked() {
        let base = "[[collections]]\nname = \"doctor\"\nkey = [\"/id\"]\n[nats]\nurl = \"nats://127.0.0.1:4222\"\n";
        let config = Config::from_toml(&format!(
            "{base}[nats.outbound]\n[[nats.inbound]]\nstream = \"EVENTS\"\nsubject = \"events.doctor.*\"\ncollection = \"doctor\"\n"
        ))
        .unwrap();
        let nats = config.nats.unwrap();
        let outbound = nats.outbound.unwrap();
        assert_eq!(outbound.subject_prefix, "sluice.changes");
        assert_eq!(outbound.start, OutboundStart::Beginning);
        assert_eq!(nats.inbound[0].consumer, "sluice");
        let check = |extra: &str, needle: &str| {
            let error = Config::from_toml(&format!("{base}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(needle),
                "{error:?} should contain {needle:?}"
            );
        };
        check(
            "[[nats.inbound]]\nstream = \"E\"\nsubject = \"e\"\ncollection = \"nurse\"\n",
            "\"nurse\" is not defined",
        );
        check(
            "[[nats.inbound]]\nstream = \"E.F\"\nsubject = \"e\"\ncollection = \"doctor\"\n",
            "not a valid NATS name",
        );
        check(
            "[nats.outbound]\nsubject_prefix = \"a.*\"\n",
            "not a valid NATS name",
        );
        check("[nats.outbound]\nbatch_records_max = 0\n", "must be 1..=");
        check("[nats.outbound]\nstrem = 1\n", "strem");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let error = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("lisen"), "{error}");
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn rejects_bad_collections() {
        let check = |text: &str, needle: &str| {
            let error = Config::from_toml(text).unwrap_err().to_string();
            assert!(
                error.contains(needle),
                "{error:?} should contain {needle:?}"
            );
        };
        check(
            "[[collections]]\nname = \"a b\"\nkey = [\"/id\"]\n",
            "must be 1 to 64",
        );
        check("[[collections]]\nname = \"a\"\nkey = []\n", "key needs");
        check(
            "[[collections]]\nname = \"a\"\nkey = [\"id\"]\n",
            "starts with '/'",
        );
        check(
            "[[collections]]\nname = \"a\"\nkey = [\"/id\"]\n[[collections]]\nname = \"a\"\nkey = [\"/id\"]\n",
            "defined twice",
        );
        check(
            "[[collections]]\nname = \"a\"\nkey = [\"/id\"]\nordering = \"time\"\n",
            "unknown variant",
        );
        check("[engine]\npartitions = 0\n", "partitions");
    }
}
