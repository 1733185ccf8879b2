//! The change log: pages with long polling, and server-sent events.

use super::{PAGE_LIMIT_DEFAULT, json_response, query, start_cursor, stopped};
use crate::AppState;
use crate::auth::Access;
use crate::error::{ApiError, ErrorKind};
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sluice_core::Cursor;
use sluice_engine::{Engine, ReadRecord};
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(changes))
        .routes(routes!(changes_stream))
}

/// The collections a read keeps: the one asked for (if the caller may see it), else
/// every one the caller may see (`None`: all).
fn visible(
    engine: &Engine,
    access: &Access,
    collection: Option<&str>,
) -> Result<Option<Vec<String>>, ApiError> {
    if let Some(name) = collection {
        engine.collection(name)?;
        access.check(name)?;
        return Ok(Some(vec![name.to_owned()]));
    }
    Ok(access.collections().map(<[String]>::to_vec))
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

/// Change records after a cursor, long-polling up to `wait_ms` for new ones. A token
/// limited to some collections sees only their records.
#[utoipa::path(
    get,
    path = "/v1/changes",
    tag = "changes",
    params(
        ("after" = Option<String>, Query, pattern = r"^(now|[0-9]+(\.[0-9]+)*)$", description = "A cursor, or `now`; absent: the oldest kept"),
        ("limit" = Option<usize>, Query, description = "Records per page (bounded by `changes_limit_max`)"),
        ("wait_ms" = Option<u64>, Query, description = "Long-poll up to this long (bounded by `wait_ms_max`)"),
        ("collection" = Option<String>, Query, description = "Only this collection's records"),
    ),
    responses((status = 200, description = "A page of the change log", body = crate::openapi::ChangesPage)),
    security(("token" = ["reader"]))
)]
async fn changes(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    params: Result<Query<ChangesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let engine = &state.engine;
    let collections = visible(engine, &access, params.collection.as_deref())?;
    let after = start_cursor(engine, params.after.as_deref(), engine.oldest())?;
    let wait_ms = params
        .wait_ms
        .unwrap_or(0)
        .min(engine.config().limits.wait_ms_max);
    let read = engine.changes_in(
        after.clone(),
        params.limit.unwrap_or(PAGE_LIMIT_DEFAULT),
        Duration::from_millis(wait_ms),
        collections.as_deref(),
    );
    // A long poll ends early, empty, when the server shuts down.
    let page = tokio::select! {
        page = read => page?,
        () = stopped(state.stopping.clone()) => sluice_engine::ChangesPage { records: Vec::new(), positions: Vec::new(), next: after },
    };
    Ok(changes_response(&page))
}

pub fn changes_response(page: &sluice_engine::ChangesPage) -> Response {
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
    collections: Option<Vec<String>>,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// The size of the last body chunk: the next one is allocated at about that size
    /// instead of growing by doubling.
    chunk_bytes_last: usize,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The change log as server-sent events: one `change` event per record with the
/// record's cursor as its `id`, so a client that reconnects with `Last-Event-ID` resumes
/// right after the last record it saw. Starts at `now` by default; heartbeat comments
/// keep idle streams open.
#[utoipa::path(
    get,
    path = "/v1/changes/stream",
    tag = "changes",
    params(
        ("after" = Option<String>, Query, pattern = r"^(now|[0-9]+(\.[0-9]+)*)$", description = "A cursor, or `now` (default)"),
        ("collection" = Option<String>, Query, description = "Only this collection's records"),
        ("Last-Event-ID" = Option<String>, Header, pattern = r"^[0-9]+(\.[0-9]+)*$", description = "Resume after this cursor"),
    ),
    responses((status = 200, description = "An endless stream of `change` events", content_type = "text/event-stream", body = crate::openapi::ChangeStreamEvent)),
    security(("token" = ["reader"]))
)]
async fn changes_stream(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let engine = state.engine.clone();
    let collections = visible(&engine, &access, params.collection.as_deref())?;
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
        collections,
        stopping: state.stopping.clone(),
        chunk_bytes_last: 0,
        _permit: permit,
    };
    // One body chunk per page of records, not one per record: at tens of thousands of
    // records a second, a frame and a write per record was most of a stream's cost.
    // Records go from the store's chunks straight into the body chunk (one copy each).
    let chunks = futures_util::stream::unfold(start, move |mut stream| async move {
        let mut out = Vec::with_capacity(stream.chunk_bytes_last + stream.chunk_bytes_last / 8);
        let read = stream.engine.changes_with(
            stream.cursor.clone(),
            STREAM_PAGE_RECORDS,
            STREAM_WAIT.min(heartbeat),
            stream.collections.as_deref(),
            |record| write_sse_event(&mut out, &record),
        );
        let next = tokio::select! {
            next = read => next.ok()?,
            () = stopped(stream.stopping.clone()) => return None,
        };
        stream.cursor = next;
        stream.chunk_bytes_last = out.len();
        if out.is_empty() {
            // Nothing for a heartbeat interval: a comment keeps proxies from closing the
            // idle stream.
            return Some((
                Ok::<_, std::convert::Infallible>(Bytes::from_static(b":\n\n")),
                stream,
            ));
        }
        Some((Ok(Bytes::from(out)), stream))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// Appends one `change` event: the record's cursor as its `id`, the record as its data.
fn write_sse_event(out: &mut Vec<u8>, record: &ReadRecord<'_>) {
    out.extend_from_slice(b"event: change\nid: ");
    record.next.write_text(out);
    out.extend_from_slice(b"\ndata: ");
    let start = out.len();
    record.write_record(out);
    // A record has no raw newline (JSON escapes them); should one appear, each line is
    // its own `data:` line, as the format asks.
    if memchr::memchr(b'\n', &out[start..]).is_some() {
        let written = out.split_off(start);
        for (index, line) in written.split(|byte| *byte == b'\n').enumerate() {
            if index > 0 {
                out.extend_from_slice(b"\ndata: ");
            }
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sse_events_carry_the_cursor_and_split_raw_newlines() {
        let mut next = Cursor::start(2);
        next.set(1, 8);
        let event = |body: &'static [u8]| {
            let mut out = b"earlier\n\n".to_vec();
            let record = ReadRecord {
                partition: 1,
                offset: 7,
                next: &next,
                body,
            };
            write_sse_event(&mut out, &record);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            event(br#"{"collection":"doctor","x":"a"}"#),
            "earlier\n\nevent: change\nid: 0.8\ndata: {\"cursor\":\"0.8\",\"collection\":\"doctor\",\"x\":\"a\"}\n\n"
        );
        assert_eq!(
            event(b"{\"a\":1,\n\"b\":2}"),
            "earlier\n\nevent: change\nid: 0.8\ndata: {\"cursor\":\"0.8\",\"a\":1,\ndata: \"b\":2}\n\n"
        );
    }
}
