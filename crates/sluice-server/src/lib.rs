//! Sluice's HTTP API (axum). The only crate that knows HTTP: it turns requests into
//! engine calls and engine results into JSON, with one error table (`error.rs`).

pub mod analytics;
mod error;

pub use analytics::Analytics;
pub use error::{ApiError, ErrorKind};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use sluice_core::{Cursor, Key, Version};
use sluice_engine::{BodyFormat, Engine, Input, ItemResult, Status};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Clone)]
struct AppState {
    engine: Engine,
    ingest_permits: Arc<Semaphore>,
    stream_permits: Arc<Semaphore>,
    /// Turns true when the server shuts down: open event streams and long polls end,
    /// so that a graceful shutdown does not wait for them.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// SQL and snapshots, when the binary plugged them in.
    analytics: Option<Arc<dyn Analytics>>,
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
    router_with(engine, None)
}

/// [`router`], with SQL and snapshots answered by `analytics`.
pub fn router_with(engine: Engine, analytics: Option<Arc<dyn Analytics>>) -> Router {
    // No sender: this router's streams stop only when their clients go (see `stopped`).
    let (_, stopping) = tokio::sync::watch::channel(false);
    build_router(engine, stopping, analytics)
}

/// Resolves when the server begins to shut down; never, for a router built without
/// `serve`.
async fn stopped(mut stopping: tokio::sync::watch::Receiver<bool>) {
    if stopping.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn build_router(
    engine: Engine,
    stopping: tokio::sync::watch::Receiver<bool>,
    analytics: Option<Arc<dyn Analytics>>,
) -> Router {
    let limits = engine.config().limits.clone();
    let state = AppState {
        ingest_permits: Arc::new(Semaphore::new(limits.ingest_requests_max.max(1))),
        stream_permits: Arc::new(Semaphore::new(limits.streams_max.max(1))),
        stopping,
        engine,
        analytics,
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
        .route("/v1/changes/stream", get(changes_stream))
        .route("/v1/subscriptions", get(list_subscriptions))
        .route(
            "/v1/subscriptions/{name}",
            get(get_subscription)
                .put(put_subscription)
                .delete(delete_subscription),
        )
        .route("/v1/subscriptions/{name}/next", get(subscription_next))
        .route(
            "/v1/subscriptions/{name}/ack",
            axum::routing::post(ack_subscription),
        )
        .route("/v1/sql", axum::routing::post(post_sql))
        .route(
            "/v1/collections/{name}/snapshot",
            axum::routing::post(post_snapshot),
        )
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
    serve_with(engine, None, listener, shutdown).await
}

/// [`serve`], with SQL and snapshots answered by `analytics`.
pub async fn serve_with(
    engine: Engine,
    analytics: Option<Arc<dyn Analytics>>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    axum::serve(listener, build_router(engine, stopping, analytics))
        .with_graceful_shutdown(async move {
            shutdown.await;
            stop.send_replace(true);
        })
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
    /// A cursor, or `now` for "only what comes next"; absent means the oldest kept.
    after: Option<String>,
    limit: Option<usize>,
    wait_ms: Option<u64>,
    /// Only this collection's records (the cursor still moves past the others).
    collection: Option<String>,
}

/// Where a read of the change log starts: `after` is a cursor, `now`, or absent.
fn start_cursor(engine: &Engine, after: Option<&str>, absent: Cursor) -> Result<Cursor, ApiError> {
    Ok(match after {
        None | Some("") => absent,
        Some("now") => engine.head(),
        Some(token) => engine.parse_cursor(token)?,
    })
}

async fn changes(
    State(state): State<AppState>,
    params: Result<Query<ChangesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let engine = &state.engine;
    if let Some(name) = &params.collection {
        engine.collection(name)?;
    }
    let after = start_cursor(engine, params.after.as_deref(), engine.oldest())?;
    let wait_ms = params
        .wait_ms
        .unwrap_or(0)
        .min(engine.config().limits.wait_ms_max);
    let read = engine.changes_of(
        after.clone(),
        params.limit.unwrap_or(PAGE_LIMIT_DEFAULT),
        Duration::from_millis(wait_ms),
        params.collection.as_deref(),
    );
    // A long poll ends early, empty, when the server shuts down.
    let page = tokio::select! {
        page = read => page?,
        () = stopped(state.stopping.clone()) => sluice_engine::ChangesPage { records: Vec::new(), next: after },
    };
    Ok(changes_response(&page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamParams {
    /// A cursor, or `now`; absent means now. A `Last-Event-ID` header takes precedence.
    after: Option<String>,
    collection: Option<String>,
}

/// Records read per step of a stream, and how long a step waits for new ones.
const STREAM_PAGE_RECORDS: usize = 256;
const STREAM_WAIT: Duration = Duration::from_secs(30);

struct StreamState {
    engine: Engine,
    cursor: Cursor,
    collection: Option<String>,
    pending: std::collections::VecDeque<Vec<u8>>,
    stopping: tokio::sync::watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// `GET /v1/changes/stream`: the change log as server-sent events, one `change` event per
/// record with the record's cursor as its `id`, so a client that reconnects with
/// `Last-Event-ID` resumes right after the last record it saw.
async fn changes_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<StreamParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let engine = state.engine.clone();
    if let Some(name) = &params.collection {
        engine.collection(name)?;
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok());
    let cursor = start_cursor(
        &engine,
        last_event_id.or(params.after.as_deref()),
        engine.head(),
    )?;
    let Ok(permit) = Arc::clone(&state.stream_permits).try_acquire_owned() else {
        return Err(ApiError::new(
            ErrorKind::Overloaded,
            "too many event streams open; retry shortly",
        ));
    };
    let heartbeat = Duration::from_millis(engine.config().limits.stream_heartbeat_ms.max(1));
    let start = StreamState {
        engine,
        cursor,
        collection: params.collection,
        pending: Default::default(),
        stopping: state.stopping.clone(),
        _permit: permit,
    };
    let events = futures_util::stream::unfold(start, |mut stream| async move {
        loop {
            if let Some(record) = stream.pending.pop_front() {
                return Some((
                    Ok::<_, std::convert::Infallible>(sse_event(&record)),
                    stream,
                ));
            }
            let read = stream.engine.changes_of(
                stream.cursor.clone(),
                STREAM_PAGE_RECORDS,
                STREAM_WAIT,
                stream.collection.as_deref(),
            );
            let page = tokio::select! {
                page = read => page.ok()?,
                () = stopped(stream.stopping.clone()) => return None,
            };
            stream.cursor = page.next;
            stream.pending.extend(page.records);
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(heartbeat))
        .into_response())
}

fn sse_event(record: &[u8]) -> SseEvent {
    // Records are compact JSON (one line) that start with `{"cursor":"<digits and dots>"`.
    let text = String::from_utf8_lossy(record);
    let cursor = text
        .strip_prefix("{\"cursor\":\"")
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned();
    SseEvent::default().event("change").id(cursor).data(text)
}

/// A JSON request body, with the error table's answer when it is not what was expected.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
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

fn changes_response(page: &sluice_engine::ChangesPage) -> Response {
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
    json_response(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionBody {
    #[serde(flatten)]
    spec: sluice_engine::SubscriptionSpec,
    /// Where a new subscription starts: `beginning` (default) or `now`.
    #[serde(default)]
    start: Option<String>,
}

async fn put_subscription(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: SubscriptionBody = json_body(&body)?;
    let start = match body.start.as_deref() {
        None | Some("beginning") => sluice_engine::StartAt::Beginning,
        Some("now") => sluice_engine::StartAt::Head,
        Some(other) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParameter,
                format!("start must be \"beginning\" or \"now\", not {other:?}"),
            ));
        }
    };
    Ok(Json(state.engine.put_subscription(&name, body.spec, start)?).into_response())
}

async fn get_subscription(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.engine.subscription(&name)?).into_response())
}

async fn list_subscriptions(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(serde_json::json!({"subscriptions": state.engine.subscriptions()?})).into_response())
}

async fn delete_subscription(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !state.engine.delete_subscription(&name)? {
        return Err(ApiError::new(
            ErrorKind::UnknownSubscription,
            format!("no subscription {name:?}"),
        ));
    }
    Ok(Json(serde_json::json!({"deleted": name})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NextParams {
    max: Option<usize>,
    wait_ms: Option<u64>,
}

async fn subscription_next(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<NextParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let engine = &state.engine;
    let wait_ms = params
        .wait_ms
        .unwrap_or(0)
        .min(engine.config().limits.wait_ms_max);
    let read = engine.subscription_next(
        &name,
        params.max.unwrap_or(PAGE_LIMIT_DEFAULT),
        Duration::from_millis(wait_ms),
    );
    let page = tokio::select! {
        page = read => page?,
        () = stopped(state.stopping.clone()) => {
            let position = engine.parse_cursor(&engine.subscription(&name)?.position)?;
            sluice_engine::ChangesPage { records: Vec::new(), next: position }
        }
    };
    Ok(changes_response(&page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    cursor: String,
}

async fn ack_subscription(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: AckBody = json_body(&body)?;
    let cursor = state.engine.parse_cursor(&body.cursor)?;
    Ok(Json(state.engine.ack_subscription(&name, &cursor)?).into_response())
}

fn analytics(state: &AppState) -> Result<&Arc<dyn Analytics>, ApiError> {
    state.analytics.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::SnapshotsNotConfigured,
            "snapshots are not configured: add a [snapshots] section to sluice.toml",
        )
    })
}

async fn post_sql(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: analytics::SqlRequest = json_body(&body)?;
    let answer = analytics(&state)?.sql(request).await?;
    Ok(([(header::CONTENT_TYPE, answer.content_type)], answer.body).into_response())
}

async fn post_snapshot(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state.engine.collection(&name)?;
    let manifest = analytics(&state)?.snapshot(name).await?;
    Ok(Json(manifest).into_response())
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
    // A component that is down (NATS unreachable, say) degrades the node but does not
    // fail it: the processor still takes writes, and restarting would not help.
    let components: serde_json::Map<String, serde_json::Value> = state
        .engine
        .components()
        .into_iter()
        .map(|(name, status)| (name, serde_json::json!(status)))
        .collect();
    let all_up = components
        .values()
        .all(|status| status["up"] == serde_json::Value::Bool(true));
    let status = if all_up { "ok" } else { "degraded" };
    Json(serde_json::json!({"status": status, "components": components})).into_response()
}
