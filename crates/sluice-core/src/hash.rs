//! Stable hashes. `std`'s `DefaultHasher` may change between Rust releases, and partition
//! routing and tie-breaks are persisted decisions, so they use FNV-1a, which never changes.

use serde_json::Value;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bit.
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(FNV_OFFSET)
    }
}

impl Fnv64 {
    pub fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut hasher = Fnv64::default();
    hasher.write(bytes);
    hasher.finish()
}

/// Hash of a JSON value that depends only on its content, never on its formatting:
/// object members are visited in key order (serde_json's `Map` is a `BTreeMap`).
pub fn hash_value(value: &Value) -> u64 {
    let mut hasher = Fnv64::default();
    hash_into(&mut hasher, value);
    hasher.finish()
}

/// [`hash_value`] of an object, without wrapping the map in a `Value`.
pub fn hash_members(members: &serde_json::Map<String, Value>) -> u64 {
    let mut hasher = Fnv64::default();
    hash_object_into(&mut hasher, members);
    hasher.finish()
}

fn hash_object_into(hasher: &mut Fnv64, members: &serde_json::Map<String, Value>) {
    hasher.write(b"{");
    hasher.write(&(members.len() as u64).to_le_bytes());
    for (name, member) in members {
        hasher.write(&(name.len() as u64).to_le_bytes());
        hasher.write(name.as_bytes());
        hash_into(hasher, member);
    }
}

fn hash_into(hasher: &mut Fnv64, value: &Value) {
    match value {
        Value::Null => hasher.write(b"n"),
        Value::Bool(flag) => hasher.write(if *flag { b"t" } else { b"f" }),
        Value::Number(number) => {
            // Integers and floats hash apart, as they compare apart.
            if let Some(integer) = number.as_i64() {
                hasher.write(b"i");
                hasher.write(&integer.to_le_bytes());
            } else if let Some(integer) = number.as_u64() {
                hasher.write(b"u");
                hasher.write(&integer.to_le_bytes());
            } else {
                hasher.write(b"f");
                hasher.write(&number.as_f64().unwrap_or(0.0).to_bits().to_le_bytes());
            }
        }
        Value::String(text) => {
            hasher.write(b"s");
            hasher.write(&(text.len() as u64).to_le_bytes());
            hasher.write(text.as_bytes());
        }
        Value::Array(items) => {
            hasher.write(b"[");
            hasher.write(&(items.len() as u64).to_le_bytes());
            for item in items {
                hash_into(hasher, item);
            }
        }
        Value::Object(members) => hash_object_into(hasher, members),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fnv_known_answer() {
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn value_hash_ignores_formatting() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": [1, "x"]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":[1,"x"],"b":1}"#).unwrap();
        assert_eq!(hash_value(&a), hash_value(&b));
        assert_ne!(hash_value(&json!({"a": "1"})), hash_value(&json!({"a": 1})));
        assert_ne!(hash_value(&json!(1)), hash_value(&json!(1.0)));
        let object = json!({"a": [1, {"b": null}]});
        assert_eq!(
            hash_members(object.as_object().unwrap()),
            hash_value(&object)
        );
    }
}
