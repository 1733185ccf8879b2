use super::*;

const OPTIONS: StoreOptions = StoreOptions {
    cache_bytes: 1 << 20,
    memtable_bytes: 1 << 20,
    journal_bytes_max: JOURNAL_BYTES_MIN,
};

fn open(dir: &Path) -> Store {
    Store::open(dir, 2, OPTIONS).unwrap()
}

#[test]
fn batch_is_atomic_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let mut batch = store.batch();
        batch.put_doc("doctor", b"17", b"doc".to_vec());
        let mut chunk = ChangeChunk::default();
        chunk.push(|out| out.extend_from_slice(b"{}"));
        chunk.push(|out| out.extend_from_slice(b"{}"));
        batch.append_chunk(1, 0, &chunk);
        batch.put_counters(
            "doctor",
            1,
            &Counters {
                applied: 2,
                documents: 1,
                ..Counters::default()
            },
        );
        batch.put_rejected("doctor", 1, b"bad".to_vec());
        batch.commit().unwrap();
        store.sync().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(
        store.get_doc("doctor", b"17").unwrap().as_deref(),
        Some(&b"doc"[..])
    );
    assert_eq!(store.get_doc("doctor", b"18").unwrap(), None);
    assert_eq!(store.next_change_offset(0).unwrap(), 0);
    assert_eq!(store.next_change_offset(1).unwrap(), 2);
    assert_eq!(store.read_changes(1, 1, 2, 10).unwrap().len(), 1);
    assert_eq!(store.last_rejected_seq("doctor").unwrap(), 1);
    assert_eq!(store.last_rejected_seq("location").unwrap(), 0);
    let counters = store.load_counters().unwrap();
    assert_eq!(
        counters,
        vec![(
            "doctor".into(),
            1,
            Counters {
                applied: 2,
                documents: 1,
                ..Counters::default()
            }
        )]
    );
}

#[test]
fn partition_count_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let error = Store::open(dir.path(), 3, OPTIONS).err().unwrap();
    assert!(
        error.to_string().contains("created with 2 partitions"),
        "{error}"
    );
}

#[test]
fn scans_stay_inside_their_collection() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut batch = store.batch();
    for (collection, key) in [("a", "1"), ("a", "2"), ("a", "3"), ("ab", "0"), ("b", "0")] {
        batch.put_doc(collection, key.as_bytes(), key.as_bytes().to_vec());
    }
    for seq in 1..=3 {
        batch.put_rejected("a", seq, vec![]);
    }
    batch.put_rejected("ab", 9, vec![]);
    batch.commit().unwrap();
    let keys = |after: Option<&[u8]>, limit| {
        store
            .scan_docs("a", after, limit)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(None, 10),
        vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
    );
    assert_eq!(keys(Some(b"1"), 1), vec![b"2".to_vec()]);
    assert_eq!(keys(Some(b"3"), 10), Vec::<Vec<u8>>::new());
    let seqs: Vec<u64> = store
        .scan_rejected("a", 1, 10)
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(seqs, vec![2, 3]);
    assert_eq!(store.last_rejected_seq("a").unwrap(), 3);
}

#[test]
fn change_chunks_read_at_any_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = |offset: u64| offset.to_string().into_bytes();
    let mut next = 0;
    for size in [3u64, 1, 5, 2] {
        let mut batch = store.batch();
        let mut chunk = ChangeChunk::default();
        for offset in next..next + size {
            chunk.push(|out| out.extend_from_slice(&body(offset)));
        }
        batch.append_chunk(0, next, &chunk);
        batch.commit().unwrap();
        next += size;
    }
    assert_eq!(store.next_change_offset(0).unwrap(), 11);
    for from in 0..11 {
        for until in from..=12 {
            for limit in [1, 3, 100] {
                let got = store.read_changes(0, from, until, limit).unwrap();
                let expected: Vec<u64> = (from..until.min(11)).take(limit).collect();
                let offsets: Vec<u64> = got.iter().map(|(offset, _)| *offset).collect();
                assert_eq!(offsets, expected, "from {from} until {until} limit {limit}");
                for (offset, bytes) in got {
                    assert_eq!(&*bytes, body(offset).as_slice());
                }
            }
        }
    }
    assert!(store.read_changes(1, 0, 10, 10).unwrap().is_empty());
}

#[test]
fn chunks_report_their_newest_time_and_can_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for (first, times) in [(0u64, [5u64, 7]), (2, [9, 11])] {
        let mut chunk = ChangeChunk::default();
        for ts in times {
            chunk.push(|out| {
                out.extend_from_slice(format!("{{\"a\":1,\"ts_ms\":{ts}}}").as_bytes())
            });
        }
        let mut batch = store.batch();
        batch.append_chunk(0, first, &chunk);
        batch.commit().unwrap();
    }
    let chunks = store.oldest_chunks(0, 0, 10).unwrap();
    assert_eq!(
        chunks,
        vec![
            ChunkInfo {
                first_offset: 0,
                count: 2,
                newest_ts_ms: 7
            },
            ChunkInfo {
                first_offset: 2,
                count: 2,
                newest_ts_ms: 11
            },
        ]
    );
    assert_eq!(store.first_change_offset(0).unwrap(), 0);
    let mut batch = store.batch();
    batch.remove_chunk(0, 0);
    batch.commit().unwrap();
    assert_eq!(store.first_change_offset(0).unwrap(), 2);
    assert_eq!(store.next_change_offset(0).unwrap(), 4);
    assert_eq!(
        store.oldest_chunks(0, 2, 10).unwrap(),
        chunks[1..],
        "listing from where retention stopped"
    );
    store.drop_changes_before(0, 2).unwrap();
    assert_eq!(store.read_changes(0, 0, 10, 10).unwrap().len(), 2);
    assert_eq!(
        store.first_change_offset(1).unwrap(),
        0,
        "an empty partition starts at its next offset"
    );
}

#[test]
fn seen_ids_round_trip_per_document() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.get_seen_ids("doctor", b"k1").unwrap().is_empty());
    let ids = vec!["a".to_owned(), String::new(), "nats:EVENTS:17".to_owned()];
    let mut batch = store.batch();
    batch.put_seen_ids("doctor", b"k1", &ids);
    batch.commit().unwrap();
    assert_eq!(store.get_seen_ids("doctor", b"k1").unwrap(), ids);
    assert!(store.get_seen_ids("doctor", b"k2").unwrap().is_empty());
    assert!(store.get_seen_ids("location", b"k1").unwrap().is_empty());
    assert!(decode_seen_ids(&[5, 0, b'a']).is_err());
    assert!(decode_seen_ids(&[1]).is_err());
}

#[test]
fn instance_id_is_kept_and_differs_between_directories() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let id = open(first.path()).instance_id().to_owned();
    assert_eq!(id.len(), 16);
    assert_eq!(open(first.path()).instance_id(), id);
    assert_ne!(open(second.path()).instance_id(), id);
}

#[test]
fn dropping_removed_change_records_gives_their_disk_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // 200 chunks of one 64 KiB record, flushed every 16 chunks: about 13 MB in tables of
    // at most a memtable (1 MiB here).
    let body = vec![b'x'; 64 << 10];
    for offset in 0..200u64 {
        let mut chunk = ChangeChunk::default();
        chunk.push(|out| out.extend_from_slice(&body));
        let mut batch = store.batch();
        batch.append_chunk(0, offset, &chunk);
        batch.commit().unwrap();
        if offset % 16 == 15 {
            store.changes(0).rotate_memtable_and_wait().unwrap();
        }
    }
    store.changes(0).rotate_memtable_and_wait().unwrap();
    let before = store.change_log_disk_bytes(0);
    assert!(
        before >= 12 << 20,
        "{before} bytes on disk before retention"
    );
    // Retention removes the oldest 180 chunks, then drops their tables.
    let mut batch = store.batch();
    for offset in 0..180 {
        batch.remove_chunk(0, offset);
    }
    batch.commit().unwrap();
    store.drop_changes_before(0, 180).unwrap();
    let after = store.change_log_disk_bytes(0);
    // What is kept (20 chunks, 1.3 MB) and at most the tables that straddle offset 180.
    assert!(
        after <= 4 << 20,
        "{after} bytes still on disk ({before} before): removed records were not freed"
    );
    assert_eq!(store.first_change_offset(0).unwrap(), 180);
    let kept = store.read_changes(0, 180, 200, 100).unwrap();
    assert_eq!(kept.len(), 20);
    assert!(kept.iter().all(|(_, record)| record.len() == body.len()));
}

#[test]
fn a_change_log_in_one_keyspace_moves_to_one_keyspace_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let mut chunks = Vec::new();
    {
        // A data directory as versions before per-partition keyspaces left it.
        let db = Database::builder(dir.path()).open().unwrap();
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
        meta.insert(META_PARTITIONS, 2u16.to_be_bytes()).unwrap();
        let legacy = db
            .keyspace("changes", KeyspaceCreateOptions::default)
            .unwrap();
        for (partition, first, body) in [(0u16, 0u64, "a"), (0, 1, "b"), (1, 0, "c")] {
            let mut chunk = ChangeChunk::default();
            chunk.push(|out| out.extend_from_slice(body.as_bytes()));
            legacy
                .insert(change_key(partition, first), chunk.buffer.as_slice())
                .unwrap();
            chunks.push((partition, first, body));
        }
        db.persist(PersistMode::SyncData).unwrap();
    }
    {
        let store = open(dir.path());
        for (partition, first, body) in &chunks {
            let read = store
                .read_changes(*partition, *first, first + 1, 1)
                .unwrap();
            assert_eq!(read.len(), 1, "partition {partition} offset {first}");
            assert_eq!(&*read[0].1, body.as_bytes());
        }
        assert_eq!(store.next_change_offset(0).unwrap(), 2);
        assert_eq!(store.next_change_offset(1).unwrap(), 1);
        assert!(
            !store.db.keyspace_exists("changes"),
            "the old keyspace is gone"
        );
    }
    // And a second open finds nothing left to move.
    let store = open(dir.path());
    assert_eq!(store.next_change_offset(0).unwrap(), 2);
}

#[test]
fn views_keep_entries_owners_and_dependencies_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut batch = store.batch();
    for (view, value) in [("profile@1", "one"), ("profile@12", "twelve")] {
        batch.put_view_entry(view, b"17", value.as_bytes());
        batch.put_view_entry(view, b"17\0x", b"nul inside");
        batch.put_view_owner(view, 1, b"17", b"owned");
    }
    // Similar collections, dependency keys and sources must not run into each other.
    batch.put_view_dependency("profile@1", 1, "location", b"3", b"17");
    batch.put_view_dependency("profile@1", 1, "location", b"3", b"18");
    batch.put_view_dependency("profile@1", 1, "location", b"31", b"19");
    batch.put_view_dependency("profile@1", 1, "loc", b"3", b"20");
    batch.put_view_dependency("profile@1", 0, "location", b"3", b"21");
    batch.put_view_dependency("profile@12", 1, "location", b"3", b"22");
    batch.commit().unwrap();

    assert_eq!(
        store.get_view_entry("profile@1", b"17").unwrap().as_deref(),
        Some(&b"one"[..])
    );
    let entries = store.scan_view_entries("profile@12", None, 10).unwrap();
    let keys: Vec<&[u8]> = entries.iter().map(|(key, _)| key.as_slice()).collect();
    assert_eq!(keys, [&b"17"[..], &b"17\0x"[..]]);
    let after = store
        .scan_view_entries("profile@12", Some(b"17"), 10)
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(
        store
            .get_view_owner("profile@1", 1, b"17")
            .unwrap()
            .as_deref(),
        Some(&b"owned"[..])
    );
    assert_eq!(store.get_view_owner("profile@1", 0, b"17").unwrap(), None);
    let dependents = |view: &str, partition: u16, collection: &str, key: &[u8]| {
        store
            .view_dependents(view, partition, collection, key, None, 10)
            .unwrap()
    };
    assert_eq!(
        dependents("profile@1", 1, "location", b"3"),
        [b"17".to_vec(), b"18".to_vec()]
    );
    assert_eq!(
        dependents("profile@1", 1, "location", b"31"),
        [b"19".to_vec()]
    );
    assert_eq!(dependents("profile@1", 1, "loc", b"3"), [b"20".to_vec()]);
    assert_eq!(
        dependents("profile@1", 0, "location", b"3"),
        [b"21".to_vec()]
    );
    assert_eq!(
        dependents("profile@12", 1, "location", b"3"),
        [b"22".to_vec()]
    );
    assert_eq!(
        store
            .view_dependents("profile@1", 1, "location", b"3", Some(b"17"), 10)
            .unwrap(),
        [b"18".to_vec()]
    );

    let mut batch = store.batch();
    batch.remove_view_dependency("profile@1", 1, "location", b"3", b"17");
    batch.remove_view_entry("profile@1", b"17");
    batch.remove_view_owner("profile@1", 1, b"17");
    batch.commit().unwrap();
    assert_eq!(
        dependents("profile@1", 1, "location", b"3"),
        [b"18".to_vec()]
    );
    assert_eq!(store.get_view_entry("profile@1", b"17").unwrap(), None);

    // Dropping a version in bounded steps leaves the other version whole.
    let mut removed = 0;
    loop {
        let step = store.remove_view_records("profile@1", 2).unwrap();
        assert!(step <= 2);
        removed += step;
        if step == 0 {
            break;
        }
    }
    assert_eq!(removed, 1 + 4, "one entry, four dependencies");
    assert!(
        store
            .scan_view_entries("profile@1", None, 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .scan_view_entries("profile@12", None, 10)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        dependents("profile@12", 1, "location", b"3"),
        [b"22".to_vec()]
    );
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store
            .get_view_entry("profile@12", b"17")
            .unwrap()
            .as_deref(),
        Some(&b"twelve"[..])
    );
}
