//! The seam between the HTTP API and the search indexes (`sluice-search`): the server
//! answers `/v1/indexes/...` through this trait, so it builds without tantivy. The
//! binary plugs the implementation in; without one, no index exists.

use crate::error::{ApiError, ErrorKind};

/// What can go wrong, in the API's terms (each maps to a code in `error.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchErrorKind {
    UnknownIndex,
    /// No generation of the index is built yet.
    NotReady,
    /// The request names an unknown field, filters a field of the wrong type, passes a
    /// limit, or is malformed.
    InvalidQuery,
    Internal,
}

#[derive(Debug)]
pub struct SearchError {
    pub kind: SearchErrorKind,
    pub message: String,
}

pub trait Search: Send + Sync + 'static {
    /// Every index's status (a JSON array).
    fn list(&self) -> serde_json::Value;
    /// Answers a search request (the JSON body as sent).
    fn search(
        &self,
        name: &str,
        request: &serde_json::Value,
    ) -> Result<serde_json::Value, SearchError>;
    /// Completions of every word of `prefix` in field `field`.
    fn autocomplete(
        &self,
        name: &str,
        field: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<serde_json::Value, SearchError>;
    /// A page of field errors after sequence number `after`, and the next page's `after`.
    fn errors(
        &self,
        name: &str,
        after: u64,
        limit: usize,
    ) -> Result<(serde_json::Value, Option<u64>), SearchError>;
    /// Starts a rebuild into a new generation.
    fn rebuild(&self, name: &str) -> Result<serde_json::Value, SearchError>;
    /// Appends the indexes' Prometheus series.
    fn render_metrics(&self, out: &mut String);
}

impl From<SearchError> for ApiError {
    fn from(error: SearchError) -> Self {
        use SearchErrorKind::*;
        let kind = match error.kind {
            UnknownIndex => ErrorKind::UnknownIndex,
            NotReady => ErrorKind::IndexNotReady,
            InvalidQuery => ErrorKind::InvalidQuery,
            Internal => {
                tracing::error!(message = %error.message, "Search error.");
                ErrorKind::Internal
            }
        };
        ApiError::new(kind, error.message)
    }
}
