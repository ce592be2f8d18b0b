//! The write-ahead log through the service: a "crash" is dropping the
//! service without `persist_all` (what `kill -9` leaves on disk, the page
//! cache aside), then a new service loads the storage directory.

use std::fs;
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::rag::testing::LetterEmbedder;

fn service_with(root: &Path, wal: bool, compact_bytes: u64) -> Arc<RagService> {
    let mut svc = RagService::new(
        Arc::new(LetterEmbedder),
        root.to_path_buf(),
        ChatSettings {
            prompt_order: PromptOrder::Stable,
            min_similarity: 0.1,
        },
    )
    .with_wal(wal);
    svc.store.compact_bytes = compact_bytes;
    Arc::new(svc)
}

fn service(root: &Path) -> Arc<RagService> {
    service_with(root, true, crate::rag::durable::DEFAULT_COMPACT_BYTES)
}

/// A new server on the same storage after a crash, everything loaded.
fn restart(root: &Path) -> Arc<RagService> {
    let svc = service(root);
    svc.load_all().unwrap();
    svc
}

fn doc(text: &str) -> Document {
    Document {
        text: text.into(),
        metadata: json!({"n": text.len()}).as_object().unwrap().clone(),
        ..Default::default()
    }
}

async fn add(svc: &Arc<RagService>, index: &str, text: &str) -> String {
    svc.index_documents(index, vec![doc(text)]).await.unwrap()[0]
        .doc_id
        .clone()
}

async fn update(svc: &Arc<RagService>, index: &str, id: &str, text: &str) {
    let d = Document {
        doc_id: id.to_string(),
        ..doc(text)
    };
    let r = svc.update_documents(index, vec![d]).await.unwrap();
    assert_eq!(r.updated_documents.len(), 1);
}

/// (doc_id, text) in list order.
fn listing(svc: &RagService, index: &str) -> Vec<(String, String)> {
    svc.list_documents(index, 0, 100, None, None)
        .unwrap()
        .0
        .into_iter()
        .map(|d| (d.doc_id, d.text))
        .collect()
}

fn texts(svc: &RagService, index: &str) -> Vec<String> {
    listing(svc, index).into_iter().map(|(_, t)| t).collect()
}

#[tokio::test]
async fn acknowledged_writes_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    add(&svc, "kb", "apples are red").await;
    let b = add(&svc, "kb", "bananas are yellow").await;
    let c = add(&svc, "kb", "cherries are dark").await;
    update(&svc, "kb", &b, "bananas are green at first").await;
    svc.delete_documents("kb", vec![c]).await.unwrap();
    add(&svc, "gone", "soon deleted").await;
    svc.delete_index("gone").await.unwrap();
    let before = listing(&svc, "kb");
    drop(svc);
    assert!(!dir.path().join("kb").exists(), "never persisted: log only");
    let next = restart(dir.path());
    assert_eq!(next.list_indexes().unwrap(), vec!["kb"]);
    assert_eq!(listing(&next, "kb"), before);
    assert_eq!(
        texts(&next, "kb"),
        vec!["apples are red", "bananas are green at first"]
    );
    // Retrieval works on a replayed index, and writes carry on.
    let hits = next.retrieve("kb", "green bananas", 1, None).await.unwrap();
    assert_eq!(hits[0].chunk.doc_id, b);
    add(&next, "kb", "dates are sweet").await;
    drop(next);
    assert_eq!(texts(&restart(dir.path()), "kb").len(), 3);
    assert!(!dir.path().join("gone.wal").exists());
}

#[tokio::test]
async fn a_crash_between_snapshot_and_new_log_applies_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    add(&svc, "kb", "seed").await;
    svc.persist("kb", None).await.unwrap();
    // Replayed twice, this sequence would put y after x.
    let y = add(&svc, "kb", "y first").await;
    svc.delete_documents("kb", vec![y]).await.unwrap();
    add(&svc, "kb", "y first").await;
    add(&svc, "kb", "x second").await;
    let before = listing(&svc, "kb");
    let log = dir.path().join("kb.wal");
    let old_log = fs::read(&log).unwrap();
    svc.persist("kb", None).await.unwrap();
    assert!(fs::read(&log).unwrap().len() < old_log.len(), "log emptied");
    drop(svc);
    // The kill fell after the snapshot's swap, before the new log.
    fs::write(&log, &old_log).unwrap();
    let next = restart(dir.path());
    assert_eq!(listing(&next, "kb"), before);
    assert_eq!(texts(&next, "kb"), vec!["seed", "y first", "x second"]);
    // Loading again (nothing written since) gives the same index.
    drop(next);
    assert_eq!(listing(&restart(dir.path()), "kb"), before);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    for i in 0..5 {
        add(&svc, "kb", &format!("document {i}")).await;
    }
    drop(svc);
    let log = dir.path().join("kb.wal");
    let good = fs::metadata(&log).unwrap().len();
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, &[200, 1, 0, 0, 9, 9, 9]).unwrap();
    drop(f);
    let next = restart(dir.path());
    assert_eq!(texts(&next, "kb").len(), 5);
    assert_eq!(fs::metadata(&log).unwrap().len(), good);
}

#[tokio::test]
async fn a_full_log_is_compacted_into_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service_with(dir.path(), true, 2048);
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(add(&svc, "kb", &format!("document number {i} with words")).await);
    }
    for id in &ids[..10] {
        update(&svc, "kb", id, &format!("rewritten {id}")).await;
    }
    svc.delete_documents("kb", ids[30..].to_vec())
        .await
        .unwrap();
    let before = listing(&svc, "kb");
    assert_eq!(before.len(), 30);
    let log = fs::metadata(dir.path().join("kb.wal")).unwrap().len();
    assert!(log < 2048 + 1024, "log of {log} bytes was never compacted");
    assert!(persist::is_index_dir(&dir.path().join("kb")));
    let compactions = svc.metrics.render();
    assert!(compactions.contains("rag_wal_compactions_total"));
    drop(svc);
    assert_eq!(listing(&restart(dir.path()), "kb"), before);
}

#[tokio::test]
async fn deleting_an_index_removes_its_stored_copy() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    add(&svc, "kb", "kept").await;
    svc.persist("kb", None).await.unwrap();
    svc.persist("kb", Some("backup/kb")).await.unwrap();
    svc.delete_index("kb").await.unwrap();
    assert!(!dir.path().join("kb").exists());
    assert!(!dir.path().join("kb.wal").exists());
    assert!(matches!(
        svc.load("kb", None, false).await.unwrap_err(),
        RagError::PathNotFound(_)
    ));
    // Created again under the same name: only what came after counts.
    add(&svc, "kb", "after").await;
    drop(svc);
    let next = restart(dir.path());
    assert_eq!(texts(&next, "kb"), vec!["after"]);
    // A copy persisted elsewhere is the user's, and stays.
    next.load("old", Some("backup/kb"), false).await.unwrap();
    assert_eq!(texts(&next, "old"), vec!["kept"]);
}

#[tokio::test]
async fn a_new_index_supersedes_what_was_stored_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    add(&svc, "kb", "old one").await;
    add(&svc, "kb", "old two").await;
    drop(svc);
    // Started without loading: "kb" is created anew, as a shutdown
    // snapshot of it would replace the stored one.
    let svc = service(dir.path());
    add(&svc, "kb", "new").await;
    drop(svc);
    assert_eq!(texts(&restart(dir.path()), "kb"), vec!["new"]);
}

#[tokio::test]
async fn loading_from_another_path_becomes_the_stored_index() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    add(&svc, "kb", "snapshotted").await;
    svc.persist("kb", Some("snaps/one")).await.unwrap();
    add(&svc, "kb", "later").await;
    svc.load("kb", Some("snaps/one"), true).await.unwrap();
    assert_eq!(texts(&svc, "kb"), vec!["snapshotted"]);
    add(&svc, "kb", "after the load").await;
    drop(svc);
    let next = restart(dir.path());
    assert_eq!(texts(&next, "kb"), vec!["snapshotted", "after the load"]);
    // Loading the default location replays its log over its snapshot.
    add(&next, "kb", "one more").await;
    next.load("kb", None, true).await.unwrap();
    assert_eq!(texts(&next, "kb").len(), 3);
}

#[tokio::test]
async fn persisting_over_another_live_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    add(&svc, "a", "in a").await;
    add(&svc, "b", "in b").await;
    assert!(matches!(
        svc.persist("a", Some("b")).await.unwrap_err(),
        RagError::BadRequest(_)
    ));
    svc.persist("a", Some("c")).await.unwrap();
}

#[tokio::test]
async fn without_the_log_writes_wait_for_a_persist() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service_with(dir.path(), false, u64::MAX);
    add(&svc, "kb", "volatile").await;
    svc.delete_index("kb").await.unwrap();
    add(&svc, "kb", "volatile again").await;
    drop(svc);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "no files");
    let svc = service_with(dir.path(), false, u64::MAX);
    assert_eq!(svc.load_all().unwrap(), 0);
    add(&svc, "kb", "persisted").await;
    assert_eq!(svc.persist_all(), 1);
    // A server with the log on reads that snapshot (it has no log yet).
    drop(svc);
    assert_eq!(texts(&restart(dir.path()), "kb"), vec!["persisted"]);
}

#[tokio::test]
async fn concurrent_writers_replay_in_the_order_they_were_applied() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    add(&svc, "kb", "seed").await;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                let id = add(&svc, "kb", &format!("writer {t} doc {i}")).await;
                if i % 3 == 0 {
                    update(&svc, "kb", &id, &format!("writer {t} doc {i} v2")).await;
                }
                if i % 5 == 0 {
                    svc.delete_documents("kb", vec![id]).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let before = listing(&svc, "kb");
    drop(svc);
    assert_eq!(listing(&restart(dir.path()), "kb"), before);
}
