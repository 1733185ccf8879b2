//! Sluice's HTTP API (axum). The only crate that knows HTTP: it turns requests into
//! engine calls and engine results into JSON, with one error table (`error.rs`).

mod error;

pub use error::{ApiError, ErrorKind};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use sluice_core::{Key, Version};
use sluice_engine::{BodyFormat, Engine, Input, ItemResult, Status};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Clone)]
struct AppState {
    engine: Engine,
    ingest_permits: Arc<Semaphore>,
}

/// Refuses a non-loopback address unless auth is explicitly waived: until access tokens
/// exist, anything reachable from another machine could write every collection.
pub fn check_listen_address(address: SocketAddr, insecure_no_auth: bool) -> Result<(), String> {
    if address.ip().is_loopback() || insecure_no_auth {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {address}: Sluice has no access tokens yet, so anyone who can \
         reach this address could read and write every collection. Listen on a loopback \
         address (127.0.0.1 or ::1), or start with --insecure-no-auth if a network boundary \
         protects this port."
    ))
}

pub fn router(engine: Engine) -> Router {
    let limits = engine.config().limits.clone();
    let state = AppState {
        ingest_permits: Arc::new(Semaphore::new(limits.ingest_requests_max.max(1))),
        engine,
    };
    let ingest = Router::new()
        .route(
            "/v1/collections/{name}/events",
            axum::routing::post(post_events),
        )
        .layer(middleware::from_fn_with_state(state.clone(), limit_ingest))
        .layer(DefaultBodyLimit::max(limits.request_bytes_max));
    Router::new()
        .route("/v1/collections/{name}/docs", get(list_docs))
        .route(
            "/v1/collections/{name}/docs/{*key}",
            get(get_doc).delete(delete_doc),
        )
        .route("/v1/collections/{name}/rejected", get(list_rejected))
        .route("/v1/collections/{name}/stats", get(stats))
        .route("/v1/changes", get(changes))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .merge(ingest)
        .fallback(|| async {
            ApiError::new(
                ErrorKind::RouteNotFound,
                "no such route; see the README for the API",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorKind::MethodNotAllowed,
                "this route does not accept that method",
            )
        })
        .with_state(state)
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    engine: Engine,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn limit_ingest(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Taken before the body is read, so that waiting bodies do not fill memory.
    let Ok(_permit) = state.ingest_permits.try_acquire() else {
        return ApiError::new(
            ErrorKind::Overloaded,
            "too many ingest requests in flight; retry shortly",
        )
        .into_response();
    };
    let timeout_ms = state.engine.config().limits.ingest_request_timeout_ms;
    match tokio::time::timeout(Duration::from_millis(timeout_ms), next.run(request)).await {
        Ok(response) => response,
        // Events already handed to a writer still apply; a retry is harmless (field
        // mode converges, document mode answers stale).
        Err(_) => ApiError::new(
            ErrorKind::RequestTimeout,
            format!("the request took longer than {timeout_ms} ms (body upload included)"),
        )
        .into_response(),
    }
}

fn body_format(headers: &HeaderMap) -> BodyFormat {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => BodyFormat::Ndjson,
        _ => BodyFormat::Json,
    }
}

async fn post_events(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let engine = &state.engine;
    engine.collection(&name)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let max = engine.config().limits.request_bytes_max;
            ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!("request body is over the limit of {max} bytes"),
            )
        } else {
            ApiError::new(ErrorKind::InvalidBody, rejection.body_text())
        }
    })?;
    let inputs = engine.parse_body(&name, &body, body_format(&headers))??;
    drop(body);
    let results = engine.submit(&name, inputs).await?;
    Ok(ingest_response(&results))
}

fn ingest_response(results: &[ItemResult]) -> Response {
    let count = |status| {
        results
            .iter()
            .filter(|result| result.status == status)
            .count()
    };
    let body = serde_json::json!({
        "applied": count(Status::Applied),
        "noop": count(Status::Noop),
        "stale": count(Status::Stale),
        "rejected": count(Status::Rejected),
        "results": results,
    });
    Json(body).into_response()
}

fn parse_key(engine: &Engine, name: &str, path: &str) -> Result<Key, ApiError> {
    let spec = engine.collection(name)?;
    let segments: Vec<&str> = path.split('/').collect();
    Key::from_segments(&segments, spec.key.len()).map_err(|error| {
        ApiError::new(
            ErrorKind::InvalidKey,
            format!("{error}: give one path segment per key field"),
        )
    })
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
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

async fn get_doc(
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
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

async fn delete_doc(
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
    params: Result<Query<DeleteParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params
        .map_err(|rejection| ApiError::new(ErrorKind::InvalidParameter, rejection.body_text()))?;
    let key = parse_key(&state.engine, &name, &key)?;
    let version = params.version.as_deref().map(parse_version).transpose()?;
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

fn query<T>(
    params: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    params
        .map(|Query(params)| params)
        .map_err(|rejection| ApiError::new(ErrorKind::InvalidParameter, rejection.body_text()))
}

const PAGE_LIMIT_DEFAULT: usize = 100;

async fn list_docs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
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

async fn list_rejected(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<RejectedParams>, axum::extract::rejection::QueryRejection>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangesParams {
    /// A cursor, or `now` for "only what comes next"; absent means the beginning.
    after: Option<String>,
    limit: Option<usize>,
    wait_ms: Option<u64>,
}

async fn changes(
    State(state): State<AppState>,
    params: Result<Query<ChangesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let engine = &state.engine;
    let after = match params.after.as_deref() {
        None | Some("") => sluice_core::Cursor::start(usize::from(engine.partitions())),
        Some("now") => engine.head(),
        Some(token) => engine.parse_cursor(token)?,
    };
    let wait_ms = params
        .wait_ms
        .unwrap_or(0)
        .min(engine.config().limits.wait_ms_max);
    let page = engine
        .changes(
            after,
            params.limit.unwrap_or(PAGE_LIMIT_DEFAULT),
            Duration::from_millis(wait_ms),
        )
        .await?;
    let mut out = b"{\"changes\":[".to_vec();
    for (index, record) in page.records.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(record);
    }
    out.extend_from_slice(b"],\"next\":\"");
    out.extend_from_slice(page.next.to_string().as_bytes());
    out.extend_from_slice(b"\"}");
    Ok(json_response(out))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        Body::from(state.engine.render_metrics()),
    )
        .into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.engine.is_poisoned() {
        return ApiError::new(
            ErrorKind::StoreUnavailable,
            "a commit failed; writes are stopped until a restart",
        )
        .into_response();
    }
    Json(serde_json::json!({"status": "ok"})).into_response()
}
