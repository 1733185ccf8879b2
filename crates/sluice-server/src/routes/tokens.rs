//! Token management, for admins whose token is not limited to some collections.

use super::json_body;
use crate::AppState;
use crate::error::{ApiError, ErrorKind};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sluice_engine::{Role, TokenSpec};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// 1 to 128 characters of a-z, A-Z, 0-9, '_', '-', '.', ':'.
    name: String,
    #[schema(value_type = crate::openapi::RoleName)]
    role: Role,
    /// Only these collections; absent means all.
    #[serde(default)]
    collections: Option<Vec<String>>,
    /// Milliseconds until it expires; absent means never.
    #[serde(default)]
    expires_in_ms: Option<u64>,
}

/// Every token: name, role, collections, created, expires, last used (never secrets).
#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    responses((status = 200, description = "Tokens", body = crate::openapi::TokensList)),
    security(("token" = ["admin", "all_collections"]))
)]
async fn list_tokens(State(state): State<AppState>) -> Response {
    Json(serde_json::json!({"tokens": state.engine.tokens()})).into_response()
}

/// Creates a token. Its secret is in this answer and nowhere else: the server keeps
/// only its SHA-256. It works at once.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    request_body(content = TokenRequest, content_type = "application/json"),
    responses((status = 201, description = "The new token, with its secret", body = crate::openapi::TokenCreated)),
    security(("token" = ["admin", "all_collections"]))
)]
async fn create_token(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: TokenRequest = json_body(&body)?;
    let (secret, record) = state.engine.create_token(TokenSpec {
        name: request.name,
        role: request.role,
        collections: request.collections,
        expires_in_ms: request.expires_in_ms,
    })?;
    tracing::info!(name = %record.name, role = record.role.as_str(), "Token created.");
    let mut body = serde_json::to_value(&record)
        .map_err(|error| ApiError::new(ErrorKind::Internal, error.to_string()))?;
    body["token"] = serde_json::Value::from(secret);
    if let Some(object) = body.as_object_mut() {
        object.remove("last_used_ms");
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Revokes a token: the next request that presents it fails, and its browser sessions end.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{name}",
    tag = "tokens",
    params(("name" = String, Path, description = "The token's name")),
    responses((status = 200, description = "Revoked", body = crate::openapi::Deleted)),
    security(("token" = ["admin", "all_collections"]))
)]
async fn revoke_token(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !state.engine.revoke_token(&name)? {
        return Err(ApiError::new(
            ErrorKind::UnknownToken,
            format!("no token named {name:?}"),
        ));
    }
    tracing::info!(%name, "Token revoked.");
    Ok(Json(serde_json::json!({"deleted": name})).into_response())
}
