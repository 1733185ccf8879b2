//! Every endpoint, in process (the router is called directly; the network path is covered
//! by the CLI's crash test, which runs the real binary).

// Helpers outside `#[test]` functions may unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sluice_core::Config;
use support::{Answer, Api};
use tower::ServiceExt;

const CONFIG: &str = r#"
[limits]
request_bytes_max = 4096
event_bytes_max = 1024
event_depth_max = 16
[engine]
partitions = 3
[[collections]]
name = "doctor"
key = ["/doctor_id"]
version = "/updated_at"
[[collections]]
name = "availability"
key = ["/location", "/slot"]
ordering = "document"
"#;

fn api() -> Api {
    api_with(|_| {})
}

/// An API over the test config, changed by `configure`.
fn api_with(configure: impl FnOnce(&mut Config)) -> Api {
    support::api_with(CONFIG, configure)
}

/// A request body that sends `{` and then never finishes (while the sender lives).
async fn unfinished_body() -> (http_body_util::channel::Sender<axum::body::Bytes>, Body) {
    let (mut sender, body) = http_body_util::channel::Channel::<axum::body::Bytes>::new(1);
    sender
        .send_data(axum::body::Bytes::from_static(b"{"))
        .await
        .unwrap();
    (sender, Body::new(body))
}

const EVENTS: &str = "/v1/collections/doctor/events";

#[tokio::test]
async fn ingest_object_array_and_ndjson() {
    let api = api();
    let answer = api
        .post(
            EVENTS,
            r#"{"doctor_id": 17, "updated_at": 1, "name": "Ana", "location": "Chicago Hope"}"#,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        answer.json(),
        json!({"applied": 1, "noop": 0, "stale": 0, "rejected": 0, "results": [{"status": "applied", "key": 17}]})
    );

    let answer = api
        .post(EVENTS, r#"[{"doctor_id": 17, "updated_at": 3, "location": "Mercy"}, {"name": "no key"}, {"doctor_id": 17, "updated_at": 2, "location": "General"}, {"doctor_id": 17, "updated_at": 3, "location": "Mercy"}]"#)
        .await;
    let body = answer.json();
    assert_eq!(
        (
            body["applied"].clone(),
            body["rejected"].clone(),
            body["stale"].clone(),
            body["noop"].clone()
        ),
        (json!(1), json!(1), json!(1), json!(1))
    );
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["applied", "rejected", "stale", "noop"]);
    assert!(
        body["results"][1]["error"]
            .as_str()
            .unwrap()
            .contains("key field /doctor_id is missing")
    );

    let answer = api
        .ndjson(
            EVENTS,
            "{\"doctor_id\": 18, \"updated_at\": 1}\n\n{\"doctor_id\": 19, \"updated_at\": 1}\n",
        )
        .await;
    assert_eq!(answer.json()["applied"], json!(2));

    let doc = api.get("/v1/collections/doctor/docs/17").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(
        doc.json(),
        json!({"key": 17, "version": 3, "doc": {"doctor_id": 17, "updated_at": 3, "name": "Ana", "location": "Mercy"}})
    );
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let api = api();
    let check = |answer: Answer, status: StatusCode, code: &str, needle: &str| {
        assert_eq!(answer.status, status, "{}", answer.text);
        assert_eq!(answer.error_code(), code, "{}", answer.text);
        assert!(
            answer.error_message().contains(needle),
            "{:?} lacks {needle:?}",
            answer.error_message()
        );
    };
    check(
        api.post(EVENTS, "{\"doctor_id\": 1,\n \"x\": }").await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "line 2, column 7",
    );
    check(
        api.ndjson(EVENTS, "{\"doctor_id\": 1, \"updated_at\": 1}\n{oops}\n")
            .await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "NDJSON line 2",
    );
    check(
        api.post("/v1/collections/nurse/events", "{}").await,
        StatusCode::NOT_FOUND,
        "unknown_collection",
        "nurse",
    );
    check(
        api.post(EVENTS, &format!("[{}]", "1,".repeat(3000) + "1"))
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "4096 bytes",
    );
    check(
        api.post(EVENTS, "").await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
        "empty",
    );
    // serde_json's own recursion limit answers long before any stack is at risk.
    let nested = format!(
        "{{\"doctor_id\": 1, \"a\": {}{}}}",
        "[".repeat(400),
        "]".repeat(400)
    );
    check(
        api.post(EVENTS, &nested).await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "recursion limit",
    );
    check(
        api.ndjson(EVENTS, &nested).await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "recursion limit",
    );
    let answer = api
        .post(EVENTS, &("[".repeat(2000) + &"]".repeat(2000)))
        .await;
    assert!(
        answer.json()["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("over the limit"),
        "{}",
        answer.text
    );

    // Inside a batch, bad events are rejected with a reason and the good one applies.
    let deep = format!(
        "{{\"doctor_id\": 5, \"updated_at\": 1, \"a\": {}1{}}}",
        "{\"b\":".repeat(20),
        "}".repeat(20)
    );
    let big = format!(
        "{{\"doctor_id\": 6, \"updated_at\": 1, \"bio\": \"{}\"}}",
        "x".repeat(1100)
    );
    let body = [
        r#"{"doctor_id": [1], "updated_at": 1}"#,
        r#"{"doctor_id": 2, "updated_at": 1.5}"#,
        r#"{"doctor_id": 3}"#,
        r#"{"doctor_id": 4, "updated_at": 1}"#,
        r#"{"doctor_id": 4, "updated_at": "2026-01-01T00:00:00Z"}"#,
        &deep,
        "7",
    ]
    .join("\n");
    let answer = api.ndjson(EVENTS, &body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let results = answer.json()["results"].as_array().unwrap().clone();
    let errors: Vec<String> = results
        .iter()
        .map(|r| r["error"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        errors[0].contains("must be a string or an integer, got an array"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("must be an integer or an RFC 3339 time"),
        "{errors:?}"
    );
    assert!(
        errors[2].contains("version at /updated_at is missing"),
        "{errors:?}"
    );
    assert_eq!(results[3]["status"], "applied");
    assert!(errors[4].contains("mixed version types"), "{errors:?}");
    assert!(errors[5].contains("deeper than 16"), "{errors:?}");
    assert!(errors[6].contains("must be a JSON object"), "{errors:?}");
    let answer = api.post(EVENTS, &big).await;
    assert!(
        answer.json()["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("over the limit of 1024 bytes")
    );

    // Every rejection is kept, with its reason and text.
    let rejected = api
        .get("/v1/collections/doctor/rejected?limit=100")
        .await
        .json();
    let rejected = rejected["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 8);
    assert!(
        rejected
            .iter()
            .any(|r| r["event"].as_str().unwrap().contains("[1]"))
    );
    let after = api
        .get("/v1/collections/doctor/rejected?after=5")
        .await
        .json();
    assert_eq!(after["rejected"].as_array().unwrap().len(), 3);
    let stats = api.get("/v1/collections/doctor/stats").await.json();
    assert_eq!(stats["rejected"], json!(8));
    assert_eq!(stats["applied"], json!(1));
}

#[tokio::test]
async fn documents_composite_keys_delete_and_list() {
    let api = api();
    let uri = "/v1/collections/availability/events";
    let body: String = (0..25)
        .map(|slot| format!("{{\"location\": \"chicago\", \"slot\": {slot}, \"open\": true}}\n"))
        .collect();
    assert_eq!(api.ndjson(uri, &body).await.json()["applied"], json!(25));
    let doc = api.get("/v1/collections/availability/docs/chicago/7").await;
    assert_eq!(doc.json()["key"], json!(["chicago", 7]));
    assert_eq!(doc.json()["version"], json!(1));
    let wrong = api.get("/v1/collections/availability/docs/chicago").await;
    assert_eq!(
        (wrong.status, wrong.error_code()),
        (StatusCode::BAD_REQUEST, "invalid_key".to_owned())
    );
    let missing = api.get("/v1/collections/availability/docs/boston/7").await;
    assert_eq!(
        (missing.status, missing.error_code()),
        (StatusCode::NOT_FOUND, "document_not_found".to_owned())
    );

    let deleted = api
        .delete("/v1/collections/availability/docs/chicago/7")
        .await;
    assert_eq!(deleted.json()["status"], "applied", "{}", deleted.text);
    assert_eq!(
        api.get("/v1/collections/availability/docs/chicago/7")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let again = api
        .delete("/v1/collections/availability/docs/chicago/7")
        .await;
    assert_eq!(again.json()["status"], "noop");
    let stale = api
        .delete("/v1/collections/availability/docs/chicago/8?version=0")
        .await;
    assert_eq!(stale.json()["status"], "stale");
    let bad = api
        .delete("/v1/collections/availability/docs/chicago/8?version=soon")
        .await;
    assert_eq!(
        (bad.status, bad.error_code()),
        (StatusCode::BAD_REQUEST, "invalid_parameter".to_owned())
    );

    let mut seen = 0;
    let mut after = String::new();
    loop {
        let page = api
            .get(&format!(
                "/v1/collections/availability/docs?limit=10{after}"
            ))
            .await
            .json();
        seen += page["docs"].as_array().unwrap().len();
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, 24);
    let bad = api.get("/v1/collections/availability/docs?after=xyz").await;
    assert_eq!(bad.error_code(), "invalid_cursor");
    let bad = api.get("/v1/collections/availability/docs?limit=ten").await;
    assert_eq!(bad.error_code(), "invalid_parameter");
}

#[tokio::test]
async fn change_log_pages_and_long_polls() {
    let api = api();
    api.ndjson(EVENTS, "{\"doctor_id\": 1, \"updated_at\": 1, \"a\": 1}\n{\"doctor_id\": 2, \"updated_at\": 1}\n{\"doctor_id\": 1, \"updated_at\": 2, \"a\": 2}\n").await;
    let first = api.get("/v1/changes?limit=2").await.json();
    assert_eq!(first["changes"].as_array().unwrap().len(), 2);
    let next = first["next"].as_str().unwrap().to_owned();
    let rest = api.get(&format!("/v1/changes?after={next}")).await.json();
    assert_eq!(rest["changes"].as_array().unwrap().len(), 1);
    let change = &rest["changes"][0];
    assert!(
        change["cursor"].is_string() && change["ts_ms"].is_u64(),
        "{change}"
    );
    let all = api.get("/v1/changes").await.json();
    let updates: Vec<&Value> = all["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["key"] == json!(1))
        .collect();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[1]["changed"], json!(["/a", "/updated_at"]));
    assert_eq!(updates[1]["op"], "upsert");
    assert_eq!(
        updates[1]["doc"],
        json!({"doctor_id": 1, "updated_at": 2, "a": 2})
    );

    let head = rest["next"].as_str().unwrap().to_owned();
    let waiter = {
        let router = api.router.clone();
        let uri = format!("/v1/changes?after={head}&wait_ms=30000");
        tokio::spawn(async move {
            let response = router
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        })
    };
    let deleted = api.delete("/v1/collections/doctor/docs/2").await;
    assert_eq!(deleted.json()["status"], "applied");
    let woke = waiter.await.unwrap();
    assert_eq!(woke["changes"][0]["op"], "delete");
    assert_eq!(woke["changes"][0]["doc"], Value::Null);

    let empty = api
        .get(&format!(
            "/v1/changes?after={}&wait_ms=10",
            woke["next"].as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(empty["changes"], json!([]));
    let now = api.get("/v1/changes?after=now").await.json();
    assert_eq!(now["changes"], json!([]));
    for bad in ["1.2", "a.b.c", "1.2.3.4"] {
        let answer = api.get(&format!("/v1/changes?after={bad}")).await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (StatusCode::BAD_REQUEST, "invalid_cursor".to_owned()),
            "{bad}"
        );
    }
    let only = api.get("/v1/changes?collection=availability").await.json();
    assert_eq!(only["changes"], json!([]));
    assert_eq!(
        only["next"], now["next"],
        "the cursor moves past other collections"
    );
    let answer = api.get("/v1/changes?wait=5").await;
    assert_eq!(answer.error_code(), "invalid_parameter");
}

#[tokio::test]
async fn operations_endpoints() {
    let api = api();
    api.post(EVENTS, r#"{"doctor_id": 1, "updated_at": 1}"#)
        .await;
    let health = api.get("/healthz").await;
    assert_eq!(
        (health.status, health.json()),
        (
            StatusCode::OK,
            json!({"status": "ok", "components": {}, "auth": "off (loopback and no tokens: create one with `sluice token create` to turn it on)"})
        )
    );
    // A connector that is down degrades the node and says why; it does not fail it.
    let connector = api.engine.component("nats-outbound");
    connector.set_down("NATS at nats://127.0.0.1:1 is unreachable: connection refused");
    connector.count("published", 3);
    let health = api.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "degraded");
    assert_eq!(health.json()["components"]["nats-outbound"]["up"], false);
    let metrics = api.get("/metrics").await.text;
    assert!(
        metrics.contains("sluice_component_up{component=\"nats-outbound\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "sluice_component_messages_total{component=\"nats-outbound\",outcome=\"published\"} 3"
        ),
        "{metrics}"
    );
    connector.set_up("publishing");
    assert_eq!(api.get("/healthz").await.json()["status"], "ok");
    let metrics = api.get("/metrics").await;
    assert!(
        metrics
            .text
            .contains("sluice_events_total{collection=\"doctor\",outcome=\"applied\"} 1"),
        "{}",
        metrics.text
    );
    assert!(
        metrics.text.contains("sluice_commit_seconds_count 1"),
        "{}",
        metrics.text
    );
    assert!(
        metrics.text.contains("sluice_batch_events_bucket"),
        "{}",
        metrics.text
    );
    let metrics = api.get("/metrics").await.text;
    for owner in [
        "store_write_buffers",
        "store_block_cache",
        "writer_doc_caches",
    ] {
        assert!(
            metrics.contains(&format!("sluice_memory_bytes{{owner=\"{owner}\"}}")),
            "{metrics}"
        );
    }
    let stats = api.get("/v1/collections/doctor/stats").await.json();
    assert_eq!(
        stats,
        json!({"collection": "doctor", "applied": 1, "noop": 0, "stale": 0, "rejected": 0, "documents": 1})
    );
    let missing = api.get("/v2/nothing").await;
    assert_eq!(
        (missing.status, missing.error_code()),
        (StatusCode::NOT_FOUND, "route_not_found".to_owned())
    );
    let method = api.call("PUT", "/healthz", None, Body::empty()).await;
    assert_eq!(
        (method.status, method.error_code()),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed".to_owned()
        )
    );
    assert!(api.engine.stats("doctor").is_ok());
}

#[tokio::test]
async fn overload_answers_503_with_retry_after() {
    let api = api_with(|config| config.limits.ingest_requests_max = 1);
    let router = api.router.clone();
    // Hold the only ingest permit with a request whose body never finishes.
    let (sender, body) = unfinished_body().await;
    let held = tokio::spawn(
        router
            .clone()
            .oneshot(Request::post(EVENTS).body(body).unwrap()),
    );
    // On this current-thread runtime, yielding lets the held request run until it waits
    // for the rest of its body, holding the permit.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!held.is_finished());
    let answer = router
        .clone()
        .oneshot(Request::post(EVENTS).body(Body::from("{}")).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers()["retry-after"], "1");
    drop(sender);
    held.abort();
}

/// Reads a server-sent-event body until `count` events arrived (or `heartbeats` comment
/// lines, when asked for); each event as (id, data).
async fn read_sse(body: Body, count: usize, heartbeats: usize) -> (Vec<(String, Value)>, usize) {
    let mut body = body;
    let mut text = String::new();
    let mut events = Vec::new();
    let mut comments = 0;
    while events.len() < count || comments < heartbeats {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("the stream went quiet")
            .expect("the stream ended")
            .unwrap();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        text.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut id, mut payload) = (String::new(), None);
            for line in block.lines() {
                if line.starts_with(':') {
                    comments += 1;
                } else if let Some(value) = line.strip_prefix("id: ") {
                    id = value.to_owned();
                } else if let Some(value) = line.strip_prefix("data: ") {
                    payload = Some(serde_json::from_str(value).unwrap());
                }
            }
            if let Some(payload) = payload {
                events.push((id, payload));
            }
        }
    }
    (events, comments)
}

#[tokio::test]
async fn change_stream_sends_events_and_resumes_after_last_event_id() {
    let api = api_with(|config| config.limits.stream_heartbeat_ms = 20);
    let router = api.router.clone();
    let open = |uri: String, last_event_id: Option<String>| {
        let router = router.clone();
        async move {
            let mut request = Request::get(uri);
            if let Some(id) = last_event_id {
                request = request.header("last-event-id", id);
            }
            router
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap()
        }
    };
    let post = |uri: &'static str, body: &'static str| {
        let router = router.clone();
        async move {
            let request = Request::post(uri).header("content-type", "application/x-ndjson");
            let response = router
                .oneshot(request.body(Body::from(body)).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    };
    // Opened before anything is written: it starts at the head and waits.
    let live = open("/v1/changes/stream?collection=doctor".into(), None).await;
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    post(
        "/v1/collections/availability/events",
        "{\"location\": \"x\", \"slot\": 1}\n",
    )
    .await;
    post(EVENTS, "{\"doctor_id\": 1, \"updated_at\": 1}\n{\"doctor_id\": 2, \"updated_at\": 1}\n{\"doctor_id\": 3, \"updated_at\": 1}\n").await;
    let (events, heartbeats) = read_sse(live.into_body(), 3, 1).await;
    assert!(heartbeats >= 1, "an idle stream sends heartbeats");
    assert!(
        events
            .iter()
            .all(|(id, data)| data["collection"] == "doctor" && data["cursor"] == id.as_str())
    );
    let mut keys: Vec<i64> = events
        .iter()
        .map(|(_, data)| data["key"].as_i64().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, [1, 2, 3]);

    // A client that saw the first event reconnects: it gets exactly the other two.
    let resumed = open(
        "/v1/changes/stream?collection=doctor&after=0.0.0".into(),
        Some(events[0].0.clone()),
    )
    .await;
    let (again, _) = read_sse(resumed.into_body(), 2, 0).await;
    assert_eq!(
        again.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        [events[1].0.clone(), events[2].0.clone()]
    );

    // From the beginning with `after`, other collections included.
    let replay = open("/v1/changes/stream?after=0.0.0".into(), None).await;
    let (all, _) = read_sse(replay.into_body(), 4, 0).await;
    assert!(
        all.iter()
            .any(|(_, data)| data["collection"] == "availability")
    );
    let bad = open("/v1/changes/stream?collection=nurse".into(), None).await;
    assert_eq!(bad.status(), StatusCode::NOT_FOUND);
    let bad = open("/v1/changes/stream".into(), Some("x.y".into())).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn subscriptions_deliver_until_acknowledged() {
    let api = api();
    let put = |body: &'static str| {
        api.call(
            "PUT",
            "/v1/subscriptions/moves",
            Some("application/json"),
            body,
        )
    };
    let created = put(r#"{"collection": "doctor", "changed_path": "/location"}"#).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    assert_eq!(created.json()["lag_records"], json!(0));
    api.ndjson(EVENTS, "{\"doctor_id\": 1, \"updated_at\": 1, \"location\": \"Mercy\"}\n{\"doctor_id\": 2, \"updated_at\": 1, \"name\": \"Ana\"}\n").await;
    let next = api.get("/v1/subscriptions/moves/next?max=10").await.json();
    assert_eq!(next["changes"].as_array().unwrap().len(), 1, "{next}");
    assert_eq!(next["changes"][0]["key"], json!(1));
    let again = api.get("/v1/subscriptions/moves/next").await.json();
    assert_eq!(again, next, "not acknowledged: delivered again");
    let body = format!("{{\"cursor\": \"{}\"}}", next["next"].as_str().unwrap());
    let acked = api
        .call(
            "POST",
            "/v1/subscriptions/moves/ack",
            Some("application/json"),
            body,
        )
        .await;
    assert_eq!(acked.json()["position"], next["next"], "{}", acked.text);
    let empty = api
        .get("/v1/subscriptions/moves/next?wait_ms=10")
        .await
        .json();
    assert_eq!(empty["changes"], json!([]));
    let listed = api.get("/v1/subscriptions").await.json();
    assert_eq!(listed["subscriptions"][0]["name"], "moves");
    let metrics = api.get("/metrics").await.text;
    assert!(
        metrics.contains("sluice_subscription_lag_records{subscription=\"moves\"} 0"),
        "{metrics}"
    );
    assert_eq!(listed["subscriptions"][0]["collection"], "doctor");

    let check = |answer: Answer, status: StatusCode, code: &str| {
        assert_eq!(
            (answer.status, answer.error_code()),
            (status, code.to_owned()),
            "{}",
            answer.text
        );
    };
    check(
        api.get("/v1/subscriptions/nope/next").await,
        StatusCode::NOT_FOUND,
        "unknown_subscription",
    );
    check(
        put(r#"{"collection": "nurse"}"#).await,
        StatusCode::NOT_FOUND,
        "unknown_collection",
    );
    check(
        put(r#"{"colection": "doctor"}"#).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    check(
        put(r#"{"start": "later"}"#).await,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
    );
    check(put("{").await, StatusCode::BAD_REQUEST, "malformed_json");
    check(
        api.call(
            "PUT",
            "/v1/subscriptions/a%20b",
            Some("application/json"),
            "{}",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
    );
    check(
        api.call(
            "POST",
            "/v1/subscriptions/moves/ack",
            None,
            r#"{"cursor": "9.9.9"}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
    );
    check(
        api.call(
            "POST",
            "/v1/subscriptions/moves/ack",
            None,
            r#"{"cursor": "x"}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    );
    assert_eq!(
        api.delete("/v1/subscriptions/moves").await.status,
        StatusCode::OK
    );
    check(
        api.delete("/v1/subscriptions/moves").await,
        StatusCode::NOT_FOUND,
        "unknown_subscription",
    );
}

#[tokio::test]
async fn expired_cursors_answer_410_with_how_to_resync() {
    let api = api_with(|config| {
        config.engine.changes_kept_min_age_s = 0;
        config.engine.changes_kept_min_records = 0;
    });
    api.ndjson(
        EVENTS,
        "{\"doctor_id\": 1, \"updated_at\": 1}\n{\"doctor_id\": 2, \"updated_at\": 1}\n",
    )
    .await;
    assert_eq!(api.engine.enforce_retention().unwrap(), 2);
    let answer = api.get("/v1/changes?after=0.0.0").await;
    assert_eq!(
        (answer.status, answer.error_code()),
        (StatusCode::GONE, "cursor_expired".to_owned())
    );
    assert!(answer.error_message().contains("resync"), "{}", answer.text);
    let oldest = api.get("/v1/changes").await.json();
    assert_eq!(
        oldest["changes"],
        json!([]),
        "without a cursor: from the oldest kept"
    );
}

#[tokio::test]
async fn slow_uploads_time_out() {
    let api = api_with(|config| config.limits.ingest_request_timeout_ms = 50);
    let (sender, body) = unfinished_body().await;
    let response = api
        .router
        .clone()
        .oneshot(Request::post(EVENTS).body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
    drop(sender);
}

#[test]
fn refuses_public_addresses_where_nobody_could_get_in() {
    let api = api();
    let check = |address: &str, insecure| {
        sluice_server::check_listen_address(&api.engine, address.parse().unwrap(), insecure)
    };
    assert!(check("127.0.0.1:7070", false).is_ok());
    assert!(check("[::1]:7070", false).is_ok());
    let error = check("0.0.0.0:7070", false).unwrap_err();
    assert!(
        error.contains("--insecure-no-auth") && error.contains("SLUICE_ADMIN_TOKEN"),
        "{error}"
    );
    assert!(check("0.0.0.0:7070", true).is_ok());
    // With a token, auth is on and the address is fine.
    api.engine.add_bootstrap_token(&"b".repeat(40)).unwrap();
    assert!(check("0.0.0.0:7070", false).is_ok());
}

#[tokio::test]
async fn cloudevents_are_accepted_like_partial_documents() {
    let api = api();
    let ce = |id: &str, data: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/emr","type":"doctor.updated","time":"2026-11-01T10:00:00Z","data":{data}}}"#
        )
    };
    let one = api
        .call(
            "POST",
            EVENTS,
            Some("application/cloudevents+json; charset=utf-8"),
            ce("e1", r#"{"doctor_id": 7, "updated_at": 3, "city": "Oslo"}"#),
        )
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    assert_eq!(one.json()["applied"], 1);
    let batch = format!(
        "[{}, {}, {}]",
        ce("e2", r#"{"doctor_id": 7, "updated_at": 4, "name": "Ana"}"#),
        ce("e3", "[1]"),
        r#"{"specversion":"1.0","source":"/emr","type":"t","data":{"doctor_id": 8, "updated_at": 1}}"#
    );
    let answer = api
        .call(
            "POST",
            EVENTS,
            Some("application/cloudevents-batch+json"),
            batch,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let answer = answer.json();
    assert_eq!(
        (answer["applied"].clone(), answer["rejected"].clone()),
        (json!(1), json!(2))
    );
    assert!(
        answer["results"][1]["error"]
            .as_str()
            .unwrap()
            .contains("CloudEvent: data must be a JSON object"),
        "{answer}"
    );
    assert!(
        answer["results"][2]["error"]
            .as_str()
            .unwrap()
            .contains("\"id\" is missing"),
        "{answer}"
    );
    let doc = api.get("/v1/collections/doctor/docs/7").await.json();
    assert_eq!(
        doc["doc"],
        json!({"doctor_id": 7, "updated_at": 4, "city": "Oslo", "name": "Ana"}),
        "only the data is stored"
    );
    let rejected = api.get("/v1/collections/doctor/rejected").await.json();
    assert_eq!(
        rejected["rejected"].as_array().map(Vec::len),
        Some(2),
        "{rejected}"
    );
}

/// The SQL and snapshot routes, with an `Analytics` that answers what it is told: the
/// HTTP mapping (codes, statuses, media types) is what is tested here; the real
/// implementation is tested in `sluice-snapshot`.
struct ScriptedAnalytics;

impl sluice_server::Analytics for ScriptedAnalytics {
    fn sql(
        &self,
        request: sluice_server::analytics::SqlRequest,
        _collections: Option<Vec<String>>,
    ) -> sluice_server::analytics::BoxFuture<
        Result<sluice_server::analytics::SqlAnswer, sluice_server::analytics::AnalyticsError>,
    > {
        use sluice_server::analytics::{AnalyticsError, AnalyticsErrorKind, SqlAnswer};
        Box::pin(async move {
            match request.sql.as_str() {
                "SELECT 1" => Ok(SqlAnswer {
                    content_type: "text/csv; charset=utf-8",
                    body: b"x\n1\n".to_vec(),
                }),
                "BIG" => Err(AnalyticsError {
                    kind: AnalyticsErrorKind::TooManyRows,
                    message: "more than 10 rows".into(),
                }),
                "S3 DOWN" => Err(AnalyticsError {
                    kind: AnalyticsErrorKind::ObjectStoreUnavailable,
                    message: "connection refused".into(),
                }),
                _ => Err(AnalyticsError {
                    kind: AnalyticsErrorKind::InvalidSql,
                    message: "SQL error: ParserError(\"Expected: an SQL statement\")".into(),
                }),
            }
        })
    }

    fn snapshot(
        &self,
        collection: String,
    ) -> sluice_server::analytics::BoxFuture<Result<Value, sluice_server::analytics::AnalyticsError>>
    {
        Box::pin(async move { Ok(json!({"collection": collection, "id": "0000000001"})) })
    }
}

#[tokio::test]
async fn sql_and_snapshot_routes_map_answers_and_errors() {
    let api = api();
    let missing = api.post("/v1/sql", r#"{"sql": "SELECT 1"}"#).await;
    assert_eq!(
        (missing.status, missing.error_code()),
        (StatusCode::NOT_FOUND, "snapshots_not_configured".into())
    );
    let api = Api {
        router: sluice_server::router_with(
            api.engine.clone(),
            sluice_server::Plugins {
                analytics: Some(std::sync::Arc::new(ScriptedAnalytics)),
                projections: None,
                search: None,
            },
            sluice_server::ServerOptions::default(),
        ),
        ..api
    };
    let answer = api
        .post("/v1/sql", r#"{"sql": "SELECT 1", "format": "csv"}"#)
        .await;
    assert_eq!(
        (answer.status, answer.text.as_str()),
        (StatusCode::OK, "x\n1\n")
    );
    for (sql, status, code) in [
        ("SELEC", StatusCode::BAD_REQUEST, "invalid_sql"),
        ("BIG", StatusCode::BAD_REQUEST, "too_many_rows"),
        (
            "S3 DOWN",
            StatusCode::SERVICE_UNAVAILABLE,
            "object_store_unavailable",
        ),
    ] {
        let answer = api.post("/v1/sql", &json!({"sql": sql}).to_string()).await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (status, code.into()),
            "{sql}"
        );
    }
    let unknown = api.post("/v1/sql", r#"{"query": "SELECT 1"}"#).await;
    assert_eq!(unknown.error_code(), "invalid_body");
    let snapshot = api.post("/v1/collections/doctor/snapshot", "").await;
    assert_eq!(snapshot.json()["id"], "0000000001");
    let nowhere = api.post("/v1/collections/nurse/snapshot", "").await;
    assert_eq!(nowhere.error_code(), "unknown_collection");
}
