//! Sluice's HTTP API (axum). The only crate that knows HTTP: it turns requests into
//! engine calls and engine results into JSON, with one error table (`error.rs`), one
//! module per resource (`routes/`), access control (`auth.rs`), the generated OpenAPI
//! spec (`openapi.rs`), and the connection loop with TLS and its bounds (`serve.rs`).

pub mod analytics;
pub mod auth;
mod error;
mod metrics;
pub mod openapi;
pub mod projections;
mod routes;
pub mod search;
mod serve;

pub use analytics::Analytics;
pub use auth::Rules;
pub use error::{ApiError, ErrorKind};
pub use projections::Projections;
pub use search::Search;
pub use serve::{Tls, TlsError, serve};

use axum::Router;
use axum::middleware;
use sluice_engine::Engine;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// How the server was started, as far as access control cares.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Every request needs a token even before one exists (the server listens beyond
    /// loopback).
    pub auth_required: bool,
    /// `--insecure-no-auth`: no request needs a token, whatever exists.
    pub insecure_no_auth: bool,
    /// Served over TLS (session cookies get `Secure`).
    pub tls: bool,
}

impl ServerOptions {
    /// The options for a server listening on `address`.
    pub fn for_address(address: SocketAddr, insecure_no_auth: bool, tls: bool) -> Self {
        Self {
            auth_required: !address.ip().is_loopback(),
            insecure_no_auth,
            tls,
        }
    }

    /// Whether requests need credentials now: always off when waived; on whenever a token
    /// exists or the server listens beyond loopback.
    pub fn auth_enforced(&self, engine: &Engine) -> bool {
        !self.insecure_no_auth && (self.auth_required || engine.has_tokens())
    }

    /// `/healthz`'s and the start-up log's word for the current mode.
    pub fn auth_mode(&self, engine: &Engine) -> &'static str {
        if self.insecure_no_auth {
            "off (waived with --insecure-no-auth)"
        } else if self.auth_enforced(engine) {
            "on"
        } else {
            "off (loopback and no tokens: create one with `sluice token create` to turn it on)"
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub engine: Engine,
    pub ingest_permits: Arc<Semaphore>,
    pub stream_permits: Arc<Semaphore>,
    pub sql_permits: Arc<Semaphore>,
    /// Searches and autocompletes running at once; more are answered 503.
    pub search_permits: Arc<Semaphore>,
    /// Queries per token (by name; `anonymous` without auth).
    pub sql_rate: Arc<auth::RateLimiter<String>>,
    /// Turns true when the server shuts down: open event streams and long polls end,
    /// so that a graceful shutdown does not wait for them.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// SQL and snapshots, when the binary plugged them in.
    pub analytics: Option<Arc<dyn Analytics>>,
    /// Projections, when the binary plugged them in.
    pub projections: Option<Arc<dyn Projections>>,
    /// Search indexes, when the binary plugged them in.
    pub search: Option<Arc<dyn Search>>,
    pub auth: Arc<auth::Auth>,
    pub metrics: Arc<metrics::HttpMetrics>,
    /// The OpenAPI spec, as served.
    pub spec: Arc<str>,
}

/// The OpenAPI 3.1 spec of every route, as JSON.
pub fn openapi_spec() -> serde_json::Value {
    let (_, generated) = routes::api().split_for_parts();
    openapi::spec(generated)
}

/// The access rules of every route, read from the spec.
pub fn access_rules() -> Result<Rules, String> {
    Rules::from_spec(&openapi_spec())
}

/// Refuses to serve where nobody could get in: beyond loopback with auth on and not a
/// single token (stored or bootstrap).
pub fn check_listen_address(
    engine: &Engine,
    address: SocketAddr,
    insecure_no_auth: bool,
) -> Result<(), String> {
    if address.ip().is_loopback() || insecure_no_auth || engine.has_tokens() {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {address} with no access token: every request would be refused. \
         Set SLUICE_ADMIN_TOKEN (or server.admin_token_file), or create a token first with \
         `sluice token create --offline --config ...`, or listen on loopback, or start with \
         --insecure-no-auth if a network boundary protects this port."
    ))
}

/// What the binary plugs into the API beside the engine: each side is optional, so that
/// the server builds without DataFusion or a JavaScript engine.
#[derive(Clone, Default)]
pub struct Plugins {
    /// SQL and snapshots.
    pub analytics: Option<Arc<dyn Analytics>>,
    pub projections: Option<Arc<dyn Projections>>,
    pub search: Option<Arc<dyn Search>>,
}

/// The API for tests and embedding: auth as on loopback (on once a token exists).
pub fn router(engine: Engine) -> Router {
    router_with(engine, Plugins::default(), ServerOptions::default())
}

/// [`router`], with SQL, snapshots and projections answered by `plugins` and the given
/// options.
pub fn router_with(engine: Engine, plugins: Plugins, options: ServerOptions) -> Router {
    // No sender: this router's streams stop only when their clients go.
    let (_, stopping) = tokio::sync::watch::channel(false);
    build_router(engine, stopping, plugins, options).0
}

pub(crate) fn build_router(
    engine: Engine,
    stopping: tokio::sync::watch::Receiver<bool>,
    plugins: Plugins,
    options: ServerOptions,
) -> (Router, Arc<metrics::HttpMetrics>) {
    let config = engine.config();
    let limits = config.limits.clone();
    let server = config.server.clone();
    let sql = config.snapshots.clone().unwrap_or_default();
    let (router, generated) = routes::api().split_for_parts();
    let spec = openapi::spec(generated);
    // The spec is generated from the same code; rules it cannot give are a bug that
    // every test would hit, so fail closed rather than serve without them.
    let rules = Rules::from_spec(&spec).unwrap_or_else(|error| {
        tracing::error!(%error, "The spec does not give every route an access rule.");
        Rules::default()
    });
    let metrics = Arc::new(metrics::HttpMetrics::default());
    let state = AppState {
        ingest_permits: Arc::new(Semaphore::new(limits.ingest_requests_max.max(1))),
        stream_permits: Arc::new(Semaphore::new(limits.streams_max.max(1))),
        sql_permits: Arc::new(Semaphore::new(sql.queries_max.max(1))),
        search_permits: Arc::new(Semaphore::new(limits.searches_max.max(1))),
        sql_rate: Arc::new(auth::RateLimiter::new(
            sql.queries_per_token_per_s.saturating_mul(2),
            sql.queries_per_token_per_s,
        )),
        stopping,
        engine,
        analytics: plugins.analytics,
        projections: plugins.projections,
        search: plugins.search,
        auth: Arc::new(auth::Auth {
            rules,
            failures: auth::RateLimiter::new(
                server.auth_failures_burst,
                server.auth_failures_per_s,
            ),
            sessions: auth::Sessions::new(server.session_ttl_s, server.sessions_max),
            options,
        }),
        metrics: Arc::clone(&metrics),
        spec: Arc::from(spec.to_string()),
    };
    let router = router
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .fallback(|| async {
            ApiError::new(
                ErrorKind::RouteNotFound,
                "no such route; see GET /v1/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorKind::MethodNotAllowed,
                "this route does not accept that method",
            )
        })
        .with_state(state);
    (router, metrics)
}
