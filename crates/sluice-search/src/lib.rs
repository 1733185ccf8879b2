//! Live search indexes (`[[indexes]]` in `sluice.toml`).
//!
//! Each index is one tantivy index per partition (a shard), updated in place by that
//! partition's change-log consumer ([`worker`]): changes are routed to priority lanes by
//! the paths they touched, each lane writes within its own delay and batch size, and the
//! shard commits its documents with its cursor. Writes are versioned by change-log
//! offset ([`shard`]), so replays and concurrent writers never put an older state over a
//! newer one. A rebuild builds a new generation beside the one being searched and swaps
//! it in atomically once it has caught up ([`runtime`]). Searches ([`search`]) run over
//! every shard and merge; the request language is checked in [`request`].

mod collect;
mod query;
pub mod request;
mod runtime;
pub mod schema;
pub mod search;
pub mod shard;
mod worker;

pub use query::words;
pub use runtime::{IndexErrorRecord, Runtime, RuntimeError};
pub use worker::write_versioned;
