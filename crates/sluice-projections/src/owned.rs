//! What a source document owns in a view (its entry keys) and what it read, as stored
//! beside the entries, and the change to a view when a new result replaces the old.
//!
//! ```text
//! owned:  1 | entries u32 LE | (len u16 LE | key)* | reads u32 LE | (len u16 LE | collection | len u16 LE | key)*
//! entry:  len u16 LE | source key | value JSON
//! ```
//! Both start with what makes them checkable: a record that does not decode is a
//! corrupt store, never a guess.

use crate::{Entry, Projected, Read};
use std::collections::HashSet;

const FORMAT: u8 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owned {
    pub entries: Vec<String>,
    pub reads: Vec<Read>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a projection's stored {what} is corrupt")]
pub struct Corrupt {
    pub what: &'static str,
}

/// Parts longer than this are not stored (keys are bounded far below it).
const PART_BYTES_MAX: usize = u16::MAX as usize;

fn push_part(out: &mut Vec<u8>, part: &str) {
    let bytes = &part.as_bytes()[..part.len().min(PART_BYTES_MAX)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], Corrupt> {
        if self.bytes.len() < len {
            return Err(Corrupt { what: self.what });
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<usize, Corrupt> {
        let bytes = self.take(2)?;
        Ok(usize::from(u16::from_le_bytes([bytes[0], bytes[1]])))
    }

    fn u32(&mut self) -> Result<usize, Corrupt> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
    }

    fn part(&mut self) -> Result<String, Corrupt> {
        let len = self.u16()?;
        let what = self.what;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| Corrupt { what })
    }
}

impl Owned {
    pub fn of(projected: &Projected) -> Self {
        Self {
            entries: projected
                .entries
                .iter()
                .map(|entry| entry.key.clone())
                .collect(),
            reads: projected.reads.clone(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for key in &self.entries {
            push_part(&mut out, key);
        }
        out.extend_from_slice(&(self.reads.len() as u32).to_le_bytes());
        for read in &self.reads {
            push_part(&mut out, &read.collection);
            push_part(&mut out, &read.key);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Corrupt> {
        let mut reader = Reader {
            bytes,
            what: "owner record",
        };
        if reader.take(1)? != [FORMAT] {
            return Err(Corrupt {
                what: "owner record",
            });
        }
        // Each entry takes at least 2 bytes: a count beyond that is corrupt, not a
        // reason to allocate.
        let entries_count = reader.u32()?;
        if entries_count > reader.bytes.len() / 2 {
            return Err(Corrupt {
                what: "owner record",
            });
        }
        let entries = (0..entries_count)
            .map(|_| reader.part())
            .collect::<Result<Vec<_>, _>>()?;
        let reads_count = reader.u32()?;
        if reads_count > reader.bytes.len() / 4 {
            return Err(Corrupt {
                what: "owner record",
            });
        }
        let reads = (0..reads_count)
            .map(|_| {
                Ok(Read {
                    collection: reader.part()?,
                    key: reader.part()?,
                })
            })
            .collect::<Result<Vec<_>, Corrupt>>()?;
        if !reader.bytes.is_empty() {
            return Err(Corrupt {
                what: "owner record",
            });
        }
        Ok(Self { entries, reads })
    }
}

/// A stored entry: the source that owns it and the value.
pub fn encode_entry(source: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + source.len() + value.len());
    push_part(&mut out, source);
    out.extend_from_slice(value.as_bytes());
    out
}

/// `(source key, value JSON)` of a stored entry.
pub fn decode_entry(bytes: &[u8]) -> Result<(String, &str), Corrupt> {
    let mut reader = Reader {
        bytes,
        what: "entry",
    };
    let source = reader.part()?;
    let value = std::str::from_utf8(reader.bytes).map_err(|_| Corrupt { what: "entry" })?;
    Ok((source, value))
}

/// What changes in a view when a source's result `new` replaces what it owned (`old`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta<'a> {
    /// Entry keys the source no longer produces.
    pub removed_entries: Vec<&'a str>,
    /// Every entry of the new result (an unchanged one is written again: cheaper than
    /// reading it to compare).
    pub put_entries: Vec<&'a Entry>,
    pub removed_reads: Vec<&'a Read>,
    pub added_reads: Vec<&'a Read>,
}

pub fn delta<'a>(old: &'a Owned, new: &'a Projected) -> Delta<'a> {
    let new_keys: HashSet<&str> = new.entries.iter().map(|entry| entry.key.as_str()).collect();
    let new_reads: HashSet<&Read> = new.reads.iter().collect();
    let old_reads: HashSet<&Read> = old.reads.iter().collect();
    Delta {
        removed_entries: old
            .entries
            .iter()
            .map(String::as_str)
            .filter(|key| !new_keys.contains(key))
            .collect(),
        put_entries: new.entries.iter().collect(),
        removed_reads: old
            .reads
            .iter()
            .filter(|read| !new_reads.contains(read))
            .collect(),
        added_reads: new
            .reads
            .iter()
            .filter(|read| !old_reads.contains(read))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(collection: &str, key: &str) -> Read {
        Read {
            collection: collection.into(),
            key: key.into(),
        }
    }

    fn entry(key: &str) -> Entry {
        Entry {
            key: key.into(),
            value: "1".into(),
        }
    }

    #[test]
    fn owner_records_round_trip_and_corruption_is_refused() {
        let owned = Owned {
            entries: vec!["17".into(), "a\0b".into(), "é".into()],
            reads: vec![read("location", "3"), read("insurance_plan", "p-1")],
        };
        let bytes = owned.encode();
        assert_eq!(Owned::decode(&bytes), Ok(owned));
        assert_eq!(
            Owned::decode(&Owned::default().encode()),
            Ok(Owned::default())
        );
        for cut in 0..bytes.len() {
            assert!(Owned::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Owned::decode(&longer).is_err());
        let mut huge_count = bytes.clone();
        huge_count[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Owned::decode(&huge_count).is_err());
        let mut other_format = bytes;
        other_format[0] = 2;
        assert!(Owned::decode(&other_format).is_err());
    }

    #[test]
    fn entries_carry_their_owner() {
        let bytes = encode_entry("doctor\0/17", r#"{"name":"Kate"}"#);
        assert_eq!(
            decode_entry(&bytes),
            Ok(("doctor\0/17".to_owned(), r#"{"name":"Kate"}"#))
        );
        assert!(decode_entry(&bytes[..3]).is_err());
    }

    #[test]
    fn a_delta_removes_what_is_gone_and_adds_what_is_new() {
        let old = Owned {
            entries: vec!["a".into(), "b".into()],
            reads: vec![read("location", "1"), read("location", "2")],
        };
        let new = Projected {
            entries: vec![entry("b"), entry("c")],
            reads: vec![read("location", "2"), read("location", "3")],
        };
        let delta = delta(&old, &new);
        assert_eq!(delta.removed_entries, ["a"]);
        assert_eq!(delta.put_entries, [&new.entries[0], &new.entries[1]]);
        assert_eq!(delta.removed_reads, [&old.reads[0]]);
        assert_eq!(delta.added_reads, [&new.reads[1]]);
        // A deleted source: nothing new, everything old goes.
        let nothing = Projected::default();
        let gone = super::delta(&old, &nothing);
        assert_eq!(gone.removed_entries, ["a", "b"]);
        assert_eq!(gone.removed_reads.len(), 2);
    }
}
