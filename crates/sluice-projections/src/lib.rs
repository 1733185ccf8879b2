//! Projections: per-application read models computed from a source document and the
//! documents it looks up.
//!
//! A [`Projector`] turns one source document into entries (`{key, value}`), reading other
//! documents only through a [`Lookup`], so that every read is recorded: the runtime
//! re-runs a source document exactly when something it read changes. Two projectors
//! exist: [`Script`], a JavaScript module run sandboxed in QuickJS with caps on memory,
//! stack and time per call, and native Rust types (see [`native::DoctorProfile`]).
//!
//! - `script.rs`: the JavaScript projector and its sandbox;
//! - `shape.rs`: what a call may return, checked the same way for every projector;
//! - `native.rs`: the native example;
//! - `owned.rs`: what a source document owns and read, as stored, and the change to a
//!   view when a new result replaces the old;
//! - `runtime/`: the projections of a server kept current from the change log (a
//!   consumer per partition and version), backfilled, switched and served.

pub mod native;
pub mod owned;
mod runtime;
mod script;
mod shape;

pub use runtime::{
    GET_KEYS_MAX, ProjectionErrorView, ProjectionStatus, ReloadOutcome, Runtime, RuntimeError,
    VersionStatus,
};
pub use script::{Script, ScriptLimits};
pub use shape::{ENTRY_KEY_BYTES_MAX, entries_from_json};

/// `script = "native:NAME"` names a projector compiled into the binary.
pub const NATIVE_PREFIX: &str = "native:";

/// Checks a projection's script as `serve` would load it (`config_dir` is where the
/// config file is): the file exists and compiles, or the native projector exists.
pub fn check_script(
    config: &sluice_core::config::ProjectionConfig,
    config_dir: &std::path::Path,
) -> Result<(), String> {
    runtime::load_plan(config, config_dir).map(|_| ())
}

use std::sync::Arc;

/// One entry of a projection: its key (text, as document keys are) and its value (JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    /// Compact JSON text.
    pub value: String,
}

/// A document read during a call (`found` false: it did not exist, which is a
/// dependency too: its creation re-runs the call).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Read {
    pub collection: String,
    pub key: String,
}

/// What one call produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Projected {
    pub entries: Vec<Entry>,
    /// Every document the call read, each once, in the order of first read.
    pub reads: Vec<Read>,
}

/// Documents by collection and key, as of one consistent state of the store.
pub trait Lookup: Send + Sync {
    /// The document's JSON text, or `None` when it does not exist.
    fn get(&self, collection: &str, key: &str) -> Result<Option<String>, LookupError>;
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("unknown collection {0:?}")]
    UnknownCollection(String),
    #[error("reading {collection}/{key}: {message}")]
    Store {
        collection: String,
        key: String,
        message: String,
    },
}

/// Turns a source document into entries.
pub trait Projector {
    /// Identifies the code: entries built by another version are rebuilt.
    fn version_hash(&self) -> &str;

    /// The entries of `source` (a document's JSON text), reading through `lookup`.
    fn project(&mut self, source: &str, lookup: &Arc<dyn Lookup>) -> Result<Projected, CallError>;
}

/// Why a projection could not be built (the script or its file).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error("{file}:{line}: {message}")]
    Compile {
        file: String,
        line: u32,
        message: String,
    },
    #[error("{file}: {message}")]
    Module { file: String, message: String },
    #[error("the JavaScript runtime: {0}")]
    Runtime(String),
}

/// Why one call produced no entries; recorded as a projection error of its source
/// document, while the rest of the projection goes on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the script threw: {message}")]
    Threw { message: String },
    #[error("the call ran longer than {ms} ms")]
    Timeout { ms: u64 },
    #[error("the call used more than {bytes} bytes of memory")]
    Memory { bytes: usize },
    #[error("the call nested deeper than its stack of {bytes} bytes")]
    Stack { bytes: usize },
    #[error("the call looked up more than {max} documents")]
    TooManyLookups { max: usize },
    #[error("{0}")]
    Lookup(#[from] LookupError),
    #[error("the result: {0}")]
    Shape(String),
    #[error("the source document is not JSON: {0}")]
    Source(String),
}

#[cfg(test)]
mod tests;
