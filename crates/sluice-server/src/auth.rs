//! Access control: who may call which route, on which collections.
//!
//! Every route's required role comes from its entry in the OpenAPI spec (the `token`
//! security requirement's scope: `reader`, `writer` or `admin`, plus `all_collections`
//! for routes a token limited to some collections may not use), so a route and its rule
//! are declared in one place. A route the rules do not know is refused (fail closed).
//!
//! Credentials: `Authorization: Bearer <token>` on every route; `GET` requests (event
//! streams and browser pages) also accept the session cookie made by the login page.
//! Failed authentications are counted per client address; an address over its budget is
//! answered 429 before its credentials are even looked at, so that tokens cannot be
//! guessed at speed.

use crate::error::{ApiError, ErrorKind};
use crate::metrics::HttpMetrics;
use crate::{AppState, ServerOptions};
use axum::RequestExt;
use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sluice_engine::tokens::{self, TokenCheck, TokenEntry};
use sluice_engine::{Engine, Role};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// The name of the browser session cookie.
pub const SESSION_COOKIE: &str = "sluice_session";
/// Longest `Authorization` header looked at; longer ones are malformed.
const AUTHORIZATION_BYTES_MAX: usize = 512;
/// Client addresses whose failures are remembered at once.
const CLIENTS_TRACKED_MAX: usize = 65_536;
/// The scope that marks routes a token limited to some collections may not use.
pub const ALL_COLLECTIONS: &str = "all_collections";

/// What a route requires, read from the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `None`: public (no credentials needed).
    pub role: Option<Role>,
    /// Only tokens without a collection list may call it.
    pub all_collections: bool,
    /// The path's `{name}` is a collection, checked against the token's list.
    pub collection_param: bool,
}

/// Rules by route path (as the router matches it), then method.
#[derive(Debug, Default)]
pub struct Rules(HashMap<String, Vec<(Method, Rule)>>);

impl Rules {
    /// Reads every operation's rule from the spec (JSON).
    pub fn from_spec(spec: &serde_json::Value) -> Result<Self, String> {
        let mut rules = HashMap::new();
        let paths = spec["paths"].as_object().ok_or("the spec has no paths")?;
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, operation) in item {
                let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                    continue;
                };
                let rule = rule_of(path, &method, operation)?;
                rules
                    .entry(path.clone())
                    .or_insert_with(Vec::new)
                    .push((method, rule));
            }
        }
        Ok(Self(rules))
    }

    pub fn get(&self, method: &Method, path: &str) -> Option<&Rule> {
        let rules = self.0.get(path)?;
        // HEAD is served by the GET route.
        let method = if *method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        rules
            .iter()
            .find(|(candidate, _)| candidate == method)
            .map(|(_, rule)| rule)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Method, &str, &Rule)> {
        self.0.iter().flat_map(|(path, rules)| {
            rules
                .iter()
                .map(move |(method, rule)| (method, path.as_str(), rule))
        })
    }
}

fn rule_of(path: &str, method: &Method, operation: &serde_json::Value) -> Result<Rule, String> {
    let requirements = operation["security"]
        .as_array()
        .ok_or_else(|| format!("{method} {path} declares no security requirement"))?;
    let mut role = None;
    let mut all_collections = false;
    let mut public = false;
    for requirement in requirements {
        let Some(requirement) = requirement.as_object() else {
            continue;
        };
        if requirement.is_empty() {
            public = true;
        }
        if let Some(scopes) = requirement
            .get("token")
            .and_then(|scopes| scopes.as_array())
        {
            for scope in scopes.iter().filter_map(|scope| scope.as_str()) {
                if scope == ALL_COLLECTIONS {
                    all_collections = true;
                } else {
                    role = Some(
                        Role::parse(scope).map_err(|error| format!("{method} {path}: {error}"))?,
                    );
                }
            }
        }
    }
    if public == role.is_some() {
        return Err(format!(
            "{method} {path} must be either public or need exactly one role"
        ));
    }
    Ok(Rule {
        role,
        all_collections,
        collection_param: path.starts_with("/v1/collections/{name}"),
    })
}

/// Who is calling, as handlers see it.
#[derive(Clone, Debug)]
pub struct Access {
    /// `None`: auth is off (loopback without tokens, or waived).
    pub token: Option<Arc<TokenEntry>>,
}

impl Access {
    pub fn open() -> Self {
        Self { token: None }
    }

    pub fn may_see(&self, collection: &str) -> bool {
        self.token
            .as_ref()
            .is_none_or(|token| token.record.may_see(collection))
    }

    /// The collections this caller is limited to; `None` means all.
    pub fn collections(&self) -> Option<&[String]> {
        self.token
            .as_ref()
            .and_then(|token| token.record.collections.as_deref())
    }

    /// A name for rate limits and logs (never the secret).
    pub fn name(&self) -> &str {
        self.token
            .as_ref()
            .map_or("anonymous", |token| token.record.name.as_str())
    }

    /// 403 unless this caller may see `collection`.
    pub fn check(&self, collection: &str) -> Result<(), ApiError> {
        if self.may_see(collection) {
            return Ok(());
        }
        Err(collection_forbidden(collection))
    }
}

pub fn collection_forbidden(collection: &str) -> ApiError {
    ApiError::new(
        ErrorKind::CollectionForbidden,
        format!("this token may not use the collection {collection:?}"),
    )
}

/// A token bucket per key (client address, or token for query rates).
#[derive(Debug)]
pub struct RateLimiter<K> {
    burst: f64,
    per_s: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: std::hash::Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(burst: u32, per_s: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_s: f64::from(per_s),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, level: f64, since: Instant, now: Instant) -> f64 {
        (level + now.duration_since(since).as_secs_f64() * self.per_s).min(self.burst)
    }

    /// Whether `key` has budget left (without spending any).
    pub fn has_budget(&self, key: &K) -> bool {
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets
            .get(key)
            .is_none_or(|(level, since)| self.refilled(*level, *since, Instant::now()) >= 1.0)
    }

    /// Spends one unit of `key`'s budget; `false` when there was none.
    pub fn spend(&self, key: &K) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= CLIENTS_TRACKED_MAX && !buckets.contains_key(key) {
            // Forget the clients whose budget is full again; if all are still spending,
            // forget everyone rather than grow without bound.
            buckets.retain(|_, (level, since)| self.refilled(*level, *since, now) < self.burst);
            if buckets.len() >= CLIENTS_TRACKED_MAX {
                buckets.clear();
            }
        }
        let (level, since) = buckets.entry(key.clone()).or_insert((self.burst, now));
        let current = self.refilled(*level, *since, now);
        let spent = current >= 1.0;
        *level = if spent { current - 1.0 } else { current };
        *since = now;
        spent
    }

    /// Seconds until `key` has budget again (at least 1, for `Retry-After`).
    pub fn retry_after_s(&self) -> u64 {
        if self.per_s <= 0.0 {
            return 60;
        }
        (1.0 / self.per_s).ceil().max(1.0) as u64
    }
}

/// Browser sessions made by the login page. In memory only: a restart signs everyone
/// out, and a session dies with its token (it is checked on every request).
#[derive(Debug)]
pub struct Sessions {
    ttl_ms: u64,
    max: usize,
    /// SHA-256 of the session id → (token name, expiry in ms since the epoch).
    by_hash: Mutex<HashMap<[u8; 32], (String, u64)>>,
}

impl Sessions {
    pub fn new(ttl_s: u64, max: usize) -> Self {
        Self {
            ttl_ms: ttl_s.saturating_mul(1000),
            max: max.max(1),
            by_hash: Mutex::new(HashMap::new()),
        }
    }

    /// A new session for `token`; answers the cookie value and its lifetime in seconds.
    pub fn create(&self, token: &TokenEntry) -> Result<(String, u64), ApiError> {
        let id = tokens::random_secret()
            .map_err(|error| ApiError::new(ErrorKind::Internal, error.to_string()))?;
        let now = tokens::now_ms();
        let mut expires = now.saturating_add(self.ttl_ms);
        if let Some(token_expires) = token.record.expires_ms {
            expires = expires.min(token_expires);
        }
        let mut sessions = self.by_hash.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, (_, session_expires)| *session_expires > now);
        while sessions.len() >= self.max {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, (_, session_expires))| *session_expires)
                .map(|(hash, _)| *hash)
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(tokens::sha256(&id), (token.record.name.clone(), expires));
        Ok((id, expires.saturating_sub(now) / 1000))
    }

    /// The token name of a live session.
    pub fn lookup(&self, id: &str) -> Option<String> {
        let sessions = self.by_hash.lock().unwrap_or_else(PoisonError::into_inner);
        let (name, expires) = sessions.get(&tokens::sha256(id))?;
        (*expires > tokens::now_ms()).then(|| name.clone())
    }

    pub fn remove(&self, id: &str) {
        self.by_hash
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&tokens::sha256(id));
    }
}

/// Everything the auth middleware needs, built once per server.
#[derive(Debug)]
pub struct Auth {
    pub rules: Rules,
    pub failures: RateLimiter<IpAddr>,
    pub sessions: Sessions,
    pub options: ServerOptions,
}

impl Auth {
    /// A 429 for `client` when it has used up its budget of failed authentications.
    pub fn refuse_if_limited(&self, client: IpAddr, metrics: &HttpMetrics) -> Option<Response> {
        if self.failures.has_budget(&client) {
            return None;
        }
        metrics.auth_failure("rate_limited");
        let mut response = ApiError::new(
            ErrorKind::TooManyAuthFailures,
            "too many failed authentications from this address; wait and retry",
        )
        .into_response();
        if let Ok(value) = self.failures.retry_after_s().to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        Some(response)
    }

    /// A failed authentication from `client`: spends its budget, counts it under
    /// `reason`, and answers the error.
    fn failed(
        &self,
        client: IpAddr,
        metrics: &HttpMetrics,
        reason: &'static str,
        kind: ErrorKind,
        message: &str,
    ) -> ApiError {
        self.failures.spend(&client);
        metrics.auth_failure(reason);
        ApiError::new(kind, message)
    }

    /// The token of a bearer secret, or the failure (counted against `client`).
    pub fn check_secret(
        &self,
        engine: &Engine,
        client: IpAddr,
        metrics: &HttpMetrics,
        secret: &str,
    ) -> Result<Arc<TokenEntry>, ApiError> {
        match engine.check_token(secret) {
            TokenCheck::Valid(token) => Ok(token),
            TokenCheck::Expired => Err(self.failed(
                client,
                metrics,
                "expired",
                ErrorKind::TokenExpired,
                "this token has expired",
            )),
            TokenCheck::Unknown => Err(self.failed(
                client,
                metrics,
                "unknown",
                ErrorKind::InvalidToken,
                "unknown or revoked token",
            )),
        }
    }
}

/// A credential as presented.
enum Presented<'a> {
    Bearer(&'a str),
    Session(String),
}

/// A 401 with its `WWW-Authenticate` challenge.
fn unauthorized(error: ApiError) -> Response {
    let challenge = match error.kind {
        ErrorKind::MissingToken => "Bearer realm=\"sluice\"",
        _ => "Bearer realm=\"sluice\", error=\"invalid_token\"",
    };
    let mut response = error.into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static(challenge),
    );
    response
}

/// The session id in the request's cookies, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
}

/// The credential of a request; `Err` when its `Authorization` header is malformed.
fn presented(request: &Request) -> Result<Option<Presented<'_>>, Malformed> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        if value.len() > AUTHORIZATION_BYTES_MAX {
            return Err(Malformed);
        }
        let text = value.to_str().map_err(|_| Malformed)?;
        let (scheme, secret) = text.split_once(' ').ok_or(Malformed)?;
        let secret = secret.trim();
        if !scheme.eq_ignore_ascii_case("bearer")
            || secret.is_empty()
            || !secret.bytes().all(tokens::is_token_byte)
        {
            return Err(Malformed);
        }
        return Ok(Some(Presented::Bearer(secret)));
    }
    if matches!(*request.method(), Method::GET | Method::HEAD)
        && let Some(id) = session_cookie(request.headers())
    {
        return Ok(Some(Presented::Session(id)));
    }
    Ok(None)
}

/// A malformed `Authorization` header.
struct Malformed;

pub fn client_ip(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// The route path a rule is filed under (composite-key aliases share their route's rule).
fn rule_path(matched: &str) -> &str {
    matched
        .strip_suffix(crate::routes::COMPOSITE_KEY_SUFFIX)
        .unwrap_or(matched)
}

/// The middleware: checks credentials, role and collection, then hands the request on
/// with its [`Access`].
pub(crate) async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let auth = &state.auth;
    let metrics: &HttpMetrics = &state.metrics;
    let Some(matched) = request.extensions().get::<MatchedPath>().cloned() else {
        return next.run(request).await;
    };
    let Some(rule) = auth
        .rules
        .get(request.method(), rule_path(matched.as_str()))
        .cloned()
    else {
        tracing::error!(
            route = matched.as_str(),
            "A route has no access rule; refusing it."
        );
        return ApiError::new(ErrorKind::Internal, "this route has no access rule").into_response();
    };
    let Some(required) = rule.role else {
        return next.run(request).await;
    };
    if !auth.options.auth_enforced(&state.engine) {
        request.extensions_mut().insert(Access::open());
        return next.run(request).await;
    }
    let client = client_ip(&request);
    if let Some(refused) = auth.refuse_if_limited(client, metrics) {
        return refused;
    }
    let token = match presented(&request) {
        Err(Malformed) => Err(auth.failed(
            client,
            metrics,
            "malformed",
            ErrorKind::InvalidAuthorization,
            "the Authorization header must be `Bearer <token>`",
        )),
        Ok(None) => {
            // Not a guess: no budget spent.
            metrics.auth_failure("missing");
            Err(ApiError::new(
                ErrorKind::MissingToken,
                "this route needs a token: send `Authorization: Bearer <token>`",
            ))
        }
        Ok(Some(Presented::Bearer(secret))) => {
            auth.check_secret(&state.engine, client, metrics, secret)
        }
        Ok(Some(Presented::Session(id))) => auth
            .sessions
            .lookup(&id)
            .and_then(|name| state.engine.token_named(&name))
            .ok_or_else(|| {
                auth.failed(
                    client,
                    metrics,
                    "session",
                    ErrorKind::InvalidSession,
                    "no such session (expired, signed out, or its token was revoked): sign in again at /login",
                )
            }),
    };
    let token = match token {
        Ok(token) => token,
        Err(error) => return unauthorized(error),
    };
    if !token.record.role.allows(required) {
        metrics.auth_failure("forbidden");
        return ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "this route needs the {} role; this token is a {}",
                required.as_str(),
                token.record.role.as_str()
            ),
        )
        .into_response();
    }
    if rule.all_collections && token.record.collections.is_some() {
        metrics.auth_failure("forbidden");
        return ApiError::new(
            ErrorKind::Forbidden,
            "this route needs a token that is not limited to some collections",
        )
        .into_response();
    }
    if rule.collection_param {
        let name = request
            .extract_parts::<RawPathParams>()
            .await
            .ok()
            .and_then(|params| {
                params
                    .iter()
                    .find(|(key, _)| *key == "name")
                    .map(|(_, value)| value.to_owned())
            });
        if let Some(name) = name
            && !token.record.may_see(&name)
        {
            metrics.auth_failure("forbidden");
            return collection_forbidden(&name).into_response();
        }
    }
    request
        .extensions_mut()
        .insert(Access { token: Some(token) });
    next.run(request).await
}
