use super::*;
use crate::version::Version;
use proptest::prelude::*;
use serde_json::json;

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(members) => members,
        other => panic!("not an object: {other}"),
    }
}

fn field() -> DocState {
    DocState::new(Ordering::Field)
}

fn document() -> DocState {
    DocState::new(Ordering::Document)
}

fn apply(state: &mut DocState, version: i64, patch: Value) -> Outcome {
    state
        .apply(Some(Version::Int(version)), &obj(patch))
        .unwrap()
        .outcome
}

fn doc(state: &DocState) -> Value {
    let built = state.doc().map_or(Value::Null, Value::Object);
    let written: Value = state
        .doc_json()
        .map_or(Value::Null, |json| serde_json::from_slice(&json).unwrap());
    assert_eq!(built, written);
    built
}

#[test]
fn field_mode_late_event_applies_its_newest_paths() {
    let mut state = field();
    assert_eq!(
        apply(&mut state, 2, json!({"id": 1, "city": "Oslo"})),
        Outcome::Applied
    );
    assert_eq!(
        apply(
            &mut state,
            1,
            json!({"id": 1, "city": "Rome", "name": "Ana"})
        ),
        Outcome::Applied
    );
    assert_eq!(doc(&state), json!({"id": 1, "city": "Oslo", "name": "Ana"}));
    assert_eq!(
        apply(&mut state, 1, json!({"id": 1, "city": "Rome"})),
        Outcome::Stale
    );
    assert_eq!(
        apply(&mut state, 3, json!({"id": 1, "city": "Oslo"})),
        Outcome::Noop
    );
    assert_eq!(state.version(), Some(Version::Int(3)));
}

#[test]
fn field_mode_object_replaced_then_written_again() {
    // In version order: {"a":{"b":1}} then {"a":5} then {"a":{"c":2}} gives {"a":{"c":2}}.
    let events = [
        (1, json!({"a": {"b": 1}})),
        (2, json!({"a": 5})),
        (3, json!({"a": {"c": 2}})),
    ];
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
        let mut state = field();
        for index in order {
            let (version, patch) = &events[index];
            apply(&mut state, *version, patch.clone());
        }
        assert_eq!(doc(&state), json!({"a": {"c": 2}}), "order {order:?}");
    }
}

#[test]
fn field_mode_delete_removes_what_was_written_at_or_before() {
    let mut state = field();
    apply(&mut state, 1, json!({"id": 1, "a": 1}));
    apply(&mut state, 3, json!({"id": 1, "b": 3}));
    let deleted = state.delete(Some(Version::Int(2))).unwrap();
    assert_eq!(deleted.outcome, Outcome::Applied);
    assert_eq!(doc(&state), json!({"id": 1, "b": 3}));
    assert_eq!(
        apply(&mut state, 2, json!({"id": 1, "a": 2})),
        Outcome::Stale
    );
    assert_eq!(state.delete(None).unwrap().outcome, Outcome::Applied);
    assert_eq!(state.doc(), None);
    assert_eq!(
        apply(&mut state, 3, json!({"id": 1, "c": 1})),
        Outcome::Stale
    );
    assert_eq!(
        apply(&mut state, 4, json!({"id": 1, "c": 1})),
        Outcome::Applied
    );
    assert_eq!(doc(&state), json!({"id": 1, "c": 1}));
}

#[test]
fn document_mode_drops_stale_and_keeps_tombstones() {
    let mut state = document();
    assert_eq!(
        apply(&mut state, 2, json!({"id": 1, "a": 1})),
        Outcome::Applied
    );
    assert_eq!(
        apply(&mut state, 2, json!({"id": 1, "a": 2})),
        Outcome::Stale
    );
    assert_eq!(
        apply(&mut state, 1, json!({"id": 1, "b": 2})),
        Outcome::Stale
    );
    assert_eq!(
        apply(&mut state, 3, json!({"id": 1, "a": 1})),
        Outcome::Noop
    );
    assert_eq!(
        state.delete(Some(Version::Int(2))).unwrap().outcome,
        Outcome::Stale
    );
    assert_eq!(
        state.delete(Some(Version::Int(5))).unwrap().outcome,
        Outcome::Applied
    );
    assert_eq!(
        apply(&mut state, 4, json!({"id": 1, "a": 1})),
        Outcome::Stale
    );
    assert_eq!(apply(&mut state, 6, json!({"id": 1})), Outcome::Applied);
    assert_eq!(doc(&state), json!({"id": 1}));
}

#[test]
fn arrival_order_without_versions() {
    for mut state in [field(), document()] {
        state.apply(None, &obj(json!({"id": 1, "a": 1}))).unwrap();
        state.apply(None, &obj(json!({"id": 1, "a": 2}))).unwrap();
        assert_eq!(doc(&state), json!({"id": 1, "a": 2}));
        assert_eq!(state.delete(None).unwrap().outcome, Outcome::Applied);
        assert_eq!(
            state
                .apply(None, &obj(json!({"id": 1, "b": 1})))
                .unwrap()
                .outcome,
            Outcome::Applied
        );
        assert_eq!(doc(&state), json!({"id": 1, "b": 1}));
        assert_eq!(state.version(), Some(Version::Int(3)));
    }
}

#[test]
fn mixed_version_kinds_are_refused() {
    for mut state in [field(), document()] {
        apply(&mut state, 1, json!({"id": 1}));
        let error = state
            .apply(Some(Version::Time(5)), &obj(json!({"id": 1})))
            .unwrap_err();
        assert!(error.to_string().contains("mixed version types"), "{error}");
    }
}

#[test]
fn delete_of_unknown_key_is_a_noop() {
    for mut state in [field(), document()] {
        assert_eq!(state.delete(None).unwrap().outcome, Outcome::Noop);
    }
}

// ---- properties -------------------------------------------------------------------

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (0..3i64).prop_map(Value::from),
        prop_oneof![Just("x"), Just("y")].prop_map(Value::from),
        Just(json!([1])),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop::collection::btree_map(prop_oneof![Just("a"), Just("b"), Just("c")], inner, 0..3)
            .prop_map(|members| {
                Value::Object(
                    members
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                )
            })
    })
}

fn patch() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(
        prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")],
        value(),
        1..4,
    )
    .prop_map(|members| {
        members
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    })
}

#[derive(Clone, Debug)]
enum Op {
    Patch(i64, Map<String, Value>),
    Delete(i64),
}

fn op(versions: i64) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..versions, patch()).prop_map(|(v, p)| Op::Patch(v, p)),
        1 => (0..versions).prop_map(Op::Delete),
    ]
}

fn run(ordering: Ordering, ops: &[Op]) -> (DocState, Vec<Outcome>) {
    let mut state = DocState::new(ordering);
    let outcomes = ops
        .iter()
        .map(|op| match op {
            Op::Patch(v, p) => state.apply(Some(Version::Int(*v)), p).unwrap().outcome,
            Op::Delete(v) => state.delete(Some(Version::Int(*v))).unwrap().outcome,
        })
        .collect();
    (state, outcomes)
}

fn stamp_of(op: &Op) -> Stamp {
    match op {
        Op::Patch(v, p) => Stamp {
            version: Version::Int(*v),
            tie: Stamp::event_tie(hash_object(p)),
        },
        Op::Delete(v) => Stamp {
            version: Version::Int(*v),
            tie: Stamp::DELETE_TIE,
        },
    }
}

/// The reference model: RFC 7386 applied in stamp order, a delete being a `null` patch
/// of the whole document.
fn reference(ops: &[Op]) -> Value {
    let mut sorted = ops.to_vec();
    sorted.sort_by_key(stamp_of);
    let mut doc = Value::Null;
    for op in &sorted {
        match op {
            Op::Patch(_, p) => patch::merge_patch(&mut doc, &Value::Object(p.clone())),
            Op::Delete(_) => doc = Value::Null,
        }
    }
    doc
}

/// A permutation of the ops with some of them delivered more than once.
fn deliveries(versions: i64) -> impl Strategy<Value = (Vec<Op>, Vec<Op>)> {
    prop::collection::vec(op(versions), 1..12)
        .prop_flat_map(|ops| {
            let count = ops.len();
            (
                Just(ops),
                prop::collection::vec(0..count, 0..6),
                any::<u64>(),
            )
        })
        .prop_map(|(ops, duplicates, seed)| {
            let mut delivered = ops.clone();
            delivered.extend(duplicates.into_iter().map(|index| ops[index].clone()));
            shuffle(&mut delivered, seed);
            (ops, delivered)
        })
}

fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for index in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(index, (seed % (index as u64 + 1)) as usize);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Field mode: any arrival order and any duplication give the identical document,
    /// equal to RFC 7386 applied in version order (ties by content hash).
    #[test]
    fn field_mode_converges((ops, delivered) in deliveries(4)) {
        let (in_order, _) = run(Ordering::Field, &ops);
        let (shuffled, _) = run(Ordering::Field, &delivered);
        prop_assert_eq!(doc(&shuffled), doc(&in_order));
        prop_assert_eq!(&shuffled, &in_order);
        prop_assert_eq!(doc(&shuffled), reference(&ops));
    }

    /// With distinct versions, field mode equals RFC 7386 in version order.
    #[test]
    fn field_mode_equals_merge_patch_in_version_order((ops, delivered) in deliveries(1000)) {
        let mut seen = std::collections::HashSet::new();
        let distinct: Vec<Op> = ops.into_iter().filter(|op| match op {
            Op::Patch(v, _) | Op::Delete(v) => seen.insert(*v),
        }).collect();
        let mut by_version = distinct.clone();
        by_version.sort_by_key(|op| match op { Op::Patch(v, _) | Op::Delete(v) => *v });
        let mut expected = Value::Null;
        for op in &by_version {
            match op {
                Op::Patch(_, p) => patch::merge_patch(&mut expected, &Value::Object(p.clone())),
                Op::Delete(_) => expected = Value::Null,
            }
        }
        let kept: Vec<Op> = delivered.into_iter().filter(|op| {
            distinct.iter().any(|d| stamp_of(d) == stamp_of(op))
        }).collect();
        let (state, _) = run(Ordering::Field, &kept);
        prop_assert_eq!(doc(&state), expected);
    }

    /// Document mode drops exactly the events that are not newer than the document.
    #[test]
    fn document_mode_drops_exactly_stale((_, delivered) in deliveries(6)) {
        let (state, outcomes) = run(Ordering::Document, &delivered);
        let mut newest: Option<i64> = None;
        let mut expected_doc = Value::Null;
        for (op, outcome) in delivered.iter().zip(&outcomes) {
            match op {
                Op::Patch(v, p) => {
                    let stale = newest.is_some_and(|n| *v <= n);
                    prop_assert_eq!(*outcome == Outcome::Stale, stale, "{:?}", op);
                    if !stale {
                        newest = Some(*v);
                        let Value::Object(mut members) = expected_doc.take() else {
                            expected_doc = Value::Object(Map::new());
                            patch::merge_members(expected_doc.as_object_mut().unwrap(), p);
                            continue;
                        };
                        patch::merge_members(&mut members, p);
                        expected_doc = Value::Object(members);
                    }
                }
                Op::Delete(v) => {
                    let stale = newest.is_some_and(|n| *v < n);
                    prop_assert_eq!(*outcome == Outcome::Stale, stale, "{:?}", op);
                    if !stale {
                        newest = Some(*v);
                        expected_doc = Value::Null;
                    }
                }
            }
        }
        prop_assert_eq!(doc(&state), expected_doc);
    }

    /// Applying the same event again changes nothing, in both modes.
    #[test]
    fn idempotent((ops, _) in deliveries(5)) {
        for ordering in [Ordering::Field, Ordering::Document] {
            let (mut state, _) = run(ordering, &ops);
            let before = state.clone();
            for op in &ops {
                let applied = match op {
                    Op::Patch(v, p) => state.apply(Some(Version::Int(*v)), p).unwrap(),
                    Op::Delete(v) => state.delete(Some(Version::Int(*v))).unwrap(),
                };
                if ordering == Ordering::Field {
                    prop_assert_ne!(applied.outcome, Outcome::Applied, "{:?}", op);
                }
            }
            if ordering == Ordering::Field {
                prop_assert_eq!(&state, &before);
            }
        }
    }

    /// Changed paths are empty exactly for noops, and equal a full diff of the documents.
    #[test]
    fn noop_means_no_visible_change((_, delivered) in deliveries(4)) {
        let mut state = field();
        for op in &delivered {
            let before = doc(&state);
            let applied = match op {
                Op::Patch(v, p) => state.apply(Some(Version::Int(*v)), p).unwrap(),
                Op::Delete(v) => state.delete(Some(Version::Int(*v))).unwrap(),
            };
            prop_assert_eq!(applied.outcome == Outcome::Applied, before != doc(&state));
            prop_assert_eq!(applied.changed.is_empty(), applied.outcome != Outcome::Applied);
            // The incremental changed paths equal a full diff of the two documents.
            let after = doc(&state);
            let expected = crate::diff::changed_paths(before.as_object(), after.as_object());
            prop_assert_eq!(&applied.changed, &expected);
        }
    }
}
