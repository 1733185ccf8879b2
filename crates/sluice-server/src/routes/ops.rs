//! Operations: metrics, health, and the API's own spec.

use crate::AppState;
use crate::error::{ApiError, ErrorKind};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(healthz))
        .routes(routes!(openapi))
}

/// Prometheus text: the engine's metrics, then HTTP requests, auth failures and
/// connections. Names every collection, so only unlimited tokens may read it.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)),
    security(("token" = ["reader", "all_collections"]))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.engine.render_metrics();
    if let Some(projections) = &state.projections {
        projections.render_metrics(&mut text);
    }
    if let Some(search) = &state.search {
        search.render_metrics(&mut text);
    }
    state.metrics.render(&mut text);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        Body::from(text),
    )
        .into_response()
}

/// Health: 503 when writes are stopped, otherwise 200 with `ok` or `degraded` (a
/// connector is down) and whether requests need a token. Public, for load balancers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "Serving", body = crate::openapi::HealthBody)),
    security(())
)]
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
    Json(serde_json::json!({
        "status": status,
        "auth": state.auth.options.auth_mode(&state.engine),
        "components": components,
    }))
    .into_response()
}

/// This spec (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "ops",
    responses((status = 200, description = "The OpenAPI 3.1 spec", body = serde_json::Value)),
    security(())
)]
async fn openapi(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.spec.to_string(),
    )
        .into_response()
}
