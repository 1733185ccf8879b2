//! API access tokens: a role, an optional list of collections, an optional expiry.
//!
//! A token is a random 256-bit secret shown once at creation. The data directory keeps
//! only its SHA-256 (hex) in the token record, so a copy of the directory lets nobody in.
//! The engine keeps every record in memory, keyed by that hash: checking a token is one
//! hash and one map lookup, and a token created or revoked takes effect at once for every
//! request, without restart. The map is keyed by a hash of the secret, so lookup timing
//! can reveal at most hash prefixes, never the secret; the stored hash is then compared
//! again in constant time.

use crate::consumer::validate_name;
use crate::{Engine, EngineError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// Secrets start with this, so that leaked ones are easy to find with secret scanners.
pub const TOKEN_PREFIX: &str = "sluice_";
/// Random bytes per secret.
const SECRET_BYTES: usize = 32;
/// Tokens per data directory: every one is kept in memory.
pub const TOKENS_MAX: usize = 10_000;
/// The in-memory name of the token given by `SLUICE_ADMIN_TOKEN` or a file.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";
/// A bootstrap secret must be at least this long (a 128-bit secret in hex).
pub const BOOTSTRAP_SECRET_LEN_MIN: usize = 32;
/// `last_used_ms` is written back at most this often per token.
const LAST_USED_PERSIST_MS: u64 = 60_000;

/// What a token may do. Each role includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads documents, changes, streams, SQL and every read model.
    Reader,
    /// Ingests and deletes events and acknowledges subscriptions, plus everything a reader does.
    Writer,
    /// Everything, including tokens and config-level operations (snapshots).
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Reader, Role::Writer, Role::Admin];

    pub fn allows(self, required: Role) -> bool {
        self >= required
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Self, EngineError> {
        match text {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            other => Err(EngineError::Invalid(format!(
                "unknown role {other:?}: use reader, writer or admin"
            ))),
        }
    }
}

/// What is asked for when a token is created.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    pub name: String,
    pub role: Role,
    /// Only these collections; absent means all of them.
    #[serde(default)]
    pub collections: Option<Vec<String>>,
    /// Milliseconds from now until the token stops working; absent means never.
    #[serde(default)]
    pub expires_in_ms: Option<u64>,
}

/// A token as stored and listed (the hash is never listed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub collections: Option<Vec<String>>,
    pub created_ms: u64,
    #[serde(default)]
    pub expires_ms: Option<u64>,
    #[serde(default)]
    pub last_used_ms: Option<u64>,
    /// SHA-256 of the secret, hex. Skipped when listing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
}

impl TokenRecord {
    /// Whether this token may see `collection`.
    pub fn may_see(&self, collection: &str) -> bool {
        self.collections
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|name| name == collection))
    }

    /// The record without its hash, for listings.
    pub fn listed(&self) -> TokenRecord {
        TokenRecord {
            sha256: String::new(),
            ..self.clone()
        }
    }
}

/// A token known to the engine, shared by every request that presents it.
#[derive(Debug)]
pub struct TokenEntry {
    pub record: TokenRecord,
    hash: [u8; 32],
    /// Milliseconds since the epoch of the last successful check (0: never).
    last_used_ms: AtomicU64,
    /// What the store holds for `last_used_ms`.
    persisted_last_used_ms: AtomicU64,
    /// Kept in memory only (the bootstrap token).
    ephemeral: bool,
}

impl TokenEntry {
    /// The record with its current `last_used_ms`, without the hash.
    pub fn snapshot(&self) -> TokenRecord {
        let last_used = self.last_used_ms.load(Ordering::Relaxed);
        TokenRecord {
            last_used_ms: (last_used > 0).then_some(last_used),
            ..self.record.listed()
        }
    }
}

/// The outcome of presenting a secret.
#[derive(Debug)]
pub enum TokenCheck {
    Valid(Arc<TokenEntry>),
    Expired,
    Unknown,
}

#[derive(Debug, Default)]
pub(crate) struct TokenTable {
    by_hash: RwLock<HashMap<[u8; 32], Arc<TokenEntry>>>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

pub fn sha256(secret: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    out
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |byte: u8| (byte as char).to_digit(16).map(|digit| digit as u8);
    let mut out = [0; 32];
    for (index, pair) in bytes.chunks_exact(2).enumerate() {
        out[index] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn new_secret() -> Result<String, EngineError> {
    let mut bytes = [0u8; SECRET_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| EngineError::Invalid("the system random generator failed".into()))?;
    Ok(format!("{TOKEN_PREFIX}{}", to_hex(&bytes)))
}

/// A random secret for other uses (session cookies).
pub fn random_secret() -> Result<String, EngineError> {
    new_secret()
}

impl TokenTable {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], Arc<TokenEntry>>> {
        self.by_hash.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<[u8; 32], Arc<TokenEntry>>> {
        self.by_hash.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, record: TokenRecord, hash: [u8; 32], ephemeral: bool) {
        let last_used = record.last_used_ms.unwrap_or(0);
        let entry = TokenEntry {
            record,
            hash,
            last_used_ms: AtomicU64::new(last_used),
            persisted_last_used_ms: AtomicU64::new(last_used),
            ephemeral,
        };
        self.write().insert(hash, Arc::new(entry));
    }

    pub(crate) fn load(records: Vec<(String, sluice_store::Bytes)>) -> Result<Self, EngineError> {
        let table = TokenTable::default();
        for (name, bytes) in records {
            let corrupt = || {
                EngineError::Store(sluice_store::StoreError::Corrupt {
                    what: "token record",
                })
            };
            let record: TokenRecord = serde_json::from_slice(&bytes).map_err(|_| corrupt())?;
            let hash = from_hex(&record.sha256).ok_or_else(corrupt)?;
            if record.name != name {
                return Err(corrupt());
            }
            table.insert(record, hash, false);
        }
        Ok(table)
    }
}

impl Engine {
    fn tokens_table(&self) -> &TokenTable {
        &self.shared().tokens
    }

    /// Whether any token exists (stored or bootstrap): then every request needs one.
    pub fn has_tokens(&self) -> bool {
        !self.tokens_table().read().is_empty()
    }

    /// Creates a token; answers its secret (shown once, never stored) and its record.
    pub fn create_token(&self, spec: TokenSpec) -> Result<(String, TokenRecord), EngineError> {
        validate_name(&spec.name)?;
        if spec.name == BOOTSTRAP_TOKEN_NAME {
            return Err(EngineError::Invalid(format!(
                "the token name {BOOTSTRAP_TOKEN_NAME:?} is reserved"
            )));
        }
        if let Some(collections) = &spec.collections {
            if collections.is_empty() {
                return Err(EngineError::Invalid(
                    "collections must list at least one collection (omit it for all)".into(),
                ));
            }
            for collection in collections {
                self.collection(collection)?;
            }
        }
        let table = self.tokens_table();
        {
            let tokens = table.read();
            if tokens.values().any(|entry| entry.record.name == spec.name) {
                return Err(EngineError::TokenExists(spec.name));
            }
            if tokens.len() >= TOKENS_MAX {
                return Err(EngineError::Invalid(format!(
                    "there are already {TOKENS_MAX} tokens; revoke some first"
                )));
            }
        }
        let secret = new_secret()?;
        let hash = sha256(&secret);
        let created_ms = now_ms();
        let record = TokenRecord {
            name: spec.name,
            role: spec.role,
            collections: spec.collections,
            created_ms,
            expires_ms: spec
                .expires_in_ms
                .map(|expires_in| created_ms.saturating_add(expires_in)),
            last_used_ms: None,
            sha256: to_hex(&hash),
        };
        let encoded =
            serde_json::to_vec(&record).map_err(|error| EngineError::Invalid(error.to_string()))?;
        let mut batch = self.shared().store.batch();
        batch.put_token(&record.name, &encoded);
        self.commit_meta(batch)?;
        let listed = record.listed();
        table.insert(record, hash, false);
        Ok((secret, listed))
    }

    /// Adds a token that lives in memory only (never written to the data directory).
    pub fn add_bootstrap_token(&self, secret: &str) -> Result<(), EngineError> {
        if secret.len() < BOOTSTRAP_SECRET_LEN_MIN || !secret.bytes().all(is_token_byte) {
            return Err(EngineError::Invalid(format!(
                "the bootstrap admin token must be at least {BOOTSTRAP_SECRET_LEN_MIN} characters \
                 of letters, digits, '_', '-' or '.'"
            )));
        }
        let record = TokenRecord {
            name: BOOTSTRAP_TOKEN_NAME.to_owned(),
            role: Role::Admin,
            collections: None,
            created_ms: now_ms(),
            expires_ms: None,
            last_used_ms: None,
            sha256: String::new(),
        };
        self.tokens_table().insert(record, sha256(secret), true);
        Ok(())
    }

    /// Every token, without hashes, in name order.
    pub fn tokens(&self) -> Vec<TokenRecord> {
        let mut out: Vec<TokenRecord> = self
            .tokens_table()
            .read()
            .values()
            .map(|entry| entry.snapshot())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Revokes a token; effective for the next request. `false` if there was none.
    pub fn revoke_token(&self, name: &str) -> Result<bool, EngineError> {
        let table = self.tokens_table();
        let Some(hash) = table
            .read()
            .values()
            .find(|entry| entry.record.name == name)
            .map(|entry| (entry.hash, entry.ephemeral))
        else {
            return Ok(false);
        };
        if hash.1 {
            return Err(EngineError::Invalid(
                "the bootstrap token comes from the environment; remove it there and restart"
                    .into(),
            ));
        }
        let mut batch = self.shared().store.batch();
        batch.remove_token(name);
        self.commit_meta(batch)?;
        table.write().remove(&hash.0);
        Ok(true)
    }

    /// Checks a presented secret.
    pub fn check_token(&self, secret: &str) -> TokenCheck {
        let hash = sha256(secret);
        let Some(entry) = self.tokens_table().read().get(&hash).cloned() else {
            return TokenCheck::Unknown;
        };
        if !bool::from(entry.hash[..].ct_eq(&hash[..])) {
            return TokenCheck::Unknown;
        }
        let now = now_ms();
        if entry
            .record
            .expires_ms
            .is_some_and(|expires| now >= expires)
        {
            return TokenCheck::Expired;
        }
        entry.last_used_ms.store(now, Ordering::Relaxed);
        TokenCheck::Valid(entry)
    }

    /// The current entry of the token `name`, if it still exists and has not expired
    /// (sessions check their token on every request, so a revocation ends them too).
    pub fn token_named(&self, name: &str) -> Option<Arc<TokenEntry>> {
        let entry = self
            .tokens_table()
            .read()
            .values()
            .find(|entry| entry.record.name == name)
            .cloned()?;
        let now = now_ms();
        if entry
            .record
            .expires_ms
            .is_some_and(|expires| now >= expires)
        {
            return None;
        }
        entry.last_used_ms.store(now, Ordering::Relaxed);
        Some(entry)
    }

    /// Writes `last_used_ms` back for tokens used since it was last written (and at least
    /// a minute ago, so that a busy token does not cost a commit per request).
    pub fn persist_token_usage(&self) -> Result<(), EngineError> {
        let due: Vec<Arc<TokenEntry>> = self
            .tokens_table()
            .read()
            .values()
            .filter(|entry| {
                let used = entry.last_used_ms.load(Ordering::Relaxed);
                let persisted = entry.persisted_last_used_ms.load(Ordering::Relaxed);
                !entry.ephemeral && used >= persisted.saturating_add(LAST_USED_PERSIST_MS)
                    || !entry.ephemeral && persisted == 0 && used > 0
            })
            .cloned()
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let mut batch = self.shared().store.batch();
        for entry in &due {
            let used = entry.last_used_ms.load(Ordering::Relaxed);
            let record = TokenRecord {
                last_used_ms: Some(used),
                ..entry.record.clone()
            };
            let encoded = serde_json::to_vec(&record)
                .map_err(|error| EngineError::Invalid(error.to_string()))?;
            batch.put_token(&record.name, &encoded);
        }
        self.commit_meta(batch)?;
        for entry in &due {
            entry.persisted_last_used_ms.store(
                entry.last_used_ms.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
        Ok(())
    }
}

/// The characters a secret may contain (what `sluice` generates, and sane bootstrap values).
pub fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let hash = sha256("sluice_abc");
        assert_eq!(from_hex(&to_hex(&hash)), Some(hash));
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Writer));
        assert!(Role::Writer.allows(Role::Reader));
        assert!(!Role::Reader.allows(Role::Writer));
        assert!(!Role::Writer.allows(Role::Admin));
    }

    #[test]
    fn secrets_are_random_and_well_formed() {
        let (a, b) = (
            new_secret().unwrap_or_default(),
            new_secret().unwrap_or_default(),
        );
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 2 * SECRET_BYTES);
        assert!(a.bytes().all(is_token_byte));
    }
}
