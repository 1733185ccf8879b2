//! `POST /v1/collections/{name}/events`: ingest.

use super::json_response;
use crate::AppState;
use crate::error::{ApiError, ErrorKind};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use sluice_engine::{BodyFormat, ItemResult, Status};
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_events))
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

/// Applies events to a collection: a JSON object, a JSON array, or NDJSON. Answers after
/// the commit is durable. A body that is not JSON fails whole; a bad event inside a good
/// body is `rejected` (kept in the rejected log) while the others apply.
#[utoipa::path(
    post,
    path = "/v1/collections/{name}/events",
    tag = "events",
    params(("name" = String, Path, description = "The collection")),
    request_body(description = "Partial documents (or CloudEvents envelopes)", content(
        (serde_json::Value = "application/json"),
        (String = "application/x-ndjson"),
    )),
    responses((status = 200, description = "Every event's outcome", body = crate::openapi::IngestAnswer)),
    security(("token" = ["writer"]))
)]
async fn post_events(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let engine = &state.engine;
    engine.collection(&name)?;
    // Taken before the body is read, so that waiting bodies do not fill memory.
    let Ok(_permit) = state.ingest_permits.try_acquire() else {
        return Err(ApiError::new(
            ErrorKind::Overloaded,
            "too many ingest requests in flight; retry shortly",
        ));
    };
    let limits = &engine.config().limits;
    let timeout_ms = limits.ingest_request_timeout_ms;
    let work = async {
        let bytes = axum::body::to_bytes(body, limits.request_bytes_max)
            .await
            .map_err(|error| body_error(error, limits.request_bytes_max))?;
        let inputs = engine.parse_body(&name, &bytes, body_format(&headers))??;
        drop(bytes);
        Ok::<_, ApiError>(engine.submit(&name, inputs).await?)
    };
    match tokio::time::timeout(Duration::from_millis(timeout_ms), work).await {
        Ok(results) => Ok(ingest_response(&results?)),
        // Events already handed to a writer still apply; a retry is harmless (field
        // mode converges, document mode answers stale).
        Err(_) => Err(ApiError::new(
            ErrorKind::RequestTimeout,
            format!("the request took longer than {timeout_ms} ms (body upload included)"),
        )),
    }
}

fn body_error(error: axum::Error, max: usize) -> ApiError {
    let too_large = std::error::Error::source(&error)
        .is_some_and(|source| source.is::<http_body_util::LengthLimitError>())
        || error.to_string().contains("length limit");
    if too_large {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("request body is over the limit of {max} bytes"),
        )
    } else {
        ApiError::new(ErrorKind::InvalidBody, format!("reading the body: {error}"))
    }
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
    json_response(serde_json::to_vec(&body).unwrap_or_default())
}
