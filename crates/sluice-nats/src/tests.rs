//! Unit tests: what a message becomes, and the connector's small rules.

use crate::{inbound_input, redact_url};
use sluice_core::event::{CollectionSpec, Limits};
use sluice_core::{Config, Pointer};
use sluice_engine::Input;

const LIMITS: Limits = Limits {
    event_bytes_max: 128,
    event_depth_max: 8,
};

fn spec(version: Option<&str>) -> CollectionSpec {
    CollectionSpec {
        name: "doctor".into(),
        key: vec![Pointer::parse("/id").unwrap()],
        key_types: Vec::new(),
        version: version.map(|text| Pointer::parse(text).unwrap()),
        ordering: sluice_core::Ordering::Field,
    }
}

fn input(payload: &[u8]) -> Input {
    inbound_input(&spec(None), LIMITS, "EVENTS", "events.doctor", 42, payload)
}

fn rejection(payload: &[u8]) -> (String, String, String) {
    match input(payload) {
        Input::Reject(rejection) => (rejection.reason, rejection.origin, rejection.text),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn messages_become_events_with_an_id() {
    let Input::Event(event) = input(br#"{"id": 1, "name": "Ana"}"#) else {
        panic!("a bare document is an event")
    };
    assert_eq!(event.id.as_deref(), Some("nats:EVENTS:42"));
    let ce = br#"{"specversion":"1.0","id":"c-9","source":"/s","type":"t","data":{"id":1}}"#;
    let Input::Event(event) = input(ce) else {
        panic!("a CloudEvent is an event")
    };
    assert_eq!(event.id.as_deref(), Some("c-9"), "the CloudEvents id wins");
}

#[test]
fn poison_messages_are_rejections_that_name_subject_and_sequence() {
    let (reason, origin, text) = rejection(b"not json");
    assert!(reason.contains("malformed JSON"), "{reason}");
    assert_eq!(
        origin,
        "nats stream EVENTS subject events.doctor sequence 42"
    );
    assert_eq!(text, "not json");
    let (reason, ..) = rejection(br#"{"name": "no key"}"#);
    assert!(reason.contains("key field /id is missing"), "{reason}");
    let (reason, ..) = rejection(&[b'x'; 200]);
    assert!(reason.contains("over the limit of 128 bytes"), "{reason}");
    let (reason, _, text) = rejection(b"\xff\xfe{");
    assert!(reason.contains("malformed JSON"), "{reason}");
    assert_eq!(text, "\u{fffd}\u{fffd}{");
    let (reason, ..) = rejection(b"[1]");
    assert!(reason.contains("must be a JSON object"), "{reason}");
}

#[test]
fn urls_lose_their_credentials() {
    assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    assert_eq!(
        redact_url("nats://ana:s3cret@host:4222"),
        "nats://***@host:4222"
    );
    assert_eq!(
        redact_url("tls://tok@a:1,nats://b:2"),
        "tls://***@a:1,nats://b:2"
    );
    assert_eq!(redact_url("user:pw@host"), "***@host");
}

#[test]
fn the_example_config_parses_with_nats() {
    let config = Config::from_toml(
        "[[collections]]\nname = \"doctor\"\nkey = [\"/id\"]\n[nats]\nurl = \"nats://127.0.0.1:4222\"\n[nats.outbound]\n",
    )
    .unwrap();
    assert!(config.nats.is_some());
}
