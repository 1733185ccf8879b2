//! The API by resource, one module each (as Meilisearch's `routes/`). Every module
//! declares its routes with `routes!`, so that a route, its spec entry and its access
//! rule (the `security` scope) are written in one place and cannot drift apart.

pub mod changes;
pub mod documents;
pub mod events;
pub mod indexes;
pub mod ops;
pub mod projections;
pub mod session;
pub mod sql;
pub mod subscriptions;
pub mod tokens;

use crate::AppState;
use crate::error::{ApiError, ErrorKind};
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sluice_core::Cursor;
use sluice_engine::Engine;
use utoipa_axum::router::OpenApiRouter;

/// Composite keys take one path segment per key field: the router matches the extra
/// segments with this suffix on the documents route, under the same spec entry and rule.
pub const COMPOSITE_KEY_SUFFIX: &str = "/{*rest}";

/// Every route of the API, with its spec entry.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(events::routes())
        .merge(documents::routes())
        .merge(changes::routes())
        .merge(subscriptions::routes())
        .merge(sql::routes())
        .merge(tokens::routes())
        .merge(session::routes())
        .merge(projections::routes())
        .merge(indexes::routes())
        .merge(ops::routes())
}

pub const PAGE_LIMIT_DEFAULT: usize = 100;

/// The `{name}` and the key of a route with [`COMPOSITE_KEY_SUFFIX`]: the `{key}`
/// segment and every segment after it, joined by `/`.
pub fn name_and_key(params: Vec<(String, String)>) -> (String, String) {
    let mut name = String::new();
    let mut key = String::new();
    for (param, value) in params {
        match param.as_str() {
            "name" => name = value,
            "key" => key = value,
            _ => {
                key.push('/');
                key.push_str(&value);
            }
        }
    }
    (name, key)
}

pub fn query<T>(params: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    params
        .map(|Query(params)| params)
        .map_err(|rejection| ApiError::new(ErrorKind::InvalidParameter, rejection.body_text()))
}

pub fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A JSON object request body, with the error table's answer when it is not what was
/// expected. Only objects: serde would otherwise read a struct from an array of its
/// fields in order (found by schemathesis).
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first.is_some_and(|byte| *byte != b'{') {
        return Err(ApiError::new(
            ErrorKind::InvalidBody,
            "the body must be a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|error| {
        let (line, column, message) = sluice_core::event::json_error_parts(&error);
        let kind = if error.is_data() {
            ErrorKind::InvalidBody
        } else {
            ErrorKind::MalformedJson
        };
        ApiError::new(kind, format!("at line {line}, column {column}: {message}"))
    })
}

/// Where a read of the change log starts: `after` is a cursor, `now`, or absent.
pub fn start_cursor(
    engine: &Engine,
    after: Option<&str>,
    absent: Cursor,
) -> Result<Cursor, ApiError> {
    Ok(match after {
        None | Some("") => absent,
        Some("now") => engine.head(),
        Some(token) => engine.parse_cursor(token)?,
    })
}

/// Resolves when the server begins to shut down; never, for a router built without
/// `serve`.
pub async fn stopped(mut stopping: tokio::sync::watch::Receiver<bool>) {
    if stopping.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}
