//! Documents by key, pages of documents, rejected events and counters of a collection.

use super::{COMPOSITE_KEY_SUFFIX, PAGE_LIMIT_DEFAULT, json_response, name_and_key, query};
use crate::AppState;
use crate::error::{ApiError, ErrorKind};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use sluice_core::{Key, Version};
use sluice_engine::{Engine, Input};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_doc, delete_doc))
        // Composite keys: the same handlers and spec entry, more segments.
        .route(
            &format!("/v1/collections/{{name}}/docs/{{key}}{COMPOSITE_KEY_SUFFIX}"),
            get(get_doc).delete(delete_doc),
        )
        .routes(routes!(list_docs))
        .routes(routes!(list_rejected))
        .routes(routes!(stats))
}

fn parse_key(engine: &Engine, name: &str, path: &str) -> Result<Key, ApiError> {
    engine
        .collection(name)?
        .key_from_text(path)
        .map_err(|error| {
            ApiError::new(
                ErrorKind::InvalidKey,
                format!("{error}: give one path segment per key field"),
            )
        })
}

fn doc_json(key: &serde_json::Value, version: Option<Version>, doc: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"key\":");
    out.extend_from_slice(key.to_string().as_bytes());
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(
        version
            .map_or(serde_json::Value::Null, Version::to_json)
            .to_string()
            .as_bytes(),
    );
    out.extend_from_slice(b",\"doc\":");
    out.extend_from_slice(doc);
    out.push(b'}');
}

/// One document. Composite keys take one path segment per key field
/// (`/v1/collections/availability/docs/17/2026-12-01T09:00`).
#[utoipa::path(
    get,
    path = "/v1/collections/{name}/docs/{key}",
    tag = "documents",
    params(
        ("name" = String, Path, description = "The collection"),
        ("key" = String, Path, description = "The key; composite keys continue with one more segment per key field"),
    ),
    responses((status = 200, description = "The document", body = crate::openapi::DocBody)),
    security(("token" = ["reader"]))
)]
async fn get_doc(
    State(state): State<AppState>,
    Path(params): Path<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let (name, key) = name_and_key(params);
    let key = parse_key(&state.engine, &name, &key)?;
    let Some(stored) = state.engine.get(&name, &key)? else {
        return Err(ApiError::new(
            ErrorKind::DocumentNotFound,
            format!("no document {key} in {name}"),
        ));
    };
    let mut out = Vec::with_capacity(stored.doc.len() + 64);
    doc_json(&stored.key, stored.version, &stored.doc, &mut out);
    Ok(json_response(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    version: Option<String>,
}

/// Deletes what was written at or before `version` (default: everything so far).
#[utoipa::path(
    delete,
    path = "/v1/collections/{name}/docs/{key}",
    tag = "documents",
    params(
        ("name" = String, Path, description = "The collection"),
        ("key" = String, Path, description = "The key; composite keys continue with one more segment per key field"),
        ("version" = Option<String>, Query, description = "An integer or an RFC 3339 time"),
    ),
    responses((status = 200, description = "The delete's outcome", body = crate::openapi::ItemResultBody)),
    security(("token" = ["writer"]))
)]
async fn delete_doc(
    State(state): State<AppState>,
    Path(params): Path<Vec<(String, String)>>,
    version: Result<Query<DeleteParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let version = query(version)?.version;
    let (name, key) = name_and_key(params);
    let key = parse_key(&state.engine, &name, &key)?;
    let version = version.as_deref().map(parse_version).transpose()?;
    let results = state
        .engine
        .submit(&name, vec![Input::Delete { key, version }])
        .await?;
    let result = results
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::new(ErrorKind::Internal, "no result"))?;
    Ok(Json(result).into_response())
}

fn parse_version(text: &str) -> Result<Version, ApiError> {
    let value = match text.parse::<i64>() {
        Ok(number) => serde_json::Value::from(number),
        Err(_) => serde_json::Value::from(text),
    };
    Version::from_json(&value, "version")
        .map_err(|error| ApiError::new(ErrorKind::InvalidParameter, error.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    after: Option<String>,
    limit: Option<usize>,
}

/// Documents in key order.
#[utoipa::path(
    get,
    path = "/v1/collections/{name}/docs",
    tag = "documents",
    params(
        ("name" = String, Path, description = "The collection"),
        ("after" = Option<String>, Query, description = "The `next` of the previous page"),
        ("limit" = Option<usize>, Query, description = "Documents per page (bounded by `docs_limit_max`)"),
    ),
    responses((status = 200, description = "A page of documents", body = crate::openapi::DocsPage)),
    security(("token" = ["reader"]))
)]
async fn list_docs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let limit = params.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    let (docs, next) = state.engine.list(&name, params.after.as_deref(), limit)?;
    let mut out = b"{\"docs\":[".to_vec();
    for (index, stored) in docs.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        doc_json(&stored.key, stored.version, &stored.doc, &mut out);
    }
    out.extend_from_slice(b"],\"next\":");
    out.extend_from_slice(serde_json::Value::from(next).to_string().as_bytes());
    out.push(b'}');
    Ok(json_response(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectedParams {
    after: Option<u64>,
    limit: Option<usize>,
}

/// Rejected events, with their reason, origin and text.
#[utoipa::path(
    get,
    path = "/v1/collections/{name}/rejected",
    tag = "documents",
    params(
        ("name" = String, Path, description = "The collection"),
        ("after" = Option<u64>, Query, description = "A sequence number"),
        ("limit" = Option<usize>, Query, description = "Records per page"),
    ),
    responses((status = 200, description = "Rejected events", body = crate::openapi::RejectedPage)),
    security(("token" = ["reader"]))
)]
async fn list_rejected(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<RejectedParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let records = state.engine.rejected(
        &name,
        params.after.unwrap_or(0),
        params.limit.unwrap_or(PAGE_LIMIT_DEFAULT),
    )?;
    let mut out = b"{\"rejected\":[".to_vec();
    for (index, record) in records.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(record);
    }
    out.extend_from_slice(b"]}");
    Ok(json_response(out))
}

/// Counters of a collection.
#[utoipa::path(
    get,
    path = "/v1/collections/{name}/stats",
    tag = "documents",
    params(("name" = String, Path, description = "The collection")),
    responses((status = 200, description = "Counters", body = crate::openapi::StatsBody)),
    security(("token" = ["reader"]))
)]
async fn stats(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let counters = state.engine.stats(&name)?;
    Ok(Json(serde_json::json!({
        "collection": name,
        "applied": counters.applied,
        "noop": counters.noop,
        "stale": counters.stale,
        "rejected": counters.rejected,
        "documents": counters.documents,
    }))
    .into_response())
}
