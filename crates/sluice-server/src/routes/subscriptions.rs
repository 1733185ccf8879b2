//! Named subscriptions: a filter and an acknowledged position that survives restarts.
//! A token limited to some collections sees, reads and changes only subscriptions whose
//! filter names one of them.

use super::changes::changes_response;
use super::{PAGE_LIMIT_DEFAULT, json_body, query, stopped};
use crate::AppState;
use crate::auth::{Access, collection_forbidden};
use crate::error::{ApiError, ErrorKind};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use sluice_engine::SubscriptionSpec;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_subscriptions))
        .routes(routes!(
            get_subscription,
            put_subscription,
            delete_subscription
        ))
        .routes(routes!(subscription_next))
        .routes(routes!(ack_subscription))
}

/// Whether `access` may use a subscription with this filter: one without a collection
/// reads every collection, so only unlimited tokens may.
fn may_use(access: &Access, spec: &SubscriptionSpec) -> bool {
    match &spec.collection {
        Some(collection) => access.may_see(collection),
        None => access.collections().is_none(),
    }
}

/// The subscription `name`, if `access` may use it; 403 otherwise.
fn checked(
    state: &AppState,
    access: &Access,
    name: &str,
) -> Result<sluice_engine::SubscriptionInfo, ApiError> {
    let info = state.engine.subscription(name)?;
    if !may_use(access, &info.spec) {
        return Err(forbidden(&info.spec));
    }
    Ok(info)
}

fn forbidden(spec: &SubscriptionSpec) -> ApiError {
    match &spec.collection {
        Some(collection) => collection_forbidden(collection),
        None => ApiError::new(
            ErrorKind::CollectionForbidden,
            "a subscription without a collection reads every collection; this token is limited to some",
        ),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SubscriptionRequest {
    /// Only this collection's records.
    #[serde(default)]
    collection: Option<String>,
    /// Only records that changed this JSON pointer, below it or above it.
    #[serde(default)]
    changed_path: Option<String>,
    /// Where a new subscription starts: `beginning` (default) or `now`.
    #[serde(default)]
    #[schema(pattern = "^(beginning|now)$")]
    start: Option<String>,
}

/// Every subscription the caller may use, with its lag.
#[utoipa::path(
    get,
    path = "/v1/subscriptions",
    tag = "subscriptions",
    responses((status = 200, description = "Subscriptions", body = crate::openapi::SubscriptionsList)),
    security(("token" = ["reader"]))
)]
async fn list_subscriptions(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
) -> Result<Response, ApiError> {
    let visible: Vec<_> = state
        .engine
        .subscriptions()?
        .into_iter()
        .filter(|info| may_use(&access, &info.spec))
        .collect();
    Ok(Json(serde_json::json!({"subscriptions": visible})).into_response())
}

/// Creates a subscription, or changes its filter keeping its position.
#[utoipa::path(
    put,
    path = "/v1/subscriptions/{name}",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription")),
    request_body(content = SubscriptionRequest, content_type = "application/json"),
    responses((status = 200, description = "The subscription", body = crate::openapi::SubscriptionBody)),
    security(("token" = ["writer"]))
)]
async fn put_subscription(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: SubscriptionRequest = json_body(&body)?;
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
    let spec = SubscriptionSpec {
        collection: body.collection,
        changed_path: body.changed_path,
    };
    if !may_use(&access, &spec) {
        return Err(forbidden(&spec));
    }
    // Changing the filter of a subscription is changing what it reads: the caller must
    // be allowed the old filter too.
    match state.engine.subscription(&name) {
        Ok(existing) if !may_use(&access, &existing.spec) => return Err(forbidden(&existing.spec)),
        Ok(_) | Err(sluice_engine::EngineError::UnknownSubscription(_)) => {}
        Err(error) => return Err(error.into()),
    }
    Ok(Json(state.engine.put_subscription(&name, spec, start)?).into_response())
}

/// One subscription.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{name}",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription")),
    responses((status = 200, description = "The subscription", body = crate::openapi::SubscriptionBody)),
    security(("token" = ["reader"]))
)]
async fn get_subscription(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(checked(&state, &access, &name)?).into_response())
}

/// Deletes a subscription (its position goes with it).
#[utoipa::path(
    delete,
    path = "/v1/subscriptions/{name}",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription")),
    responses((status = 200, description = "Deleted", body = crate::openapi::Deleted)),
    security(("token" = ["writer"]))
)]
async fn delete_subscription(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    checked(&state, &access, &name)?;
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

/// Records after the acknowledged position that match the filter (long-polling); the
/// same records come again until acknowledged.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{name}/next",
    tag = "subscriptions",
    params(
        ("name" = String, Path, description = "The subscription"),
        ("max" = Option<usize>, Query, description = "Records at most"),
        ("wait_ms" = Option<u64>, Query, description = "Long-poll up to this long"),
    ),
    responses((status = 200, description = "A page of records", body = crate::openapi::ChangesPage)),
    security(("token" = ["reader"]))
)]
async fn subscription_next(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
    params: Result<Query<NextParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    checked(&state, &access, &name)?;
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
            sluice_engine::ChangesPage { records: Vec::new(), positions: Vec::new(), next: position }
        }
    };
    Ok(changes_response(&page))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    /// The `next` of the page read.
    cursor: String,
}

/// Acknowledges everything up to `cursor`: the new position, kept across restarts.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{name}/ack",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription")),
    request_body(content = AckRequest, content_type = "application/json"),
    responses((status = 200, description = "The subscription", body = crate::openapi::SubscriptionBody)),
    security(("token" = ["writer"]))
)]
async fn ack_subscription(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: AckRequest = json_body(&body)?;
    checked(&state, &access, &name)?;
    let cursor = state.engine.parse_cursor(&body.cursor)?;
    Ok(Json(state.engine.ack_subscription(&name, &cursor)?).into_response())
}
