//! The in-process harness of the server's tests: a router over a fresh engine, requests
//! built with [`Call`], and answers read back as [`Answer`]. Each test file uses part of it.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sluice_core::Config;
use sluice_engine::{Engine, Role, TokenSpec};
use std::net::SocketAddr;
use tower::ServiceExt;

/// The router of an engine opened in a temporary directory (deleted when dropped).
pub struct Api {
    pub router: Router,
    pub engine: Engine,
    /// Lives as long as the API (a test may swap the router and keep the rest).
    pub dir: tempfile::TempDir,
}

/// An API over `config` (TOML), changed by `configure` before the engine opens.
pub fn api_with(config: &str, configure: impl FnOnce(&mut Config)) -> Api {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("temporary directory: {error}"));
    let mut config =
        Config::from_toml(config).unwrap_or_else(|error| panic!("the test config: {error}"));
    configure(&mut config);
    let engine = Engine::open(&config, dir.path())
        .unwrap_or_else(|error| panic!("opening the engine: {error}"));
    Api {
        router: sluice_server::router(engine.clone()),
        engine,
        dir,
    }
}

/// Status, headers and body text of one response. The body of an event stream is not
/// read (it never ends): its status and headers are the answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Answer {
    /// The body as JSON; a body that is not JSON fails the test.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|error| panic!("{error}: {}", self.text))
    }

    /// The body as JSON, or `null` when it is not JSON (pages, metrics, streams).
    pub fn json_or_null(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// `error.code` of an error body, or `""`.
    pub fn error_code(&self) -> String {
        self.json_or_null()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// `error.message` of an error body, or `""`.
    pub fn error_message(&self) -> String {
        self.json_or_null()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A request as a client at `client` sends it.
pub struct Call<'a> {
    pub method: Method,
    pub uri: String,
    pub authorization: Option<&'a str>,
    pub cookie: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: Body,
    pub client: SocketAddr,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, uri: &str) -> Self {
        Self {
            method,
            uri: uri.to_owned(),
            authorization: None,
            cookie: None,
            content_type: None,
            body: Body::empty(),
            client: SocketAddr::from(([10, 0, 0, 1], 5000)),
        }
    }

    /// The whole `Authorization` header value (`Bearer …`, or something malformed).
    pub fn bearer(mut self, header: &'a str) -> Self {
        self.authorization = Some(header);
        self
    }

    pub fn cookie(mut self, cookie: &'a str) -> Self {
        self.cookie = Some(cookie);
        self
    }

    pub fn client(mut self, client: SocketAddr) -> Self {
        self.client = client;
        self
    }

    /// A JSON body.
    pub fn body(self, json: impl Into<String>) -> Self {
        self.body_as("application/json", json.into())
    }

    /// A body of any type (`None`: no `Content-Type` header).
    pub fn body_as(
        mut self,
        content_type: impl Into<Option<&'a str>>,
        body: impl Into<Body>,
    ) -> Self {
        self.content_type = content_type.into();
        self.body = body.into();
        self
    }
}

impl Api {
    pub async fn send(&self, call: Call<'_>) -> Answer {
        let mut request = Request::builder().method(call.method).uri(&call.uri);
        if let Some(header) = call.authorization {
            request = request.header("authorization", header);
        }
        if let Some(cookie) = call.cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(content_type) = call.content_type {
            request = request.header("content-type", content_type);
        }
        let mut request = request
            .body(call.body)
            .unwrap_or_else(|error| panic!("building {}: {error}", call.uri));
        request.extensions_mut().insert(ConnectInfo(call.client));
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let headers = response.headers().clone();
        let is_stream = headers
            .get("content-type")
            .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
        let text = if is_stream {
            String::new()
        } else {
            let bytes = response
                .into_body()
                .collect()
                .await
                .unwrap_or_else(|error| panic!("reading the body of {}: {error}", call.uri))
                .to_bytes();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Answer {
            status,
            headers,
            text,
        }
    }

    /// A request without credentials.
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Answer {
        let method = Method::from_bytes(method.as_bytes())
            .unwrap_or_else(|error| panic!("method {method:?}: {error}"));
        self.send(Call::new(method, uri).body_as(content_type, body))
            .await
    }

    pub async fn get(&self, uri: &str) -> Answer {
        self.send(Call::new(Method::GET, uri)).await
    }

    pub async fn post(&self, uri: &str, body: &str) -> Answer {
        self.send(Call::new(Method::POST, uri).body(body)).await
    }

    pub async fn delete(&self, uri: &str) -> Answer {
        self.send(Call::new(Method::DELETE, uri)).await
    }

    pub async fn ndjson(&self, uri: &str, body: &str) -> Answer {
        self.send(Call::new(Method::POST, uri).body_as("application/x-ndjson", body.to_owned()))
            .await
    }

    /// A token made directly in the engine; its secret.
    pub fn token(&self, name: &str, role: Role, collections: Option<&[&str]>) -> String {
        self.token_expiring(name, role, collections, None)
    }

    pub fn token_expiring(
        &self,
        name: &str,
        role: Role,
        collections: Option<&[&str]>,
        expires_in_ms: Option<u64>,
    ) -> String {
        self.engine
            .create_token(TokenSpec {
                name: name.to_owned(),
                role,
                collections: collections
                    .map(|names| names.iter().map(|name| (*name).to_owned()).collect()),
                expires_in_ms,
            })
            .unwrap_or_else(|error| panic!("creating token {name}: {error}"))
            .0
    }
}
