//! Which paths changed between two versions of a document, as JSON pointers.

use crate::pointer::push_escaped;
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// The pointers of the smallest subtrees that differ. `""` means the whole document
/// (it was created or deleted).
pub fn changed_paths(
    old: Option<&Map<String, Value>>,
    new: Option<&Map<String, Value>>,
) -> Vec<String> {
    let mut out = Vec::new();
    match (old, new) {
        (Some(old), Some(new)) => walk_members(&mut String::new(), old, new, &mut out),
        (None, None) => {}
        _ => out.push(String::new()),
    }
    out
}

fn walk_members(
    path: &mut String,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    out: &mut Vec<String>,
) {
    // Both maps iterate in key order: merge them like sorted lists.
    let mut old_iter = old.iter().peekable();
    let mut new_iter = new.iter().peekable();
    loop {
        let (name, old_value, new_value) = match (old_iter.peek(), new_iter.peek()) {
            (None, None) => return,
            (Some((name, value)), None) => (*name, Some(*value), None),
            (None, Some((name, value))) => (*name, None, Some(*value)),
            (Some((old_name, old_value)), Some((new_name, new_value))) => {
                match old_name.cmp(new_name) {
                    Ordering::Less => (*old_name, Some(*old_value), None),
                    Ordering::Greater => (*new_name, None, Some(*new_value)),
                    Ordering::Equal => (*old_name, Some(*old_value), Some(*new_value)),
                }
            }
        };
        if old_value.is_some() {
            old_iter.next();
        }
        if new_value.is_some() {
            new_iter.next();
        }
        if old_value == new_value {
            continue;
        }
        walk_member(path, name, old_value, new_value, out);
    }
}

/// Appends the changed paths under member `name` of the object at `path`.
pub fn walk_member(
    path: &mut String,
    name: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<String>,
) {
    if old == new {
        return;
    }
    let length = path.len();
    path.push('/');
    push_escaped(path, name);
    match (old, new) {
        (Some(Value::Object(old)), Some(Value::Object(new))) => walk_members(path, old, new, out),
        _ => out.push(path.clone()),
    }
    path.truncate(length);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(old: Value, new: Value, expected: &[&str]) {
        let paths = changed_paths(old.as_object(), new.as_object());
        assert_eq!(paths, expected, "{old} -> {new}");
    }

    #[test]
    fn reports_smallest_changed_subtrees() {
        check(json!({"a": 1}), json!({"a": 1}), &[]);
        check(
            json!({"a": 1, "b": 2}),
            json!({"a": 1, "b": 3, "c": 4}),
            &["/b", "/c"],
        );
        check(
            json!({"a": {"x": 1, "y": 2}}),
            json!({"a": {"x": 1, "y": 3}}),
            &["/a/y"],
        );
        check(json!({"a": {"x": 1}}), json!({"a": 5}), &["/a"]);
        check(json!({"a/b": 1}), json!({}), &["/a~1b"]);
        check(json!(null), json!({"a": 1}), &[""]);
        check(json!({"a": 1}), json!(null), &[""]);
    }
}
