//! Change-log cursors: one offset per partition, the next record to read in each.
//! Clients treat the token as opaque; it is `o0.o1.….oN` in base 10.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    offsets: Vec<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    #[error("invalid cursor {0:?}: use a cursor returned by this server")]
    Malformed(String),
    #[error("cursor has {got} partitions, this server has {expected}")]
    Partitions { expected: usize, got: usize },
}

impl Cursor {
    /// The partition and offset of the change record whose cursor is `next`, read right
    /// after `self`: exactly one partition moved on, by one. `None` for anything else.
    pub fn record_position(&self, next: &Cursor) -> Option<(usize, u64)> {
        let mut moved = self
            .offsets()
            .iter()
            .zip(next.offsets())
            .enumerate()
            .filter(|(_, (before, after))| before != after);
        match (moved.next(), moved.next()) {
            (Some((partition, (before, after))), None) if before.checked_add(1) == Some(*after) => {
                Some((partition, *before))
            }
            _ => None,
        }
    }

    pub fn start(partitions: usize) -> Self {
        Self {
            offsets: vec![0; partitions],
        }
    }

    pub fn from_offsets(offsets: Vec<u64>) -> Self {
        Self { offsets }
    }

    pub fn parse(token: &str, partitions: usize) -> Result<Self, CursorError> {
        let malformed = || CursorError::Malformed(token.chars().take(64).collect());
        let offsets = token
            .split('.')
            .map(|part| {
                if part.len() > 20 {
                    Err(())
                } else {
                    part.parse::<u64>().map_err(|_| ())
                }
            })
            .collect::<Result<Vec<u64>, ()>>()
            .map_err(|()| malformed())?;
        if offsets.len() != partitions {
            return Err(CursorError::Partitions {
                expected: partitions,
                got: offsets.len(),
            });
        }
        Ok(Self { offsets })
    }

    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    pub fn offset(&self, partition: usize) -> u64 {
        self.offsets.get(partition).copied().unwrap_or(0)
    }

    /// Appends the cursor's text (what `Display` writes) without a formatter: change-log
    /// readers write one per record.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        for (index, offset) in self.offsets.iter().enumerate() {
            if index > 0 {
                out.push(b'.');
            }
            out.extend_from_slice(digits.format(*offset).as_bytes());
        }
    }

    pub fn set(&mut self, partition: usize, offset: u64) {
        if let Some(slot) = self.offsets.get_mut(partition) {
            *slot = offset;
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, offset) in self.offsets.iter().enumerate() {
            if index > 0 {
                formatter.write_str(".")?;
            }
            write!(formatter, "{offset}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_moves_one_partition_by_one() {
        let cursor = |offsets: &[u64]| Cursor::from_offsets(offsets.to_vec());
        assert_eq!(
            cursor(&[3, 5]).record_position(&cursor(&[3, 6])),
            Some((1, 5))
        );
        assert_eq!(
            cursor(&[3, 5]).record_position(&cursor(&[4, 5])),
            Some((0, 3))
        );
        assert_eq!(cursor(&[3, 5]).record_position(&cursor(&[3, 5])), None);
        assert_eq!(cursor(&[3, 5]).record_position(&cursor(&[4, 6])), None);
        assert_eq!(cursor(&[3, 5]).record_position(&cursor(&[3, 7])), None);
    }

    #[test]
    fn round_trips_and_validates() {
        let cursor = Cursor::from_offsets(vec![0, 12, 3]);
        assert_eq!(Cursor::parse(&cursor.to_string(), 3).unwrap(), cursor);
        let mut text = Vec::new();
        cursor.write_text(&mut text);
        assert_eq!(text, cursor.to_string().as_bytes());
        assert_eq!(
            Cursor::parse("1.2", 3),
            Err(CursorError::Partitions {
                expected: 3,
                got: 2
            })
        );
        assert!(matches!(
            Cursor::parse("1.x.3", 3),
            Err(CursorError::Malformed(_))
        ));
        assert!(matches!(
            Cursor::parse("", 1),
            Err(CursorError::Malformed(_))
        ));
    }
}

#[cfg(test)]
mod regression_tests {
    use super::Cursor;

    /// Found by the `cursor` fuzz target: `before + 1` overflowed at `u64::MAX` (a panic
    /// with overflow checks, `Some((0, u64::MAX))` without).
    #[test]
    fn regression_record_position_at_u64_max_does_not_overflow() {
        let before = Cursor::parse("18446744073709551615", 1).ok();
        let after = Cursor::parse("0", 1).ok();
        let (Some(before), Some(after)) = (before, after) else {
            panic!("both cursors parse");
        };
        assert_eq!(before.record_position(&after), None);
        let next = Cursor::parse("1", 1).ok();
        assert_eq!(
            after.record_position(&next.unwrap_or(after.clone())),
            Some((0, 0))
        );
    }
}
