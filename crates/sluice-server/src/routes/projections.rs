//! Projections: their status, their entries by key, their errors, and reloads of their
//! scripts. Projections read several collections, so a token limited to some
//! collections may not use them.

use super::{
    COMPOSITE_KEY_SUFFIX, PAGE_LIMIT_DEFAULT, json_body, json_response, name_and_key, query,
};
use crate::AppState;
use crate::error::{ApiError, ErrorKind};
use crate::projections::Projections;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_projections))
        .routes(routes!(list_errors))
        .routes(routes!(get_entry))
        // Keys with slashes: the same handler and spec entry, more segments.
        .route(
            &format!("/v1/projections/{{name}}/{{key}}{COMPOSITE_KEY_SUFFIX}"),
            get(get_entry),
        )
        .routes(routes!(get_entries))
        .routes(routes!(reload))
}

fn runtime<'a>(state: &'a AppState, name: &str) -> Result<&'a Arc<dyn Projections>, ApiError> {
    state.projections.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::UnknownProjection,
            format!("no projection {name:?}: none is configured"),
        )
    })
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Every projection: its active version (script hash, phase, lag in records and seconds,
/// entries, errors), the version being built to replace it, and its call counts.
#[utoipa::path(
    get,
    path = "/v1/projections",
    tag = "projections",
    responses((status = 200, description = "Projections", body = crate::openapi::ProjectionsList)),
    security(("token" = ["reader", "all_collections"]))
)]
async fn list_projections(State(state): State<AppState>) -> Response {
    let projections = state
        .projections
        .as_ref()
        .map_or(serde_json::Value::Array(Vec::new()), |runtime| {
            runtime.list()
        });
    Json(serde_json::json!({ "projections": projections })).into_response()
}

/// One entry of the active version: `{"key": ..., "value": ...}`. A key with slashes
/// continues over more segments; the key `errors` is read with `POST .../get`.
#[utoipa::path(
    get,
    path = "/v1/projections/{name}/{key}",
    tag = "projections",
    params(
        ("name" = String, Path, description = "The projection"),
        ("key" = String, Path, description = "The entry's key"),
    ),
    responses((status = 200, description = "The entry", body = crate::openapi::ProjectionEntry)),
    security(("token" = ["reader", "all_collections"]))
)]
async fn get_entry(
    State(state): State<AppState>,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let (name, key) = name_and_key(params);
    let Some(value) = runtime(&state, &name)?.get(&name, &key)? else {
        return Err(ApiError::new(
            ErrorKind::ProjectionEntryNotFound,
            format!("projection {name:?} has no entry {key:?}"),
        ));
    };
    let key = json_string(&key);
    let mut out = Vec::with_capacity(key.len() + value.len() + 20);
    out.extend_from_slice(b"{\"key\":");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b",\"value\":");
    out.extend_from_slice(value.as_bytes());
    out.push(b'}');
    Ok(json_response(out))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetEntriesRequest {
    /// Entry keys (strings, or integers as their text), at most `projection_get_keys_max`.
    #[schema(value_type = Vec<serde_json::Value>)]
    keys: Vec<serde_json::Value>,
}

/// Several entries from one version, in the order asked: `{"results": [{"key": ...,
/// "value": ... or null}]}`.
#[utoipa::path(
    post,
    path = "/v1/projections/{name}/get",
    tag = "projections",
    params(("name" = String, Path, description = "The projection")),
    request_body(content = GetEntriesRequest, content_type = "application/json"),
    responses((status = 200, description = "The entries, null where there is none", body = crate::openapi::ProjectionEntries)),
    security(("token" = ["reader", "all_collections"]))
)]
async fn get_entries(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: GetEntriesRequest = json_body(&body)?;
    let keys_max = state.engine.config().limits.projection_get_keys_max;
    if request.keys.len() > keys_max {
        return Err(ApiError::new(
            ErrorKind::InvalidBody,
            format!(
                "{} keys, more than the {keys_max} one request may ask for (limits.projection_get_keys_max)",
                request.keys.len()
            ),
        ));
    }
    let mut keys = Vec::with_capacity(request.keys.len());
    for (index, key) in request.keys.iter().enumerate() {
        keys.push(match key {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Number(number) if number.is_i64() || number.is_u64() => {
                number.to_string()
            }
            _ => {
                return Err(ApiError::new(
                    ErrorKind::InvalidBody,
                    format!("keys[{index}] must be a string or an integer"),
                ));
            }
        });
    }
    let values = runtime(&state, &name)?.get_many(&name, &keys)?;
    let mut out = Vec::with_capacity(64 * keys.len() + 16);
    out.extend_from_slice(b"{\"results\":[");
    for (index, (key, value)) in keys.iter().zip(values).enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"key\":");
        out.extend_from_slice(json_string(key).as_bytes());
        out.extend_from_slice(b",\"value\":");
        out.extend_from_slice(value.as_deref().unwrap_or("null").as_bytes());
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(json_response(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorsParams {
    after: Option<String>,
    limit: Option<usize>,
}

/// The source documents whose last call failed (source key, error, script hash, time),
/// in pages: `next` is the `after` of the next page.
#[utoipa::path(
    get,
    path = "/v1/projections/{name}/errors",
    tag = "projections",
    params(
        ("name" = String, Path, description = "The projection"),
        ("after" = Option<String>, Query, description = "The `next` of the previous page"),
        ("limit" = Option<usize>, Query, description = "At most this many (default 100)"),
    ),
    responses((status = 200, description = "Projection errors", body = crate::openapi::ProjectionErrors)),
    security(("token" = ["reader", "all_collections"]))
)]
async fn list_errors(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<ErrorsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let limit = params.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    let (errors, next) = runtime(&state, &name)?.errors(&name, params.after.as_deref(), limit)?;
    Ok(Json(serde_json::json!({"errors": errors, "next": next})).into_response())
}

/// Re-reads the projection's script. When it changed, a new version is built in the
/// background (backfill, then catch-up) while readers keep the old one, and replaces it
/// once caught up; a script that does not load is refused (422) and nothing changes.
#[utoipa::path(
    post,
    path = "/v1/projections/{name}/reload",
    tag = "projections",
    params(("name" = String, Path, description = "The projection")),
    responses((status = 200, description = "What the reload did", body = crate::openapi::ProjectionReload)),
    security(("token" = ["admin", "all_collections"]))
)]
async fn reload(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let outcome = runtime(&state, &name)?.reload(name).await?;
    Ok(Json(outcome).into_response())
}
