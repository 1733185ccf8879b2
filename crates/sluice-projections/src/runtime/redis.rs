//! The Redis target: the active version's entries mirrored into Redis, exactly once.
//!
//! The embedded store stays the projection's own record (entries, owners, dependencies,
//! the cursor): Redis keeps nothing on disk, so it is a copy that can always be rebuilt.
//! Each commit of a partition that changes entries also stores its Redis writes (the
//! outbox) with a sequence number, in the same atomic commit as the cursor; the writes
//! are then applied by one Lua script that checks and moves the partition's sequence key
//! in Redis (`{prefix}{projection}#seq:{partition}`):
//!
//! - Redis at the previous number: the writes apply and the number moves, atomically;
//! - Redis already at this number: it was applied before a crash; nothing happens;
//! - anything else (the key is gone: Redis restarted or was flushed): the partition is
//!   rebuilt in Redis from the embedded entries, then the number is set.
//!
//! So Redis is never ahead of the recorded cursor, and a commit never applies twice
//! (`#applied:{partition}` counts the applied commits, for the crash test).

use crate::owned;
use redis::{Commands, Connection, Script};
use sluice_engine::{Engine, EngineError};
use sluice_store::StoreError;
use std::time::Duration;

/// How long connecting, or one command, may take before the worker retries.
const REDIS_TIMEOUT_MS: u64 = 2_000;
/// Entries written per pipeline during a rebuild.
const REBUILD_BATCH: usize = 500;

const APPLY: &str = r#"
local current = redis.call('GET', KEYS[1])
if current == ARGV[2] then return 0 end
if current ~= ARGV[1] then return -1 end
local i = 3
while i <= #ARGV do
  if ARGV[i] == 'S' then
    redis.call('SET', ARGV[i + 1], ARGV[i + 2])
  else
    redis.call('DEL', ARGV[i + 1])
  end
  i = i + 3
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1
"#;

/// One write to Redis, by entry key.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub(crate) enum Op {
    Set(String, String),
    Del(String),
}

/// A commit's writes as stored with it: applied once its sequence number is.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Outbox {
    pub seq: u64,
    pub ops: Vec<Op>,
}

pub(crate) struct RedisTarget {
    client: redis::Client,
    connection: Option<Connection>,
    key_prefix: String,
}

/// Loaded once: the script's SHA-1 is computed when it is built.
static APPLY_SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(APPLY));

fn redis_error(error: redis::RedisError) -> EngineError {
    EngineError::Invalid(format!("redis: {error}"))
}

fn corrupt(what: &'static str) -> EngineError {
    EngineError::Store(StoreError::Corrupt { what })
}

/// What applying an outbox came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ApplyOutcome {
    Done,
    AlreadyDone,
    /// Redis does not hold what the embedded store says it should: rebuild.
    OutOfStep,
}

impl RedisTarget {
    /// `prefix` is the config's `key_prefix` with the projection's name: keys are
    /// `{prefix}:{entry key}`.
    pub fn new(url: &str, key_prefix: &str, projection: &str) -> Result<Self, String> {
        let client = redis::Client::open(url)
            .map_err(|error| format!("projection {projection:?}: the Redis URL: {error}"))?;
        Ok(Self {
            client,
            connection: None,
            key_prefix: format!("{key_prefix}{projection}"),
        })
    }

    pub fn entry_key(&self, key: &str) -> String {
        format!("{}:{key}", self.key_prefix)
    }

    /// What the sequence key holds at `seq` of `view`: the version too, so that a new
    /// version never takes an old version's keys for its own.
    fn seq_value(view: &str, seq: u64) -> String {
        format!("{view}:{seq}")
    }

    fn seq_key(&self, partition: u16) -> String {
        format!("{}#seq:{partition}", self.key_prefix)
    }

    pub fn applied_key(&self, partition: u16) -> String {
        format!("{}#applied:{partition}", self.key_prefix)
    }

    fn connection(&mut self) -> Result<&mut Connection, EngineError> {
        if self.connection.is_none() {
            let timeout = Duration::from_millis(REDIS_TIMEOUT_MS);
            let connection = self
                .client
                .get_connection_with_timeout(timeout)
                .map_err(redis_error)?;
            connection
                .set_read_timeout(Some(timeout))
                .map_err(redis_error)?;
            connection
                .set_write_timeout(Some(timeout))
                .map_err(redis_error)?;
            self.connection = Some(connection);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| EngineError::Invalid("redis: no connection".to_owned()))
    }

    /// Drops the connection after an error: the next call reconnects.
    fn reset_on_error<T>(&mut self, result: Result<T, EngineError>) -> Result<T, EngineError> {
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    /// Applies `outbox` (the writes that move partition `partition` from `seq - 1`).
    pub fn apply(
        &mut self,
        view: &str,
        partition: u16,
        outbox: &Outbox,
    ) -> Result<ApplyOutcome, EngineError> {
        let seq_key = self.seq_key(partition);
        let applied_key = self.applied_key(partition);
        let mut invocation = APPLY_SCRIPT.key(seq_key);
        invocation
            .key(applied_key)
            .arg(Self::seq_value(view, outbox.seq.saturating_sub(1)))
            .arg(Self::seq_value(view, outbox.seq));
        for op in &outbox.ops {
            match op {
                Op::Set(key, value) => invocation.arg("S").arg(self.entry_key(key)).arg(value),
                Op::Del(key) => invocation.arg("D").arg(self.entry_key(key)).arg(""),
            };
        }
        let result = self
            .connection()
            .and_then(|connection| invocation.invoke::<i64>(connection).map_err(redis_error));
        match self.reset_on_error(result)? {
            1 => Ok(ApplyOutcome::Done),
            0 => Ok(ApplyOutcome::AlreadyDone),
            _ => Ok(ApplyOutcome::OutOfStep),
        }
    }

    /// Whether Redis holds partition `partition` at `seq` (false when its key is gone).
    pub fn in_step(&mut self, view: &str, partition: u16, seq: u64) -> Result<bool, EngineError> {
        let seq_key = self.seq_key(partition);
        let result = self.connection().and_then(|connection| {
            connection
                .get::<_, Option<String>>(seq_key)
                .map_err(redis_error)
        });
        Ok(self.reset_on_error(result)?.as_deref() == Some(Self::seq_value(view, seq).as_str()))
    }

    /// Writes every entry owned by partition `partition`'s sources in `view` (read from
    /// the embedded store) into Redis, then sets its sequence number to `seq`.
    pub fn rebuild(
        &mut self,
        engine: &Engine,
        view: &str,
        partition: u16,
        seq: u64,
    ) -> Result<u64, EngineError> {
        let mut written = 0u64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let owners = engine.store().scan_view_owners(
                view,
                partition,
                after.as_deref(),
                REBUILD_BATCH,
            )?;
            let mut pipeline = redis::pipe();
            for (_, bytes) in &owners {
                let owned = owned::Owned::decode(bytes).map_err(|error| corrupt(error.what))?;
                for key in &owned.entries {
                    let Some(entry) = engine.store().get_view_entry(view, key.as_bytes())? else {
                        continue;
                    };
                    let (_, value) =
                        owned::decode_entry(&entry).map_err(|error| corrupt(error.what))?;
                    pipeline.set(self.entry_key(key), value).ignore();
                    written += 1;
                }
            }
            let result = self
                .connection()
                .and_then(|connection| pipeline.query::<()>(connection).map_err(redis_error));
            self.reset_on_error(result)?;
            if owners.len() < REBUILD_BATCH {
                break;
            }
            after = owners.last().map(|(source, _)| source.clone());
        }
        let seq_key = self.seq_key(partition);
        let result = self.connection().and_then(|connection| {
            connection
                .set::<_, _, ()>(seq_key, Self::seq_value(view, seq))
                .map_err(redis_error)
        });
        self.reset_on_error(result)?;
        Ok(written)
    }

    /// Deletes `keys` (entry keys) from Redis.
    pub fn delete(&mut self, keys: &[String]) -> Result<(), EngineError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for key in keys {
            pipeline.del(self.entry_key(key)).ignore();
        }
        let result = self
            .connection()
            .and_then(|connection| pipeline.query::<()>(connection).map_err(redis_error));
        self.reset_on_error(result)
    }
}
