//! JSON pointers (RFC 6901), the way config names key and version fields.

use serde_json::Value;
use std::fmt;

/// A parsed JSON pointer: `/doctor_id` is `["doctor_id"]`; the empty pointer is the root.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid JSON pointer {text:?}: {reason}")]
pub struct PointerError {
    pub text: String,
    pub reason: &'static str,
}

impl Pointer {
    pub fn parse(text: &str) -> Result<Self, PointerError> {
        let error = |reason| PointerError {
            text: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Ok(Self {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(error("a pointer starts with '/'"));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            tokens.push(unescape(raw).ok_or_else(|| error("'~' must be followed by 0 or 1"))?);
        }
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    /// Builds a pointer from unescaped tokens.
    pub fn from_tokens<I: IntoIterator<Item = S>, S: Into<String>>(tokens: I) -> Self {
        let tokens: Vec<String> = tokens.into_iter().map(Into::into).collect();
        let mut text = String::new();
        for token in &tokens {
            text.push('/');
            push_escaped(&mut text, token);
        }
        Self { text, tokens }
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this pointer inside an object (the root pointer has none: it would be
    /// the object itself).
    pub fn get_in<'a>(&self, members: &'a serde_json::Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.tokens.split_first()?;
        rest.iter().try_fold(members.get(first)?, step)
    }

    pub fn get<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.tokens.iter().try_fold(value, step)
    }
}

fn step<'a>(node: &'a Value, token: &String) -> Option<&'a Value> {
    match node {
        Value::Object(members) => members.get(token),
        Value::Array(items) => token
            .parse::<usize>()
            .ok()
            .and_then(|index| items.get(index)),
        _ => None,
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

/// Appends `token` to `out` with RFC 6901 escaping.
pub fn push_escaped(out: &mut String, token: &str) {
    for character in token.chars() {
        match character {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            other => out.push(other),
        }
    }
}

fn unescape(raw: &str) -> Option<String> {
    if !raw.contains('~') {
        return Some(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(character) = chars.next() {
        if character == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(character);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_and_get() {
        let doc = json!({"a": {"b/c": [10, 20]}, "m~n": 1});
        let check = |text: &str, expected: Option<Value>| {
            let pointer = Pointer::parse(text).unwrap();
            assert_eq!(pointer.get(&doc).cloned(), expected, "{text}");
            assert_eq!(
                Pointer::from_tokens(pointer.tokens().to_vec()).as_str(),
                text
            );
        };
        check("", Some(doc.clone()));
        check("/a/b~1c/1", Some(json!(20)));
        check("/m~0n", Some(json!(1)));
        check("/missing", None);
        assert!(Pointer::parse("a").is_err());
        assert!(Pointer::parse("/a~2").is_err());
    }
}
