//! Request and response bodies of the KAITO RAGEngine API (v0.12
//! `presets/ragengine/models.py`), field for field.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub type Metadata = Map<String, Value>;

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Document {
    #[serde(default)]
    pub doc_id: String,
    pub text: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metadata: Metadata,
    #[serde(default)]
    pub hash_value: Option<String>,
    #[serde(default)]
    pub is_truncated: bool,
}

/// KAITO's `metadata: dict | None`: `null` reads as `{}`.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Metadata, D::Error> {
    Ok(Option::<Metadata>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
pub struct IndexRequest {
    pub index_name: String,
    pub documents: Vec<Document>,
}

#[derive(Debug, Deserialize)]
pub struct UpdateDocumentRequest {
    pub documents: Vec<Document>,
}

#[derive(Debug, Default, Serialize)]
pub struct UpdateDocumentResponse {
    pub updated_documents: Vec<Document>,
    pub unchanged_documents: Vec<Document>,
    pub not_found_documents: Vec<Document>,
}

#[derive(Debug, Deserialize)]
pub struct DeleteDocumentRequest {
    pub doc_ids: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct DeleteDocumentResponse {
    pub deleted_doc_ids: Vec<String>,
    pub not_found_doc_ids: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ListDocumentsResponse {
    pub documents: Vec<Document>,
    pub count: usize,
    pub total_items: usize,
}

/// One retrieved chunk (KAITO's `NodeWithScore`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NodeWithScore {
    pub doc_id: String,
    pub node_id: String,
    pub text: String,
    pub score: f32,
    pub dense_score: Option<f32>,
    pub sparse_score: Option<f32>,
    pub source: Option<&'static str>,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize)]
pub struct RetrieveRequest {
    pub index_name: String,
    pub query: String,
    #[serde(default = "default_max_node_count")]
    pub max_node_count: i64,
    #[serde(default)]
    pub metadata_filter: Option<Metadata>,
}

fn default_max_node_count() -> i64 {
    5
}

#[derive(Debug, Serialize)]
pub struct RetrieveResponse {
    pub query: String,
    pub results: Vec<NodeWithScore>,
    pub count: usize,
}

#[derive(Debug, Serialize)]
pub struct Message {
    pub message: String,
}

/// Exact match on top-level keys; a key the document lacks matches `null`
/// (as in KAITO's `metadata.get(k) == v`).
pub fn metadata_matches(metadata: &Metadata, filter: &Metadata) -> bool {
    filter
        .iter()
        .all(|(k, v)| metadata.get(k).unwrap_or(&Value::Null) == v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_parse_like_kaito() {
        let d: Document = serde_json::from_value(json!({"text": "t", "metadata": null})).unwrap();
        assert_eq!(d.doc_id, "");
        assert!(d.metadata.is_empty());
        let r: RetrieveRequest =
            serde_json::from_value(json!({"index_name": "i", "query": "q"})).unwrap();
        assert_eq!(r.max_node_count, 5);
    }

    #[test]
    fn metadata_filter_is_exact_on_top_level_keys() {
        let m = json!({"a": 1, "b": {"c": 2}}).as_object().unwrap().clone();
        let f = |v: Value| v.as_object().unwrap().clone();
        assert!(metadata_matches(&m, &f(json!({"a": 1}))));
        assert!(metadata_matches(&m, &f(json!({"b": {"c": 2}}))));
        assert!(!metadata_matches(&m, &f(json!({"a": "1"}))));
        assert!(!metadata_matches(&m, &f(json!({"c": 2}))));
        assert!(metadata_matches(&m, &f(json!({}))));
    }
}
