//! One named index: its documents (in insertion order, as KAITO lists
//! them), their chunks, and the dense and BM25 indexes over the chunks.
//! Everything here is synchronous and gets embeddings ready-made, so it is
//! tested without a model and locked only for the memory work.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;
use sha2::{Digest, Sha256};

use super::dense::DenseIndex;
use super::fusion::{fuse, Fused};
use super::sparse::SparseIndex;
use super::types::{metadata_matches, Document, Metadata, NodeWithScore};

/// KAITO's candidate pool: each retriever returns 3 × the results asked.
const CANDIDATE_MULTIPLIER: usize = 3;

#[derive(Clone, Debug, PartialEq)]
pub struct StoredDoc {
    pub doc_id: String,
    pub text: String,
    pub metadata: Metadata,
    pub hash_value: String,
    /// Slots of its chunks, in text order.
    pub slots: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChunkRec {
    pub doc_id: String,
    pub position: usize,
    pub start_byte: usize,
    pub text: String,
}

impl ChunkRec {
    pub fn node_id(&self) -> String {
        format!(
            "{}-{}",
            &self.doc_id[..self.doc_id.len().min(16)],
            self.position
        )
    }
}

/// A chunk of a document to add, with its embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct NewChunk {
    pub start_byte: usize,
    pub text: String,
    pub vector: Vec<f32>,
}

/// One retrieval result, with what the prompt builder needs to order it.
#[derive(Clone, Debug)]
pub struct Hit {
    pub chunk: ChunkRec,
    pub metadata: Metadata,
    pub fused: Fused,
}

impl Hit {
    pub fn to_node(&self) -> NodeWithScore {
        NodeWithScore {
            doc_id: self.chunk.doc_id.clone(),
            node_id: self.chunk.node_id(),
            text: self.chunk.text.clone(),
            score: self.fused.score,
            dense_score: Some(self.fused.dense_score),
            sparse_score: Some(self.fused.sparse_score),
            source: Some(self.fused.source.as_str()),
            metadata: (!self.metadata.is_empty()).then(|| self.metadata.clone()),
        }
    }
}

/// sha256 of the text, hex: KAITO's doc id.
pub fn doc_id_of(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// sha256 over text and metadata: changes when either does (`hash_value`).
pub fn content_hash(text: &str, metadata: &Metadata) -> String {
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    h.update([0u8]);
    h.update(serde_json::to_vec(metadata).unwrap_or_default());
    hex::encode(h.finalize())
}

pub struct Index {
    docs: IndexMap<String, StoredDoc>,
    chunks: HashMap<usize, ChunkRec>,
    dense: DenseIndex,
    sparse: SparseIndex,
}

impl Index {
    pub fn new(dim: usize) -> Self {
        Index {
            docs: IndexMap::new(),
            chunks: HashMap::new(),
            dense: DenseIndex::new(dim),
            sparse: SparseIndex::default(),
        }
    }

    /// Built in one go (loading from disk): one HNSW build, one BM25 fit.
    pub fn from_documents(
        dim: usize,
        docs: Vec<(String, String, Metadata, Vec<NewChunk>)>,
    ) -> Self {
        let mut ix = Index::new(dim);
        let vectors: Vec<Vec<f32>> = docs
            .iter()
            .flat_map(|d| d.3.iter().map(|c| c.vector.clone()))
            .collect();
        let mut slots = ix.dense.add(&vectors).into_iter();
        for (doc_id, text, metadata, chunks) in docs {
            let doc_slots: Vec<usize> = slots.by_ref().take(chunks.len()).collect();
            assert_eq!(doc_slots.len(), chunks.len(), "one slot per chunk");
            ix.record(&doc_id, text, metadata, chunks, doc_slots);
        }
        ix.sparse = SparseIndex::build(ix.chunks.iter().map(|(s, c)| (*s, c.text.as_str())));
        ix
    }

    pub fn dim(&self) -> usize {
        self.dense.dim()
    }

    pub fn num_docs(&self) -> usize {
        self.docs.len()
    }

    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }

    pub fn contains(&self, doc_id: &str) -> bool {
        self.docs.contains_key(doc_id)
    }

    pub fn get(&self, doc_id: &str) -> Option<&StoredDoc> {
        self.docs.get(doc_id)
    }

    /// Documents in order with their chunks and vectors (for persistence).
    pub fn documents(&self) -> impl Iterator<Item = (&StoredDoc, Vec<(&ChunkRec, &[f32])>)> {
        self.docs.values().map(|d| {
            let chunks = d
                .slots
                .iter()
                .map(|s| (&self.chunks[s], self.dense.vector(*s)))
                .collect();
            (d, chunks)
        })
    }

    /// Adds a document (or replaces one with the same id, keeping its place).
    pub fn put(&mut self, doc_id: &str, text: String, metadata: Metadata, chunks: Vec<NewChunk>) {
        if let Some(old) = self.docs.get(doc_id) {
            for s in old.slots.clone() {
                self.drop_chunk(s);
            }
        }
        let vectors: Vec<Vec<f32>> = chunks.iter().map(|c| c.vector.clone()).collect();
        let slots = self.dense.add(&vectors);
        for (c, &slot) in chunks.iter().zip(&slots) {
            self.sparse.upsert(slot, &c.text);
        }
        self.record(doc_id, text, metadata, chunks, slots);
        self.refit_sparse_if_drifted();
    }

    /// Files a document's chunks (already in the dense index at `slots`,
    /// in order) and the document itself, replacing one with the same id
    /// in place.
    fn record(
        &mut self,
        doc_id: &str,
        text: String,
        metadata: Metadata,
        chunks: Vec<NewChunk>,
        slots: Vec<usize>,
    ) {
        for (position, (c, &slot)) in chunks.into_iter().zip(&slots).enumerate() {
            let rec = ChunkRec {
                doc_id: doc_id.to_string(),
                position,
                start_byte: c.start_byte,
                text: c.text,
            };
            self.chunks.insert(slot, rec);
        }
        let doc = StoredDoc {
            hash_value: content_hash(&text, &metadata),
            doc_id: doc_id.to_string(),
            text,
            metadata,
            slots,
        };
        self.docs.insert(doc_id.to_string(), doc);
    }

    /// Removes a document and its chunks; false if it was not there.
    pub fn remove(&mut self, doc_id: &str) -> bool {
        let Some(doc) = self.docs.shift_remove(doc_id) else {
            return false;
        };
        for s in doc.slots {
            self.drop_chunk(s);
        }
        self.refit_sparse_if_drifted();
        true
    }

    fn drop_chunk(&mut self, slot: usize) {
        self.chunks.remove(&slot);
        self.dense.remove(slot);
        self.sparse.remove(slot);
    }

    fn refit_sparse_if_drifted(&mut self) {
        if self.sparse.needs_refit() {
            self.sparse =
                SparseIndex::build(self.chunks.iter().map(|(s, c)| (*s, c.text.as_str())));
        }
    }

    /// Dense top 10 as searched and by exact scan (recall measurement).
    pub fn dense_top10_pair(&self, q: &[f32]) -> (Vec<usize>, Vec<usize>) {
        let approx = self
            .dense
            .search(q, 10, None)
            .into_iter()
            .map(|h| h.0)
            .collect();
        let live = |s: usize| self.dense.is_live(s);
        let exact = self
            .dense
            .exact(q, 10, live)
            .into_iter()
            .map(|h| h.0)
            .collect();
        (approx, exact)
    }

    /// A page of documents matching `filter`, and how many match in all.
    pub fn list(
        &self,
        offset: usize,
        limit: usize,
        max_text_length: Option<usize>,
        filter: Option<&Metadata>,
    ) -> (Vec<Document>, usize) {
        let matching: Vec<&StoredDoc> = self
            .docs
            .values()
            .filter(|d| filter.is_none_or(|f| metadata_matches(&d.metadata, f)))
            .collect();
        let page = matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|d| {
                let (text, is_truncated) = truncate_chars(&d.text, max_text_length);
                Document {
                    doc_id: d.doc_id.clone(),
                    text,
                    metadata: d.metadata.clone(),
                    hash_value: Some(d.hash_value.clone()),
                    is_truncated,
                }
            })
            .collect();
        (page, matching.len())
    }

    /// Hybrid retrieval: dense and BM25 candidates, fused, best `k` first.
    pub fn retrieve(
        &self,
        query: &str,
        query_vector: &[f32],
        k: usize,
        filter: Option<&Metadata>,
    ) -> Vec<Hit> {
        let pool = k * CANDIDATE_MULTIPLIER;
        let allowed: Option<HashSet<usize>> = filter.map(|f| {
            self.docs
                .values()
                .filter(|d| metadata_matches(&d.metadata, f))
                .flat_map(|d| d.slots.iter().copied())
                .collect()
        });
        let admits = |s: usize| allowed.as_ref().is_none_or(|a| a.contains(&s));
        let dense = match &allowed {
            Some(a) => self
                .dense
                .search(query_vector, pool, Some((&admits, a.len()))),
            None => self.dense.search(query_vector, pool, None),
        };
        let sparse: Vec<usize> = self
            .sparse
            .search(query, pool, admits)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        fuse(&dense, &sparse, k, |s| {
            super::dense::dot(query_vector, self.dense.vector(s))
        })
        .into_iter()
        .map(|fused| {
            let chunk = self.chunks[&fused.slot].clone();
            let metadata = self.docs[&chunk.doc_id].metadata.clone();
            Hit {
                chunk,
                metadata,
                fused,
            }
        })
        .collect()
    }
}

/// The first `max` characters (Python slicing counts code points).
fn truncate_chars(text: &str, max: Option<usize>) -> (String, bool) {
    match max.and_then(|m| text.char_indices().nth(m)) {
        Some((cut, _)) => (text[..cut].to_string(), true),
        None => (text.to_string(), false),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rag::testing::toy_vector;
    use serde_json::json;

    pub fn add(index: &mut Index, text: &str, metadata: serde_json::Value) -> String {
        let id = doc_id_of(text);
        let chunks = text
            .split("\n\n")
            .scan(0, |pos, part| {
                let start = *pos;
                *pos += part.len() + 2;
                Some(NewChunk {
                    start_byte: start,
                    text: part.to_string(),
                    vector: toy_vector(part),
                })
            })
            .collect();
        index.put(
            &id,
            text.to_string(),
            metadata.as_object().unwrap().clone(),
            chunks,
        );
        id
    }

    #[test]
    fn doc_ids_are_sha256_hex() {
        assert_eq!(
            doc_id_of("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn list_pages_filters_and_truncates() {
        let mut ix = Index::new(26);
        add(&mut ix, "alpha document", json!({"lang": "en"}));
        add(&mut ix, "beta document", json!({"lang": "de"}));
        add(&mut ix, "gamma ünïcode text", json!({"lang": "en"}));
        let (page, total) = ix.list(0, 10, Some(1000), None);
        assert_eq!((page.len(), total), (3, 3));
        assert_eq!(page[0].text, "alpha document");
        let en = json!({"lang": "en"}).as_object().unwrap().clone();
        let (page, total) = ix.list(1, 1, Some(7), Some(&en));
        assert_eq!(total, 2);
        assert_eq!(page[0].text, "gamma ü");
        assert!(page[0].is_truncated);
        assert!(page[0].hash_value.is_some());
    }

    #[test]
    fn updates_and_deletes_show_in_retrieval_at_once() {
        let mut ix = Index::new(26);
        let a = add(&mut ix, "zebra zoo", json!({}));
        let b = add(&mut ix, "apple banana\n\nbanana bread", json!({"k": 1}));
        let hits = ix.retrieve("zebra", &toy_vector("zebra"), 5, None);
        assert_eq!(hits[0].chunk.doc_id, a);
        assert_eq!(ix.num_chunks(), 3);
        // Update b in place: same id, new text.
        ix.put(
            &b,
            "zebra zebra zoo zone".into(),
            Default::default(),
            vec![NewChunk {
                start_byte: 0,
                text: "zebra zebra zoo zone".into(),
                vector: toy_vector("zebra zebra zoo zone"),
            }],
        );
        assert_eq!(ix.num_chunks(), 2);
        assert_eq!(ix.list(0, 10, None, None).0[1].doc_id, b, "keeps its place");
        assert!(ix.remove(&a));
        assert!(!ix.remove(&a));
        let hits = ix.retrieve("zebra", &toy_vector("zebra"), 5, None);
        assert!(hits.iter().all(|h| h.chunk.doc_id == b));
    }

    #[test]
    fn retrieval_honours_the_metadata_filter() {
        let mut ix = Index::new(26);
        add(&mut ix, "red apples", json!({"color": "red"}));
        let green = add(&mut ix, "green apples", json!({"color": "green"}));
        let f = json!({"color": "green"}).as_object().unwrap().clone();
        let hits = ix.retrieve("red apples", &toy_vector("red apples"), 5, Some(&f));
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].chunk.doc_id, green);
        let node = hits[0].to_node();
        assert_eq!(node.metadata.unwrap()["color"], "green");
        assert!(
            (node.score - (0.7 * node.dense_score.unwrap() + 0.3 * node.sparse_score.unwrap()))
                .abs()
                < 1e-6
        );
    }
}
