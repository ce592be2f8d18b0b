use serde_json::json;

use super::*;
use crate::rag::testing::service;

fn doc(text: &str, metadata: serde_json::Value) -> Document {
    Document {
        text: text.into(),
        metadata: metadata.as_object().unwrap().clone(),
        ..Default::default()
    }
}

#[tokio::test]
async fn indexing_is_idempotent_by_text_and_empty_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    assert!(svc
        .index_documents("empty", vec![])
        .await
        .unwrap()
        .is_empty());
    assert!(svc.list_indexes().unwrap().is_empty());
    let out = svc
        .index_documents(
            "i",
            vec![doc("hello world", json!({})), doc("hello world", json!({}))],
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].doc_id, doc_id_of("hello world"));
    svc.index_documents("i", vec![doc("hello world", json!({"x": 1}))])
        .await
        .unwrap();
    assert_eq!(svc.list_documents("i", 0, 10, None, None).unwrap().1, 1);
    assert!(matches!(
        svc.index_documents("bad name", vec![]).await.unwrap_err(),
        RagError::BadRequest(_)
    ));
}

#[tokio::test]
async fn update_delete_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    let out = svc
        .index_documents("i", vec![doc("apples", json!({}))])
        .await
        .unwrap();
    let id = out[0].doc_id.clone();
    let mut changed = doc("pears", json!({}));
    changed.doc_id = id.clone();
    let mut same = doc("pears", json!({}));
    same.doc_id = id.clone();
    let mut missing = doc("x", json!({}));
    missing.doc_id = "nope".into();
    let r = svc
        .update_documents("i", vec![changed, missing])
        .await
        .unwrap();
    assert_eq!(
        (r.updated_documents.len(), r.not_found_documents.len()),
        (1, 1)
    );
    let r = svc.update_documents("i", vec![same]).await.unwrap();
    assert_eq!(r.unchanged_documents.len(), 1);
    let (docs, _) = svc.list_documents("i", 0, 10, None, None).unwrap();
    assert_eq!(
        (docs[0].doc_id.as_str(), docs[0].text.as_str()),
        (id.as_str(), "pears")
    );
    let hits = svc.retrieve("i", "pears", 5, None).await.unwrap();
    assert_eq!(hits[0].chunk.text, "pears");
    let r = svc
        .delete_documents("i", vec![id.clone(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(
        (r.deleted_doc_ids, r.not_found_doc_ids),
        (vec![id], vec!["nope".to_string()])
    );
    assert!(svc
        .retrieve("i", "pears", 5, None)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        svc.retrieve("i", "  ", 5, None).await.unwrap_err(),
        RagError::BadRequest(_)
    ));
    assert!(matches!(
        svc.retrieve("zz", "q", 5, None).await.unwrap_err(),
        RagError::IndexNotFound(_)
    ));
    svc.delete_index("i").await.unwrap();
    assert!(matches!(
        svc.delete_index("i").await.unwrap_err(),
        RagError::IndexNotFound(_)
    ));
}

#[tokio::test]
async fn persist_load_conflicts_and_confinement() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    svc.index_documents("i", vec![doc("keep me", json!({"k": "v"}))])
        .await
        .unwrap();
    let written = svc.persist("i", None).await.unwrap();
    assert_eq!(written, dir.path().canonicalize().unwrap().join("i"));
    assert!(matches!(
        svc.persist("i", Some("../out")).await.unwrap_err(),
        RagError::BadRequest(_)
    ));
    assert!(matches!(
        svc.persist("i", Some("/etc/x")).await.unwrap_err(),
        RagError::BadRequest(_)
    ));
    svc.persist("i", Some("snap/one")).await.unwrap();
    // Loading over a live index needs overwrite (KAITO answers 500 here).
    assert!(matches!(
        svc.load("i", None, false).await.unwrap_err(),
        RagError::IndexExists(_)
    ));
    svc.load("i", Some("storage"), true).await.unwrap();
    svc.load("copy", Some("snap/one"), false).await.unwrap();
    assert_eq!(
        svc.list_documents("copy", 0, 10, None, None).unwrap().0[0].text,
        "keep me"
    );
    assert!(matches!(
        svc.load("none", None, false).await.unwrap_err(),
        RagError::PathNotFound(_)
    ));
    // SIGTERM persists everything; a new server loads it all back. A
    // deleted index stays deleted (its stored copy went with it).
    svc.delete_index("i").await.unwrap();
    svc.index_documents("fresh", vec![doc("new doc", json!({}))])
        .await
        .unwrap();
    assert_eq!(svc.persist_all(), 2);
    let next = service(dir.path());
    assert_eq!(next.load_all().unwrap(), 2, "copy, fresh");
    assert_eq!(next.list_indexes().unwrap(), vec!["copy", "fresh"]);
}
