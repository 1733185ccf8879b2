//! Change-log cursors: `sluice_core::Cursor::parse(text, partitions)` for partitions
//! 1..=8 on arbitrary text (bytes made UTF-8 lossily). Asserts: never panics; an accepted
//! cursor has `partitions` offsets, and `to_string()` parses back to the same offsets.
//! When the input holds a newline, its two halves are also parsed as consecutive cursors
//! and `record_position` must never panic and only name a partition that moved by one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::Cursor;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for partitions in 1..=8 {
        let Ok(cursor) = Cursor::parse(&text, partitions) else {
            continue;
        };
        assert_eq!(cursor.offsets().len(), partitions);
        let token = cursor.to_string();
        let again = Cursor::parse(&token, partitions).expect("a printed cursor parses");
        assert_eq!(
            again.offsets(),
            cursor.offsets(),
            "offsets changed: {token:?}"
        );
        assert_eq!(again.to_string(), token, "printing is not canonical");
    }
    if let Some((before, after)) = text.split_once('\n') {
        for partitions in 1..=8 {
            let (Ok(before), Ok(after)) = (
                Cursor::parse(before, partitions),
                Cursor::parse(after, partitions),
            ) else {
                continue;
            };
            if let Some((partition, offset)) = before.record_position(&after) {
                assert_eq!(before.offset(partition), offset);
                assert_eq!(Some(after.offset(partition)), offset.checked_add(1));
            }
        }
    }
});
