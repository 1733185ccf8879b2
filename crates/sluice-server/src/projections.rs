//! The seam between the HTTP API and the projection runtime (`sluice-projections`): the
//! server answers `/v1/projections/...` through this trait, so it builds without a
//! JavaScript engine. The binary plugs the implementation in; without one, no
//! projection exists.

use crate::analytics::BoxFuture;
use crate::error::{ApiError, ErrorKind};

/// What can go wrong, in the API's terms (each maps to a code in `error.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectionsErrorKind {
    UnknownProjection,
    /// No version of the projection is built yet.
    NotReady,
    /// A reload found a script that does not load.
    ScriptRefused,
    InvalidParameter,
    Internal,
}

#[derive(Debug)]
pub struct ProjectionsError {
    pub kind: ProjectionsErrorKind,
    pub message: String,
}

pub trait Projections: Send + Sync + 'static {
    /// Every projection's status (a JSON array).
    fn list(&self) -> serde_json::Value;
    /// The value (JSON text) of one entry of the active version.
    fn get(&self, name: &str, key: &str) -> Result<Option<String>, ProjectionsError>;
    /// Values of `keys`, in their order, all from one version.
    fn get_many(
        &self,
        name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, ProjectionsError>;
    /// A page of projection errors and the token of the next page.
    fn errors(
        &self,
        name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(serde_json::Value, Option<String>), ProjectionsError>;
    /// Re-reads the script and builds a new version when it changed.
    fn reload(&self, name: String) -> BoxFuture<Result<serde_json::Value, ProjectionsError>>;
    /// Appends the projections' Prometheus series.
    fn render_metrics(&self, out: &mut String);
}

impl From<ProjectionsError> for ApiError {
    fn from(error: ProjectionsError) -> Self {
        use ProjectionsErrorKind::*;
        let kind = match error.kind {
            UnknownProjection => ErrorKind::UnknownProjection,
            NotReady => ErrorKind::ProjectionNotReady,
            ScriptRefused => ErrorKind::ProjectionScriptRefused,
            InvalidParameter => ErrorKind::InvalidParameter,
            Internal => {
                tracing::error!(message = %error.message, "Projection error.");
                ErrorKind::Internal
            }
        };
        ApiError::new(kind, error.message)
    }
}
