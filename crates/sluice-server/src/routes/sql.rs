//! Read-only SQL over the snapshots, and snapshots on demand.

use super::json_body;
use crate::AppState;
use crate::analytics::{Analytics, SqlRequest};
use crate::auth::Access;
use crate::error::{ApiError, ErrorKind};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_sql))
        .routes(routes!(post_snapshot))
}

fn analytics(state: &AppState) -> Result<&Arc<dyn Analytics>, ApiError> {
    state.analytics.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::SnapshotsNotConfigured,
            "snapshots are off (`[snapshots] enabled = false` in sluice.toml)",
        )
    })
}

/// Read-only SQL over the latest snapshots (each collection a table). A token limited to
/// some collections can plan only over those tables. Bounded in rows, result bytes,
/// value size, time, queries at once (503) and queries per token per second (429).
#[utoipa::path(
    post,
    path = "/v1/sql",
    tag = "sql",
    request_body(content = SqlRequest, content_type = "application/json"),
    responses((status = 200, description = "The rows: a JSON array of objects, CSV, or a text table", content(
        (Vec<serde_json::Value> = "application/json"),
        (String = "text/csv"),
        (String = "text/plain"),
    ))),
    security(("token" = ["reader"]))
)]
async fn post_sql(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: SqlRequest = json_body(&body)?;
    let analytics = analytics(&state)?;
    if !state.sql_rate.spend(&access.name().to_owned()) {
        return Err(ApiError::new(
            ErrorKind::RateLimited,
            "too many queries from this token; retry shortly",
        ));
    }
    let Ok(_permit) = state.sql_permits.try_acquire() else {
        return Err(ApiError::new(
            ErrorKind::Overloaded,
            "too many queries running; retry shortly",
        ));
    };
    let collections = access.collections().map(<[String]>::to_vec);
    let answer = analytics.sql(request, collections).await?;
    Ok(([(header::CONTENT_TYPE, answer.content_type)], answer.body).into_response())
}

/// Archives what is durable and compacts a new snapshot of the collection now; answers
/// its manifest.
#[utoipa::path(
    post,
    path = "/v1/collections/{name}/snapshot",
    tag = "sql",
    params(("name" = String, Path, description = "The collection")),
    responses((status = 200, description = "The new snapshot's manifest", body = serde_json::Value)),
    security(("token" = ["admin"]))
)]
async fn post_snapshot(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state.engine.collection(&name)?;
    let manifest = analytics(&state)?.snapshot(name).await?;
    Ok(Json(manifest).into_response())
}
