//! The seam between the HTTP API and the analytics side (`sluice-snapshot`): the server
//! answers `POST /v1/sql` and `POST /v1/collections/{name}/snapshot` through this trait,
//! so it needs neither DataFusion nor an object store to build. The binary plugs the
//! implementation in.

use crate::error::{ApiError, ErrorKind};
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[derive(Clone, Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    pub sql: String,
    /// A snapshot id: every table is read from its newest snapshot not above it.
    #[serde(default)]
    pub as_of: Option<String>,
    /// `json` (default), `csv` or `table`.
    #[serde(default)]
    #[schema(pattern = "^(json|csv|table)$")]
    pub format: Option<String>,
}

/// A rendered answer: its media type and body.
pub struct SqlAnswer {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// What can go wrong, in the API's terms (each maps to a code in `error.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnalyticsErrorKind {
    InvalidSql,
    TooManyRows,
    QueryTimeout,
    UnknownSnapshot,
    UnknownCollection,
    NotConfigured,
    ObjectStoreUnavailable,
    SnapshotCorrupt,
    ResultTooLarge,
    /// The SQL reads a collection the caller's token may not use.
    Forbidden,
    Internal,
}

#[derive(Debug)]
pub struct AnalyticsError {
    pub kind: AnalyticsErrorKind,
    pub message: String,
}

pub trait Analytics: Send + Sync + 'static {
    /// Runs `request`; with `collections`, only those tables exist for the planner (a
    /// token limited to some collections), and naming another is `Forbidden`.
    fn sql(
        &self,
        request: SqlRequest,
        collections: Option<Vec<String>>,
    ) -> BoxFuture<Result<SqlAnswer, AnalyticsError>>;
    /// Archives what is durable and compacts `collection` now; answers the manifest.
    fn snapshot(&self, collection: String) -> BoxFuture<Result<serde_json::Value, AnalyticsError>>;
}

impl From<AnalyticsError> for ApiError {
    fn from(error: AnalyticsError) -> Self {
        use AnalyticsErrorKind::*;
        let kind = match error.kind {
            InvalidSql => ErrorKind::InvalidSql,
            TooManyRows => ErrorKind::TooManyRows,
            QueryTimeout => ErrorKind::QueryTimeout,
            UnknownSnapshot => ErrorKind::UnknownSnapshot,
            UnknownCollection => ErrorKind::UnknownCollection,
            NotConfigured => ErrorKind::SnapshotsNotConfigured,
            ObjectStoreUnavailable => ErrorKind::ObjectStoreUnavailable,
            ResultTooLarge => ErrorKind::ResultTooLarge,
            Forbidden => ErrorKind::CollectionForbidden,
            SnapshotCorrupt | Internal => {
                tracing::error!(message = %error.message, "Analytics error.");
                if error.kind == SnapshotCorrupt {
                    ErrorKind::SnapshotCorrupt
                } else {
                    ErrorKind::Internal
                }
            }
        };
        ApiError::new(kind, error.message)
    }
}
