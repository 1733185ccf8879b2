//! Search indexes: their status, searches, autocomplete, field errors and rebuilds.
//! An index may be built over any collection, so, as with projections, a token limited
//! to some collections may not use them.

use super::{PAGE_LIMIT_DEFAULT, query};
use crate::AppState;
use crate::error::{ApiError, ErrorKind};
use crate::search::Search;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_indexes))
        .routes(routes!(search))
        .routes(routes!(autocomplete))
        .routes(routes!(list_errors))
        .routes(routes!(rebuild))
}

fn runtime<'a>(state: &'a AppState, name: &str) -> Result<&'a Arc<dyn Search>, ApiError> {
    state.search.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::UnknownIndex,
            format!("no index {name:?}: none is configured"),
        )
    })
}

/// One of `limits.searches_max`, or 503 with `Retry-After`.
fn search_permit(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    Arc::clone(&state.search_permits)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                ErrorKind::Overloaded,
                "too many searches running; retry shortly",
            )
        })
}

/// Every index: its source, status (`live`, `building`, `rebuilding`, `stale`), field
/// errors, and for the generation searched (and the one being built) documents, records
/// behind, segments, last commit and each lane's waiting documents and lag.
#[utoipa::path(
    get,
    path = "/v1/indexes",
    tag = "indexes",
    responses((status = 200, description = "Indexes", body = crate::openapi::IndexesList)),
    security(("token" = ["reader", "all_collections"]))
)]
async fn list_indexes(State(state): State<AppState>) -> Response {
    let indexes = state
        .search
        .as_ref()
        .map_or(serde_json::Value::Array(Vec::new()), |runtime| {
            runtime.list()
        });
    Json(serde_json::json!({ "indexes": indexes })).into_response()
}

/// Searches an index: `q` (text fields; all words by default, `"q_operator": "or"` for
/// any; prefixes on autocomplete fields), `filter` (`and`, `or`, `not`, `term`, `terms`,
/// `range`, `exists`, `geo_distance`), `sort` (one key: a numeric or date field,
/// `_score`, or `_geo_distance`), `facets` (keyword fields, counted over every match),
/// `fields`, `limit` (≤ `search_limit_max`) and `offset` (≤ `search_offset_max`).
#[utoipa::path(
    post,
    path = "/v1/indexes/{name}/search",
    tag = "indexes",
    params(("name" = String, Path, description = "The index")),
    request_body(content = crate::openapi::SearchRequestBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Total, hits and facet counts", body = crate::openapi::SearchAnswer),
        (status = 400, description = "invalid_query: an unknown field, a filter on a field of the wrong type, a limit passed", body = crate::openapi::ErrorBody),
    ),
    security(("token" = ["reader", "all_collections"]))
)]
async fn search(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: serde_json::Value = serde_json::from_slice(&body).map_err(|error| {
        ApiError::new(
            ErrorKind::MalformedJson,
            format!("the search request: {error}"),
        )
    })?;
    let runtime = Arc::clone(runtime(&state, &name)?);
    let permit = search_permit(&state)?;
    // A search reads mapped index files and may count many documents: off the async
    // workers.
    let answer = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        runtime.search(&name, &request)
    })
    .await
    .map_err(|error| ApiError::new(ErrorKind::Internal, error.to_string()))??;
    Ok(Json(answer).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutocompleteParams {
    field: String,
    prefix: String,
    limit: Option<usize>,
}

/// Values of an autocomplete text field in which every word of `prefix` starts a word
/// ("jo sm" completes to "John Smith"), shortest first.
#[utoipa::path(
    get,
    path = "/v1/indexes/{name}/autocomplete",
    tag = "indexes",
    params(
        ("name" = String, Path, description = "The index"),
        ("field" = String, Query, description = "A text field with autocomplete"),
        ("prefix" = String, Query, description = "What was typed so far"),
        ("limit" = Option<usize>, Query, description = "At most this many (default 10, at most 100)"),
    ),
    responses((status = 200, description = "Suggestions", body = crate::openapi::Suggestions)),
    security(("token" = ["reader", "all_collections"]))
)]
async fn autocomplete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<AutocompleteParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let runtime = Arc::clone(runtime(&state, &name)?);
    let permit = search_permit(&state)?;
    let answer = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        runtime.autocomplete(
            &name,
            &params.field,
            &params.prefix,
            params.limit.unwrap_or(10),
        )
    })
    .await
    .map_err(|error| ApiError::new(ErrorKind::Internal, error.to_string()))??;
    Ok(Json(answer).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorsParams {
    after: Option<u64>,
    limit: Option<usize>,
}

/// Source values that did not fit their field (the document was indexed without that
/// field), newest kept: key, field, message, time; `next` is the `after` of the next
/// page.
#[utoipa::path(
    get,
    path = "/v1/indexes/{name}/errors",
    tag = "indexes",
    params(
        ("name" = String, Path, description = "The index"),
        ("after" = Option<u64>, Query, description = "The `next` of the previous page"),
        ("limit" = Option<usize>, Query, description = "At most this many (default 100)"),
    ),
    responses((status = 200, description = "Field errors", body = crate::openapi::IndexErrors)),
    security(("token" = ["reader", "all_collections"]))
)]
async fn list_errors(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<ErrorsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let limit = params
        .limit
        .unwrap_or(PAGE_LIMIT_DEFAULT)
        .clamp(1, state.engine.config().limits.docs_limit_max);
    let (errors, next) = runtime(&state, &name)?.errors(&name, params.after.unwrap_or(0), limit)?;
    Ok(Json(serde_json::json!({"errors": errors, "next": next})).into_response())
}

/// Builds the index again into a new generation (after a change of field definitions,
/// say); searches keep the current one until the new one has caught up and replaces it
/// atomically. Follow it with `GET /v1/indexes`.
#[utoipa::path(
    post,
    path = "/v1/indexes/{name}/rebuild",
    tag = "indexes",
    params(("name" = String, Path, description = "The index")),
    responses((status = 200, description = "The generation being built", body = crate::openapi::IndexRebuild)),
    security(("token" = ["admin", "all_collections"]))
)]
async fn rebuild(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let runtime = Arc::clone(runtime(&state, &name)?);
    let answer = tokio::task::spawn_blocking(move || runtime.rebuild(&name))
        .await
        .map_err(|error| ApiError::new(ErrorKind::Internal, error.to_string()))??;
    Ok(Json(answer).into_response())
}
