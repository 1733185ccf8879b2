//! Sluice's pure model: what an event, a key, a version and a document are, and how an
//! event merges into a document. Nothing here does I/O, spawns, or knows about HTTP or
//! storage; everything is deterministic and exhaustively testable.

pub mod change;
pub mod cloudevent;
pub mod codec;
pub mod config;
pub mod cursor;
pub mod diff;
pub mod event;
pub mod hash;
pub mod hex;
pub mod key;
pub mod merge;
pub mod pointer;
pub mod version;

pub use change::{ChangeOp, ChangeRecord};
pub use config::{CollectionConfig, Config, ConfigError, KeyType, Ordering};
pub use cursor::{Cursor, CursorError};
pub use event::{Event, EventError, Limits as EventLimits};
pub use key::Key;
pub use merge::{Applied, DocState, Outcome};
pub use pointer::Pointer;
pub use version::{Version, VersionError};
