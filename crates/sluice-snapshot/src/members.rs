//! The declared columns' members of a document, read without building the document: a
//! visitor that keeps only the top-level members a collection declares as columns and
//! skips every other value unparsed (parsing a whole document into a map per change was
//! the archiver's largest cost for collections with columns).

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use sluice_core::config::ColumnType;
use std::fmt;

/// Seed for the values of `columns` (name, type) in a document: one entry per column,
/// `None` when the document does not have it. A later duplicate member wins, as it does
/// when the document is parsed into a map.
pub struct DeclaredMembers<'a>(pub &'a [(String, ColumnType)]);

impl<'de> DeserializeSeed<'de> for DeclaredMembers<'_> {
    type Value = Vec<Option<Value>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DeclaredMembers<'_> {
    type Value = Vec<Option<Value>>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values = vec![None; self.0.len()];
        while let Some(position) = map.next_key_seed(MemberName(self.0))? {
            match position {
                Some(index) => values[index] = Some(map.next_value::<Value>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(values)
    }
}

/// A member name, as its position among the declared columns (no copy of the name).
struct MemberName<'a>(&'a [(String, ColumnType)]);

impl<'de> DeserializeSeed<'de> for MemberName<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for MemberName<'_> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|(declared, _)| declared == name))
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn members(doc: &str) -> Vec<Option<Value>> {
        let columns = [
            ("specialty".to_owned(), ColumnType::String),
            ("rating".to_owned(), ColumnType::Double),
        ];
        let mut deserializer = serde_json::Deserializer::from_str(doc);
        DeclaredMembers(&columns)
            .deserialize(&mut deserializer)
            .unwrap()
    }

    #[test]
    fn keeps_declared_members_and_skips_the_rest() {
        let found = members(
            r#"{"name":"A","nested":{"specialty":"no"},"rating":4.5,"list":[1,{"x":"y"}],"specialty":"cardio\u00e9"}"#,
        );
        assert_eq!(
            found,
            vec![Some(Value::from("cardioé")), Some(Value::from(4.5))]
        );
        assert_eq!(members(r#"{"name":"A"}"#), vec![None, None]);
        assert_eq!(
            members(r#"{"rating":1,"rating":2}"#),
            vec![None, Some(Value::from(2))]
        );
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        let columns = [("a".to_owned(), ColumnType::Long)];
        for doc in ["[1]", "17", r#"{"a":"#] {
            let mut deserializer = serde_json::Deserializer::from_str(doc);
            assert!(
                DeclaredMembers(&columns)
                    .deserialize(&mut deserializer)
                    .is_err(),
                "{doc}"
            );
        }
    }
}
