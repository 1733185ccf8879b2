//! Browser sign-in: a page that takes a token and sets an `HttpOnly`, `SameSite=Strict`
//! session cookie (`Secure` under TLS), for event streams and the pages to come.

use crate::AppState;
use crate::auth::{SESSION_COOKIE, client_ip, session_cookie};
use crate::error::{ApiError, ErrorKind};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login_page))
        .routes(routes!(login))
        .routes(routes!(logout))
}

/// A login body holds one token: anything longer is refused unread.
const LOGIN_BODY_BYTES_MAX: usize = 64 * 1024;

const LOGIN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sluice: sign in</title>
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto}input{width:100%;padding:.5rem;margin:.5rem 0}</style>
</head><body>
<h1>Sluice</h1>
<form id="login"><label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off" required>
<button type="submit">Sign in</button></form>
<p id="result" role="status"></p>
<script>
document.getElementById('login').addEventListener('submit', async (event) => {
  event.preventDefault();
  const response = await fetch('/v1/login', {method: 'POST', headers: {'content-type': 'application/json'},
    body: JSON.stringify({token: document.getElementById('token').value})});
  const body = await response.json();
  document.getElementById('result').textContent = response.ok
    ? `Signed in as ${body.name} (${body.role}).` : body.error.message;
});
</script></body></html>
"#;

/// The sign-in page.
#[utoipa::path(
    get,
    path = "/login",
    tag = "session",
    responses((status = 200, description = "An HTML form", content_type = "text/html", body = String)),
    security(())
)]
async fn login_page() -> Html<&'static str> {
    Html(LOGIN_PAGE)
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    /// An API token.
    token: String,
}

/// Exchanges a token for a session cookie. Failures count against the client address's
/// budget like any failed authentication.
#[utoipa::path(
    post,
    path = "/v1/login",
    tag = "session",
    request_body(content = LoginRequest, content_type = "application/json"),
    responses((status = 200, description = "Signed in; the cookie is set", body = crate::openapi::SignedIn)),
    security(())
)]
async fn login(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let client = client_ip(&request);
    let auth = &state.auth;
    if let Some(refused) = auth.refuse_if_limited(client, &state.metrics) {
        return Ok(refused);
    }
    let body: Bytes = axum::body::to_bytes(request.into_body(), LOGIN_BODY_BYTES_MAX)
        .await
        .map_err(|error| ApiError::new(ErrorKind::InvalidBody, error.to_string()))?;
    let login: LoginRequest = super::json_body(&body)?;
    let token = auth.check_secret(&state.engine, client, &state.metrics, login.token.trim())?;
    let (id, max_age_s) = auth.sessions.create(&token)?;
    let secure = if auth.options.tls { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{secure}"
    );
    let mut response = Json(serde_json::json!({
        "name": token.record.name,
        "role": token.record.role,
        "expires_in_s": max_age_s,
    }))
    .into_response();
    let value = HeaderValue::from_str(&cookie)
        .map_err(|error| ApiError::new(ErrorKind::Internal, error.to_string()))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(response)
}

/// Ends the browser session (if any) and clears its cookie.
#[utoipa::path(
    post,
    path = "/v1/logout",
    tag = "session",
    responses((status = 200, description = "Signed out", body = serde_json::Value)),
    security(())
)]
async fn logout(State(state): State<AppState>, request: Request) -> Response {
    if let Some(id) = session_cookie(request.headers()) {
        state.auth.sessions.remove(&id);
    }
    let mut response = Json(serde_json::json!({"signed_out": true})).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sluice_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    response
}
