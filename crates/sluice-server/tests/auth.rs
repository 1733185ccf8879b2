//! Access control, in process: the auth matrix over every route of the spec, token
//! lifecycle without restart, browser sessions, brute-force limits, bad credentials, and
//! the spec covering every route in the source.

// Helpers outside `#[test]` functions may unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sluice_core::Config;
use sluice_engine::{Engine, Role, TokenSpec};
use std::net::SocketAddr;
use support::{Api, Call};
use tower::ServiceExt;

const CONFIG: &str = r#"
[server]
auth_failures_burst = 20
auth_failures_per_s = 1
[engine]
partitions = 2
[[collections]]
name = "doctor"
key = ["/doctor_id"]
version = "/updated_at"
[[collections]]
name = "location"
key = ["/location_id"]
"#;

fn api() -> Api {
    support::api_with(CONFIG, |_| {})
}

/// The credentials of the matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Nobody,
    Malformed,
    Unknown,
    Expired,
    Revoked,
    Reader,
    Writer,
    Admin,
    /// A writer limited to `location`, on routes about `doctor`.
    OtherCollection,
}

const EVERYONE: [Who; 9] = [
    Who::Nobody,
    Who::Malformed,
    Who::Unknown,
    Who::Expired,
    Who::Revoked,
    Who::Reader,
    Who::Writer,
    Who::Admin,
    Who::OtherCollection,
];

/// A concrete request for a route of the spec: path parameters filled in, a valid body.
fn concrete(method: &Method, path: &str, round: usize) -> (String, Option<String>) {
    let mut uri = path
        .replace("/v1/collections/{name}", "/v1/collections/doctor")
        .replace("/v1/subscriptions/{name}", "/v1/subscriptions/doctor-feed")
        .replace("/v1/tokens/{name}", &format!("/v1/tokens/spare-{round}"))
        .replace("/v1/projections/{name}", "/v1/projections/profile")
        .replace("/v1/indexes/{name}", "/v1/indexes/doctors")
        .replace("{key}", "17");
    if path == "/v1/changes" {
        uri.push_str("?limit=1000");
    }
    if path == "/v1/indexes/{name}/autocomplete" {
        uri.push_str("?field=name&prefix=an");
    }
    let body = match (method.as_str(), path) {
        ("POST", "/v1/collections/{name}/events") => Some(format!(
            r#"{{"doctor_id": 17, "updated_at": {}}}"#,
            round + 10
        )),
        ("PUT", "/v1/subscriptions/{name}") => Some(r#"{"collection": "doctor"}"#.to_owned()),
        ("POST", "/v1/subscriptions/{name}/ack") => Some(r#"{"cursor": "0.0"}"#.to_owned()),
        ("POST", "/v1/tokens") => Some(format!(r#"{{"name": "made-{round}", "role": "reader"}}"#)),
        ("POST", "/v1/sql") => Some(r#"{"sql": "SELECT 1"}"#.to_owned()),
        ("POST", "/v1/projections/{name}/get") => Some(r#"{"keys": ["17"]}"#.to_owned()),
        ("POST", "/v1/indexes/{name}/search") => Some(r#"{"q": "ana"}"#.to_owned()),
        ("POST", "/v1/login") => Some(r#"{"token": "sluice_nope"}"#.to_owned()),
        _ => None,
    };
    (uri, body)
}

#[tokio::test]
async fn auth_matrix_covers_every_route() {
    let api = api();
    let reader = api.token("reader", Role::Reader, None);
    let writer = api.token("writer", Role::Writer, None);
    let admin = api.token("admin", Role::Admin, None);
    let other = api.token("other", Role::Writer, Some(&["location"]));
    let revoked = api.token("revoked", Role::Admin, None);
    assert!(api.engine.revoke_token("revoked").unwrap());
    // Expires the moment it is made.
    let expired = api.token_expiring("expired", Role::Admin, None, Some(0));
    // Data the scoped token must never see, and data it may.
    let admin_header = format!("Bearer {admin}");
    for body in [r#"{"doctor_id": 17, "updated_at": 1, "name": "Ana"}"#] {
        let answer = api
            .send(
                Call::new(Method::POST, "/v1/collections/doctor/events")
                    .bearer(&admin_header)
                    .body(body),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    let answer = api
        .send(
            Call::new(Method::POST, "/v1/collections/location/events")
                .bearer(&admin_header)
                .body(r#"{"location_id": 3, "name": "Mercy"}"#),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    for (name, collection) in [("doctor-feed", "doctor"), ("location-feed", "location")] {
        let answer = api
            .send(
                Call::new(Method::PUT, &format!("/v1/subscriptions/{name}"))
                    .bearer(&admin_header)
                    .body(format!(r#"{{"collection": "{collection}"}}"#)),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }

    let rules = sluice_server::access_rules().unwrap();
    let mut routes: Vec<_> = rules.iter().collect();
    routes.sort_by(|a, b| (a.1, a.0.as_str()).cmp(&(b.1, b.0.as_str())));
    assert!(
        routes.len() >= 20,
        "the spec lists only {} operations",
        routes.len()
    );
    let mut round = 0;
    for (method, path, rule) in routes {
        // Deleting the subscription the other rows use would change their answers.
        if *method == Method::DELETE && path == "/v1/subscriptions/{name}" {
            continue;
        }
        for who in EVERYONE {
            round += 1;
            let (uri, body) = concrete(method, path, round);
            let header = match who {
                Who::Nobody => None,
                Who::Malformed => Some("Basic dXNlcjpwYXNz".to_owned()),
                Who::Unknown => Some(format!("Bearer sluice_{}", "0".repeat(64))),
                Who::Expired => Some(format!("Bearer {expired}")),
                Who::Revoked => Some(format!("Bearer {revoked}")),
                Who::Reader => Some(format!("Bearer {reader}")),
                Who::Writer => Some(format!("Bearer {writer}")),
                Who::Admin => Some(format!("Bearer {admin}")),
                Who::OtherCollection => Some(format!("Bearer {other}")),
            };
            let mut call = Call::new(method.clone(), &uri);
            // Each credential from its own address, so the brute-force limit never
            // answers for the rule.
            call.client =
                SocketAddr::from(([10, 1, (round / 250) as u8, (round % 250) as u8], 4000));
            call.authorization = header.as_deref();
            if let Some(body) = body {
                call = call.body(body);
            }
            let answer = api.send(call).await;
            let context = format!("{who:?} {method} {uri}: {} {}", answer.status, answer.text);
            assert!(!answer.status.is_server_error(), "{context}");
            let Some(required) = rule.role else {
                assert!(
                    answer.status != StatusCode::UNAUTHORIZED || path == "/v1/login",
                    "public route refused: {context}"
                );
                continue;
            };
            let expected_401 = match who {
                Who::Nobody => Some("missing_token"),
                Who::Malformed => Some("invalid_authorization"),
                Who::Unknown | Who::Revoked => Some("invalid_token"),
                Who::Expired => Some("token_expired"),
                _ => None,
            };
            if let Some(code) = expected_401 {
                assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{context}");
                assert_eq!(answer.error_code(), code, "{context}");
                assert!(answer.headers.contains_key("www-authenticate"), "{context}");
                continue;
            }
            let role = match who {
                Who::Reader => Role::Reader,
                Who::Writer | Who::OtherCollection => Role::Writer,
                _ => Role::Admin,
            };
            let scoped = who == Who::OtherCollection;
            let about_doctor =
                rule.collection_param || path.starts_with("/v1/subscriptions/{name}");
            let allowed =
                role.allows(required) && !(scoped && (rule.all_collections || about_doctor));
            if !allowed {
                assert_eq!(answer.status, StatusCode::FORBIDDEN, "{context}");
                continue;
            }
            assert!(
                answer.status != StatusCode::UNAUTHORIZED && answer.status != StatusCode::FORBIDDEN,
                "{context}"
            );
            if scoped && answer.status.is_success() {
                // What it did see is only its collection.
                let body = answer.json_or_null();
                for record in body["changes"].as_array().into_iter().flatten() {
                    assert_eq!(record["collection"], "location", "{context}");
                }
                for subscription in body["subscriptions"].as_array().into_iter().flatten() {
                    assert_eq!(subscription["collection"], "location", "{context}");
                }
            }
        }
    }
}

#[tokio::test]
async fn scoped_tokens_see_only_their_collections() {
    let api = api();
    let admin = format!("Bearer {}", api.token("admin", Role::Admin, None));
    let scoped = format!(
        "Bearer {}",
        api.token("loc", Role::Reader, Some(&["location"]))
    );
    api.send(
        Call::new(Method::POST, "/v1/collections/doctor/events")
            .bearer(&admin)
            .body(r#"{"doctor_id": 1, "updated_at": 1}"#),
    )
    .await;
    api.send(
        Call::new(Method::POST, "/v1/collections/location/events")
            .bearer(&admin)
            .body(r#"{"location_id": 1}"#),
    )
    .await;
    let all = api
        .send(Call::new(Method::GET, "/v1/changes").bearer(&admin))
        .await;
    assert_eq!(all.json()["changes"].as_array().unwrap().len(), 2);
    let mine = api
        .send(Call::new(Method::GET, "/v1/changes").bearer(&scoped))
        .await;
    let records = mine.json()["changes"].as_array().unwrap().clone();
    assert_eq!(records.len(), 1, "{}", mine.text);
    assert_eq!(records[0]["collection"], "location");
    let forbidden = api
        .send(Call::new(Method::GET, "/v1/changes?collection=doctor").bearer(&scoped))
        .await;
    assert_eq!(
        (forbidden.status, forbidden.error_code().as_str()),
        (StatusCode::FORBIDDEN, "collection_forbidden")
    );
    let stream = api
        .send(Call::new(Method::GET, "/v1/changes/stream?collection=doctor").bearer(&scoped))
        .await;
    assert_eq!(stream.status, StatusCode::FORBIDDEN);
    // A subscription without a collection reads everything: not for a scoped token.
    let answer = api
        .send(
            Call::new(Method::PUT, "/v1/subscriptions/all")
                .bearer(&scoped)
                .body("{}"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    let doc = api
        .send(Call::new(Method::GET, "/v1/collections/doctor/docs/1").bearer(&scoped))
        .await;
    assert_eq!(
        (doc.status, doc.error_code().as_str()),
        (StatusCode::FORBIDDEN, "collection_forbidden")
    );
    let doc = api
        .send(Call::new(Method::GET, "/v1/collections/location/docs/1").bearer(&scoped))
        .await;
    assert_eq!(doc.status, StatusCode::OK, "{}", doc.text);
}

#[tokio::test]
async fn tokens_made_and_revoked_over_http_work_at_once() {
    let api = api();
    // Loopback and no token: open, and /healthz says so.
    let health = api.send(Call::new(Method::GET, "/healthz")).await;
    assert!(
        health.json()["auth"].as_str().unwrap().starts_with("off"),
        "{}",
        health.text
    );
    let made = api
        .send(Call::new(Method::POST, "/v1/tokens").body(r#"{"name": "ops", "role": "admin"}"#))
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let admin = made.json()["token"].as_str().unwrap().to_owned();
    assert!(admin.starts_with("sluice_"));
    // Now a token exists: auth is on.
    let health = api.send(Call::new(Method::GET, "/healthz")).await;
    assert_eq!(health.json()["auth"], "on");
    let anonymous = api.send(Call::new(Method::GET, "/v1/changes")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let admin_header = format!("Bearer {admin}");
    let made = api
        .send(
            Call::new(Method::POST, "/v1/tokens")
                .bearer(&admin_header)
                .body(r#"{"name": "dash", "role": "reader", "collections": ["doctor"], "expires_in_ms": 86400000}"#),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let reader = format!("Bearer {}", made.json()["token"].as_str().unwrap());
    let ok = api
        .send(Call::new(Method::GET, "/v1/collections/doctor/docs").bearer(&reader))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let listed = api
        .send(Call::new(Method::GET, "/v1/tokens").bearer(&admin_header))
        .await;
    assert!(
        !listed.text.contains("sha256") && !listed.text.contains("sluice_"),
        "{}",
        listed.text
    );
    let listed = listed.json();
    let names: Vec<&str> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|token| token["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dash", "ops"]);
    let duplicate = api
        .send(
            Call::new(Method::POST, "/v1/tokens")
                .bearer(&admin_header)
                .body(r#"{"name": "dash", "role": "reader"}"#),
        )
        .await;
    assert_eq!(
        (duplicate.status, duplicate.error_code().as_str()),
        (StatusCode::CONFLICT, "token_exists")
    );
    // Regression (schemathesis): a struct body given as an array of its fields.
    let array = api
        .send(
            Call::new(Method::POST, "/v1/tokens")
                .bearer(&admin_header)
                .body(r#"["viaarray", "reader"]"#),
        )
        .await;
    assert_eq!(
        (array.status, array.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );
    let revoked = api
        .send(Call::new(Method::DELETE, "/v1/tokens/dash").bearer(&admin_header))
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    let refused = api
        .send(Call::new(Method::GET, "/v1/collections/doctor/docs").bearer(&reader))
        .await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    let unknown = api
        .send(Call::new(Method::DELETE, "/v1/tokens/dash").bearer(&admin_header))
        .await;
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (StatusCode::NOT_FOUND, "unknown_token")
    );
}

#[test]
fn the_data_directory_holds_no_token_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(CONFIG).unwrap();
    let secret = {
        let engine = Engine::open(&config, dir.path()).unwrap();
        let (secret, _) = engine
            .create_token(TokenSpec {
                name: "grep-me".into(),
                role: Role::Admin,
                collections: None,
                expires_in_ms: None,
            })
            .unwrap();
        engine.persist_token_usage().unwrap();
        secret
    };
    let hex = secret.strip_prefix("sluice_").unwrap();
    let mut files = 0;
    let mut stack = vec![dir.path().to_owned()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
                continue;
            }
            files += 1;
            let bytes = std::fs::read(entry.path()).unwrap();
            for needle in [hex.as_bytes(), &hex.as_bytes()[..16]] {
                assert!(
                    !bytes.windows(needle.len()).any(|window| window == needle),
                    "{} holds the token's secret",
                    entry.path().display()
                );
            }
        }
    }
    assert!(files > 0);
    // And the token still works after a restart (its hash was kept).
    let engine = Engine::open(&config, dir.path()).unwrap();
    assert!(matches!(
        engine.check_token(&secret),
        sluice_engine::TokenCheck::Valid(_)
    ));
}

#[tokio::test]
async fn brute_force_is_rate_limited_per_address_and_others_are_served() {
    let api = api();
    let reader = format!("Bearer {}", api.token("reader", Role::Reader, None));
    let attacker: SocketAddr = "203.0.113.9:4444".parse().unwrap();
    let mut limited = 0;
    for guess in 0..1000 {
        let header = format!("Bearer sluice_{guess:064}");
        let mut call = Call::new(Method::GET, "/v1/collections/doctor/docs");
        call.authorization = Some(&header);
        call.client = attacker;
        let answer = api.send(call).await;
        match answer.status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert_eq!(answer.error_code(), "too_many_auth_failures");
                assert!(answer.headers.contains_key("retry-after"));
            }
            other => panic!("unexpected {other}: {}", answer.text),
        }
    }
    // The burst is 20: everything after it (at 1 refill per second) is refused.
    assert!(
        limited >= 1000 - 20 - 5,
        "only {limited} of 1000 were limited"
    );
    // The attacker's right token is refused too while it is limited ...
    let mut call = Call::new(Method::GET, "/v1/collections/doctor/docs").bearer(&reader);
    call.client = attacker;
    assert_eq!(api.send(call).await.status, StatusCode::TOO_MANY_REQUESTS);
    // ... while another client is served at once.
    let started = std::time::Instant::now();
    let answer = api
        .send(Call::new(Method::GET, "/v1/collections/doctor/docs").bearer(&reader))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    let metrics = api
        .send(Call::new(Method::GET, "/metrics").bearer(&reader))
        .await;
    assert!(
        metrics
            .text
            .contains("sluice_auth_failures_total{reason=\"rate_limited\"}"),
        "{}",
        metrics.text
    );
    assert!(metrics.text.contains("sluice_http_requests_total{method=\"GET\",route=\"/v1/collections/{name}/docs\",status=\"200\"}"));
    // Answered requests have left the in-flight gauge; only the metrics request is in it.
    assert!(metrics.text.contains(
        "sluice_http_requests_in_flight{method=\"GET\",route=\"/v1/collections/{name}/docs\"} 0\n"
    ));
    assert!(
        metrics
            .text
            .contains("sluice_http_requests_in_flight{method=\"GET\",route=\"/metrics\"} 1\n")
    );
}

#[tokio::test]
async fn bad_credentials_get_401_never_5xx() {
    let api = api();
    api.token("someone", Role::Reader, None);
    let huge = format!("Bearer {}", "a".repeat(16 * 1024));
    let cases = [
        "",
        "Bearer",
        "Bearer ",
        "bearer   ",
        "Token abc",
        "Bearer a b c",
        "Bearer sluice_!!!",
        "Bearer sluice_\tabc",
        "Bearer <script>",
        huge.as_str(),
    ];
    for header in cases {
        let mut request = Request::builder().uri("/v1/collections/doctor/docs");
        request = request.header("authorization", header);
        let mut request = request.body(Body::empty()).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 9, 9, 9], 1))));
        let response = api.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            body["error"]["code"]
                .as_str()
                .unwrap()
                .starts_with("invalid_")
                || body["error"]["code"] == "missing_token",
            "{header:?}: {body}"
        );
        // No secret ever comes back.
        assert!(!String::from_utf8_lossy(&bytes).contains("aaaaaaaa"));
    }
    // Non-UTF-8 header bytes.
    let mut request = Request::builder()
        .uri("/v1/collections/doctor/docs")
        .header(
            "authorization",
            axum::http::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([10, 9, 9, 8], 1))));
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // A cookie without a session.
    let mut call = Call::new(Method::GET, "/v1/collections/doctor/docs");
    call.cookie = Some("sluice_session=nonsense; other=1");
    let answer = api.send(call).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_session")
    );
}

#[tokio::test]
async fn browser_sessions_follow_their_token() {
    let api = api();
    let secret = api.token("viewer", Role::Reader, None);
    // Another token keeps auth on once `viewer` is revoked.
    api.token("keeper", Role::Admin, None);
    let page = api.send(Call::new(Method::GET, "/login")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("<form"));
    let wrong = api
        .send(Call::new(Method::POST, "/v1/login").body(r#"{"token": "sluice_wrong"}"#))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let login = api
        .send(Call::new(Method::POST, "/v1/login").body(format!(r#"{{"token": "{secret}"}}"#)))
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let set_cookie = login
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("Secure"), "no TLS here: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let mut call = Call::new(Method::GET, "/v1/collections/doctor/docs");
    call.cookie = Some(&cookie);
    assert_eq!(api.send(call).await.status, StatusCode::OK);
    // Streams take the cookie too.
    let mut call = Call::new(Method::GET, "/v1/changes/stream");
    call.cookie = Some(&cookie);
    assert_eq!(api.send(call).await.status, StatusCode::OK);
    // Only GETs: a cookie cannot write.
    let mut call = Call::new(Method::POST, "/v1/collections/doctor/events")
        .body(r#"{"doctor_id": 1, "updated_at": 1}"#);
    call.cookie = Some(&cookie);
    assert_eq!(api.send(call).await.status, StatusCode::UNAUTHORIZED);
    // Revoking the token ends the session.
    api.engine.revoke_token("viewer").unwrap();
    let mut call = Call::new(Method::GET, "/v1/collections/doctor/docs");
    call.cookie = Some(&cookie);
    let answer = api.send(call).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_session")
    );
}

/// Every route in the source is in the spec: each `#[utoipa::path]` is an operation of
/// the spec, and the only plain `.route(` is the composite-key alias of a spec route.
#[test]
fn the_spec_has_every_route_of_the_source() {
    let spec = sluice_server::openapi_spec();
    let operations: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
    let mut annotated = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        annotated += text.matches("#[utoipa::path(").count();
        for (index, _) in text.match_indices(".route(") {
            let rest = &text[index..];
            assert!(
                rest.contains("COMPOSITE_KEY_SUFFIX")
                    && rest.find("COMPOSITE_KEY_SUFFIX").unwrap() < 200,
                "{}: a route registered without its spec entry; use routes!(...)",
                path.display()
            );
        }
        assert!(!text.contains("axum::routing::post("), "{}", path.display());
    }
    assert_eq!(
        annotated, operations,
        "annotated handlers vs spec operations"
    );
    // Every operation names its role, and every error code is in the description.
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(operation["security"].is_array(), "{method} {path}");
            assert!(
                operation["responses"]["default"].is_object(),
                "{method} {path}"
            );
        }
    }
    let description = spec["info"]["description"].as_str().unwrap();
    for kind in sluice_server::ErrorKind::ALL {
        assert!(description.contains(kind.code_and_status().0));
    }
    assert_eq!(spec["openapi"], "3.1.0");
}
