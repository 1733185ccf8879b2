//! Stable hashes. `std`'s `DefaultHasher` may change between Rust releases, and partition
//! routing and tie-breaks are persisted decisions, so they use functions defined here,
//! which must never change: FNV-1a for keys (short), and a word-at-a-time multiply-rotate
//! hash for event contents (hashed once per event, so FNV's byte loop showed in profiles).

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

// Type tags in the top byte, lengths below: distinct shapes never feed the same words.
const TAG_NULL: u64 = 1 << 56;
const TAG_BOOL: u64 = 2 << 56;
const TAG_I64: u64 = 3 << 56;
const TAG_U64: u64 = 4 << 56;
const TAG_F64: u64 = 5 << 56;
const TAG_STRING: u64 = 6 << 56;
const TAG_ARRAY: u64 = 7 << 56;
const TAG_OBJECT: u64 = 8 << 56;

/// Content hash: 8 bytes at a time, multiply-rotate, with a final avalanche.
#[derive(Clone, Copy, Debug)]
pub struct WordHash(u64);

impl Default for WordHash {
    fn default() -> Self {
        Self(FNV_OFFSET)
    }
}

impl WordHash {
    const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word)
            .wrapping_mul(Self::MULTIPLIER)
            .rotate_left(29);
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut array = [0; 8];
            array.copy_from_slice(word);
            self.mix(u64::from_le_bytes(array));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut array = [0; 8];
            array[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(array) ^ ((rest.len() as u64) << 59));
        }
    }

    pub fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    pub fn finish(self) -> u64 {
        // murmur3's finalizer.
        let mut hash = self.0;
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^ (hash >> 33)
    }
}

/// Hash of a JSON value that depends only on its content, never on its formatting:
/// object members are visited in key order (serde_json's `Map` is a `BTreeMap`).
pub fn hash_value(value: &Value) -> u64 {
    let mut hasher = WordHash::default();
    hash_into(&mut hasher, value);
    hasher.finish()
}

/// [`hash_value`] of an object, without wrapping the map in a `Value`.
pub fn hash_members(members: &serde_json::Map<String, Value>) -> u64 {
    let mut hasher = WordHash::default();
    hash_object_into(&mut hasher, members);
    hasher.finish()
}

fn hash_object_into(hasher: &mut WordHash, members: &serde_json::Map<String, Value>) {
    hasher.write_u64(TAG_OBJECT ^ members.len() as u64);
    for (name, member) in members {
        hasher.write_u64(name.len() as u64);
        hasher.write(name.as_bytes());
        hash_into(hasher, member);
    }
}

fn hash_into(hasher: &mut WordHash, value: &Value) {
    match value {
        Value::Null => hasher.write_u64(TAG_NULL),
        Value::Bool(flag) => hasher.write_u64(TAG_BOOL ^ u64::from(*flag)),
        Value::Number(number) => {
            // Integers and floats hash apart, as they compare apart.
            if let Some(integer) = number.as_i64() {
                hasher.write_u64(TAG_I64);
                hasher.write_u64(integer as u64);
            } else if let Some(integer) = number.as_u64() {
                hasher.write_u64(TAG_U64);
                hasher.write_u64(integer);
            } else {
                hasher.write_u64(TAG_F64);
                hasher.write_u64(number.as_f64().unwrap_or(0.0).to_bits());
            }
        }
        Value::String(text) => {
            hasher.write_u64(TAG_STRING ^ text.len() as u64);
            hasher.write(text.as_bytes());
        }
        Value::Array(items) => {
            hasher.write_u64(TAG_ARRAY ^ items.len() as u64);
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
        assert_ne!(hash_value(&json!(["a", "b"])), hash_value(&json!(["ab"])));
        assert_ne!(
            hash_value(&json!({"a": null})),
            hash_value(&json!({"a": false}))
        );
        // Pinned: ties are persisted, so this function must never change.
        assert_eq!(
            hash_value(&json!({"id": 7, "city": "Oslo"})),
            7_784_929_612_076_751_013
        );
        let object = json!({"a": [1, {"b": null}]});
        assert_eq!(
            hash_members(object.as_object().unwrap()),
            hash_value(&object)
        );
    }
}
