use serde_json::json;

use super::*;
use crate::rag::durable::replay;
use crate::rag::index::Index;
use crate::rag::testing::toy_vector;

fn doc(text: &str) -> DocRecord {
    DocRecord {
        doc_id: crate::rag::index::doc_id_of(text),
        text: text.to_string(),
        metadata: json!({"len": text.len()}).as_object().unwrap().clone(),
        chunks: text
            .split(". ")
            .scan(0, |at, part| {
                let start = *at;
                *at += part.len() + 2;
                Some(NewChunk {
                    start_byte: start,
                    text: part.to_string(),
                    vector: toy_vector(part),
                })
            })
            .collect(),
    }
}

fn sample() -> Vec<Record> {
    vec![
        Record::Reset,
        Record::Insert(vec![doc("alpha beta. gamma"), doc("delta")]),
        Record::Update(vec![DocRecord {
            doc_id: doc("delta").doc_id,
            ..doc("delta changed. twice")
        }]),
        Record::Insert(vec![DocRecord {
            chunks: Vec::new(),
            ..doc("")
        }]),
        Record::Delete(vec![doc("alpha beta. gamma").doc_id, "nope".into()]),
        Record::Drop,
    ]
}

/// A log at `path` for snapshot 7 holding `records`.
fn write_log(path: &Path, records: &[Record]) -> Vec<u8> {
    let mut wal = Wal::open(path, 7).unwrap().wal;
    wal.append(&records.iter().collect::<Vec<_>>()).unwrap();
    fs::read(path).unwrap()
}

#[test]
fn records_round_trip_through_the_payload_and_the_file() {
    for r in sample() {
        assert_eq!(decode(&encode(&r)).as_ref(), Some(&r));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.wal");
    let bytes = write_log(&path, &sample());
    assert_eq!(header_id(&bytes), Some(7));
    let opened = Wal::open(&path, 7).unwrap();
    assert_eq!(opened.records, sample());
    assert_eq!((opened.torn_bytes, opened.stale), (0, false));
    assert_eq!(opened.wal.size(), bytes.len() as u64);
}

#[test]
fn a_torn_last_record_is_ignored_and_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.wal");
    let whole = write_log(&path, &sample()[..3]);
    let two = HEADER_LEN as usize + sample()[..2].iter().map(|r| frame(r).len()).sum::<usize>();
    // Cut inside the third record's length, checksum and payload.
    for cut in [two + 2, two + 6, two + 9, whole.len() - 1] {
        fs::write(&path, &whole[..cut]).unwrap();
        let opened = Wal::open(&path, 7).unwrap();
        assert_eq!(opened.records, sample()[..2], "cut at {cut}");
        assert_eq!(opened.torn_bytes, (cut - two) as u64);
        assert_eq!(fs::metadata(&path).unwrap().len(), two as u64);
        // The log carries on where the good records end.
        let mut wal = opened.wal;
        wal.append(&[&sample()[2]]).unwrap();
        assert_eq!(Wal::open(&path, 7).unwrap().records, sample()[..3]);
    }
}

#[test]
fn a_checksum_mismatch_or_zeroed_tail_ends_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.wal");
    let whole = write_log(&path, &sample()[..3]);
    let mut bad = whole.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0x40;
    fs::write(&path, &bad).unwrap();
    let opened = Wal::open(&path, 7).unwrap();
    assert_eq!(opened.records, sample()[..2]);
    assert!(opened.torn_bytes > 0);
    // A crash that extended the file but never wrote it: zeros.
    let mut zeroed = whole.clone();
    zeroed.extend([0u8; 4096]);
    fs::write(&path, &zeroed).unwrap();
    let opened = Wal::open(&path, 7).unwrap();
    assert_eq!(opened.records, sample()[..3]);
    assert_eq!(opened.torn_bytes, 4096);
    // Corruption mid-log: the records after it are not trusted either.
    let mut mid = whole;
    mid[HEADER_LEN as usize + 12] ^= 1;
    fs::write(&path, &mid).unwrap();
    assert!(Wal::open(&path, 7).unwrap().records.is_empty());
}

#[test]
fn a_log_of_another_snapshot_is_stale_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.wal");
    write_log(&path, &sample());
    let opened = Wal::open(&path, 8).unwrap();
    assert!(opened.stale);
    assert!(opened.records.is_empty());
    assert_eq!(fs::read(&path).unwrap(), header(8).to_vec());
    fs::write(&path, b"not a log at all").unwrap();
    let opened = Wal::open(&path, 8).unwrap();
    assert!(opened.stale && opened.records.is_empty());
    // No file yet: an empty log, not a stale one.
    let fresh = dir.path().join("new.wal");
    let opened = Wal::open(&fresh, 0).unwrap();
    assert!(!opened.stale);
    assert_eq!(opened.wal.size(), HEADER_LEN);
    assert!(!dir.path().join("new.wal.tmp").exists());
}

#[test]
fn replaying_a_log_twice_from_its_snapshot_gives_the_same_index() {
    let dim = 26;
    let base = replay(None, sample()[..2].to_vec(), dim).unwrap();
    let listing = |ix: &Index| ix.list(0, 100, None, None);
    let once = replay(
        replay(None, sample()[..2].to_vec(), dim),
        sample()[2..5].to_vec(),
        dim,
    )
    .unwrap();
    let again = replay(
        replay(None, sample()[..2].to_vec(), dim),
        sample()[2..5].to_vec(),
        dim,
    )
    .unwrap();
    assert_eq!(listing(&once), listing(&again));
    assert_eq!(
        once.num_docs(),
        2,
        "alpha deleted, delta updated, empty added"
    );
    assert_eq!(listing(&base).0.len(), 2);
    let delta = once.get(&doc("delta").doc_id).unwrap();
    assert_eq!(delta.text, "delta changed. twice");
    assert_eq!(delta.slots.len(), 2);
    // Drop ends the index; Reset starts it over empty.
    assert!(replay(Some(once), vec![Record::Drop], dim).is_none());
    let reset = replay(None, vec![Record::Drop, Record::Reset], dim).unwrap();
    assert_eq!(reset.num_docs(), 0);
    // Writes to an index that does not exist are no-ops.
    assert!(replay(None, sample()[1..2].to_vec(), dim).is_none());
}
