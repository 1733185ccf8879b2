//! Every error the API can answer, in one table: a stable `code`, an HTTP status, and
//! `Retry-After` where waiting helps. Bodies are `{"error": {"code": "...", "message": "..."}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sluice_engine::{BodyError, EngineError};

#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    MalformedJson,
    InvalidBody,
    PayloadTooLarge,
    TooManyEvents,
    UnknownCollection,
    UnknownSubscription,
    DocumentNotFound,
    InvalidKey,
    InvalidCursor,
    CursorExpired,
    InvalidParameter,
    RouteNotFound,
    MethodNotAllowed,
    RequestTimeout,
    Overloaded,
    StoreUnavailable,
    ShuttingDown,
    InvalidSql,
    TooManyRows,
    QueryTimeout,
    UnknownSnapshot,
    SnapshotsNotConfigured,
    ObjectStoreUnavailable,
    SnapshotCorrupt,
    ResultTooLarge,
    MissingToken,
    InvalidAuthorization,
    InvalidToken,
    TokenExpired,
    InvalidSession,
    Forbidden,
    CollectionForbidden,
    TooManyAuthFailures,
    RateLimited,
    TokenExists,
    UnknownToken,
    UnknownProjection,
    ProjectionEntryNotFound,
    ProjectionNotReady,
    ProjectionScriptRefused,
    UnknownIndex,
    IndexNotReady,
    InvalidQuery,
    Internal,
}

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_S: &str = "1";

impl ErrorKind {
    /// Every kind, for the spec's table of codes and the tests.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::MalformedJson,
        ErrorKind::InvalidBody,
        ErrorKind::PayloadTooLarge,
        ErrorKind::TooManyEvents,
        ErrorKind::UnknownCollection,
        ErrorKind::UnknownSubscription,
        ErrorKind::DocumentNotFound,
        ErrorKind::InvalidKey,
        ErrorKind::InvalidCursor,
        ErrorKind::CursorExpired,
        ErrorKind::InvalidParameter,
        ErrorKind::RouteNotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::RequestTimeout,
        ErrorKind::Overloaded,
        ErrorKind::StoreUnavailable,
        ErrorKind::ShuttingDown,
        ErrorKind::InvalidSql,
        ErrorKind::TooManyRows,
        ErrorKind::QueryTimeout,
        ErrorKind::UnknownSnapshot,
        ErrorKind::SnapshotsNotConfigured,
        ErrorKind::ObjectStoreUnavailable,
        ErrorKind::SnapshotCorrupt,
        ErrorKind::ResultTooLarge,
        ErrorKind::MissingToken,
        ErrorKind::InvalidAuthorization,
        ErrorKind::InvalidToken,
        ErrorKind::TokenExpired,
        ErrorKind::InvalidSession,
        ErrorKind::Forbidden,
        ErrorKind::CollectionForbidden,
        ErrorKind::TooManyAuthFailures,
        ErrorKind::RateLimited,
        ErrorKind::TokenExists,
        ErrorKind::UnknownToken,
        ErrorKind::UnknownProjection,
        ErrorKind::ProjectionEntryNotFound,
        ErrorKind::ProjectionNotReady,
        ErrorKind::ProjectionScriptRefused,
        ErrorKind::UnknownIndex,
        ErrorKind::IndexNotReady,
        ErrorKind::InvalidQuery,
        ErrorKind::Internal,
    ];

    /// The table: code, status. Codes are part of the API; never rename one.
    pub fn code_and_status(self) -> (&'static str, StatusCode) {
        use ErrorKind::*;
        match self {
            MalformedJson => ("malformed_json", StatusCode::BAD_REQUEST),
            InvalidBody => ("invalid_body", StatusCode::BAD_REQUEST),
            PayloadTooLarge => ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
            TooManyEvents => ("too_many_events", StatusCode::PAYLOAD_TOO_LARGE),
            UnknownCollection => ("unknown_collection", StatusCode::NOT_FOUND),
            UnknownSubscription => ("unknown_subscription", StatusCode::NOT_FOUND),
            DocumentNotFound => ("document_not_found", StatusCode::NOT_FOUND),
            InvalidKey => ("invalid_key", StatusCode::BAD_REQUEST),
            InvalidCursor => ("invalid_cursor", StatusCode::BAD_REQUEST),
            CursorExpired => ("cursor_expired", StatusCode::GONE),
            InvalidParameter => ("invalid_parameter", StatusCode::BAD_REQUEST),
            RouteNotFound => ("route_not_found", StatusCode::NOT_FOUND),
            MethodNotAllowed => ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED),
            RequestTimeout => ("request_timeout", StatusCode::REQUEST_TIMEOUT),
            Overloaded => ("overloaded", StatusCode::SERVICE_UNAVAILABLE),
            StoreUnavailable => ("store_unavailable", StatusCode::SERVICE_UNAVAILABLE),
            ShuttingDown => ("shutting_down", StatusCode::SERVICE_UNAVAILABLE),
            InvalidSql => ("invalid_sql", StatusCode::BAD_REQUEST),
            TooManyRows => ("too_many_rows", StatusCode::BAD_REQUEST),
            QueryTimeout => ("query_timeout", StatusCode::BAD_REQUEST),
            UnknownSnapshot => ("unknown_snapshot", StatusCode::NOT_FOUND),
            SnapshotsNotConfigured => ("snapshots_not_configured", StatusCode::NOT_FOUND),
            ObjectStoreUnavailable => ("object_store_unavailable", StatusCode::SERVICE_UNAVAILABLE),
            SnapshotCorrupt => ("snapshot_corrupt", StatusCode::INTERNAL_SERVER_ERROR),
            ResultTooLarge => ("result_too_large", StatusCode::BAD_REQUEST),
            MissingToken => ("missing_token", StatusCode::UNAUTHORIZED),
            InvalidAuthorization => ("invalid_authorization", StatusCode::UNAUTHORIZED),
            InvalidToken => ("invalid_token", StatusCode::UNAUTHORIZED),
            TokenExpired => ("token_expired", StatusCode::UNAUTHORIZED),
            InvalidSession => ("invalid_session", StatusCode::UNAUTHORIZED),
            Forbidden => ("forbidden", StatusCode::FORBIDDEN),
            CollectionForbidden => ("collection_forbidden", StatusCode::FORBIDDEN),
            TooManyAuthFailures => ("too_many_auth_failures", StatusCode::TOO_MANY_REQUESTS),
            RateLimited => ("rate_limited", StatusCode::TOO_MANY_REQUESTS),
            TokenExists => ("token_exists", StatusCode::CONFLICT),
            UnknownToken => ("unknown_token", StatusCode::NOT_FOUND),
            UnknownProjection => ("unknown_projection", StatusCode::NOT_FOUND),
            ProjectionEntryNotFound => ("projection_entry_not_found", StatusCode::NOT_FOUND),
            ProjectionNotReady => ("projection_not_ready", StatusCode::SERVICE_UNAVAILABLE),
            ProjectionScriptRefused => (
                "projection_script_refused",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            UnknownIndex => ("unknown_index", StatusCode::NOT_FOUND),
            IndexNotReady => ("index_not_ready", StatusCode::SERVICE_UNAVAILABLE),
            InvalidQuery => ("invalid_query", StatusCode::BAD_REQUEST),
            Internal => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let kind = match &error {
            EngineError::UnknownCollection(_) => ErrorKind::UnknownCollection,
            EngineError::UnknownSubscription(_) => ErrorKind::UnknownSubscription,
            EngineError::TokenExists(_) => ErrorKind::TokenExists,
            EngineError::Invalid(_) => ErrorKind::InvalidParameter,
            EngineError::Overloaded { .. } => ErrorKind::Overloaded,
            EngineError::Poisoned => ErrorKind::StoreUnavailable,
            EngineError::Closed => ErrorKind::ShuttingDown,
            EngineError::Cursor(_) => ErrorKind::InvalidCursor,
            EngineError::CursorExpired { .. } => ErrorKind::CursorExpired,
            EngineError::Store(_) | EngineError::Codec(_) | EngineError::Config(_) => {
                tracing::error!(%error, "Internal error.");
                ErrorKind::Internal
            }
        };
        Self::new(kind, error.to_string())
    }
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        let kind = match &error {
            BodyError::Json { .. } | BodyError::NdjsonLine { .. } => ErrorKind::MalformedJson,
            BodyError::TooManyEvents { .. } => ErrorKind::TooManyEvents,
            BodyError::NotUtf8(_) | BodyError::Empty => ErrorKind::InvalidBody,
        };
        Self::new(kind, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status) = self.kind.code_and_status();
        let body = serde_json::json!({"error": {"code": code, "message": self.message}});
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            // Callers that know better (the auth limiter) overwrite it.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
        }
        response
    }
}
