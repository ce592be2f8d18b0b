//! The indexes of one server and every operation on them, for the HTTP
//! routes, chat completions and the shutdown hook. Embedding (async, on the
//! embedder) happens before any lock is taken; the locks only cover memory
//! work, and disk work and token counting run on blocking threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indexmap::IndexMap;
use parking_lot::RwLock;

use super::embedder::Embedder;
use super::error::RagError;
use super::index::{content_hash, doc_id_of, Hit, Index, NewChunk};
use super::metrics::RagMetrics;
use super::paths::{canonical_root, resolve_index_dir, validate_index_name};
use super::persist;
use super::splitter::{self, SplitConfig};
use super::types::{DeleteDocumentResponse, Document, Metadata, UpdateDocumentResponse};

/// Where the retrieved chunks go in a RAG chat prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PromptOrder {
    /// The user's system prompt, then chunks by (doc_id, position), then
    /// the conversation: repeated questions share a long cached prefix.
    Stable,
    /// KAITO's: chunks by relevance before the system prompt (kept only to
    /// measure the difference).
    Kaito,
}

#[derive(Clone, Copy, Debug)]
pub struct ChatSettings {
    pub prompt_order: PromptOrder,
    /// Chunks less cosine-similar to the query than this are not used.
    pub min_similarity: f32,
}

type Shared = Arc<RwLock<Index>>;

pub struct RagService {
    embedder: Arc<dyn Embedder>,
    storage_root: PathBuf,
    indexes: RwLock<IndexMap<String, Shared>>,
    pub metrics: RagMetrics,
    pub chat: ChatSettings,
}

impl RagService {
    pub fn new(embedder: Arc<dyn Embedder>, storage_root: PathBuf, chat: ChatSettings) -> Self {
        RagService {
            embedder,
            storage_root,
            indexes: RwLock::new(IndexMap::new()),
            metrics: RagMetrics::new(),
            chat,
        }
    }

    pub fn storage_root(&self) -> &Path {
        &self.storage_root
    }

    fn get(&self, name: &str) -> Result<Shared, RagError> {
        validate_index_name(name)?;
        self.indexes
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| RagError::IndexNotFound(name.to_string()))
    }

    pub fn list_indexes(&self) -> Result<Vec<String>, RagError> {
        Ok(self.indexes.read().keys().cloned().collect())
    }

    /// Embeds texts, timing it for `rag_embedding_*`.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, RagError> {
        let start = Instant::now();
        let result = self.embedder.embed(texts).await;
        self.metrics
            .on_embed(result.is_ok(), start.elapsed().as_secs_f64());
        Ok(result?)
    }

    /// Splits a document into chunks (counting tokens: on a blocking
    /// thread) and embeds them.
    async fn chunk_and_embed(
        &self,
        text: &str,
        metadata: &Metadata,
    ) -> Result<Vec<NewChunk>, RagError> {
        let max = self.embedder.max_seq_length();
        let cfg = SplitConfig {
            chunk_tokens: max.saturating_sub(2).max(16),
            overlap_tokens: max / 8,
        };
        let embedder = self.embedder.clone();
        let (text, metadata) = (text.to_string(), metadata.clone());
        let chunks = run_blocking(move || {
            let count = |s: &str| embedder.count_tokens(s);
            splitter::split(&text, &metadata, &cfg, &count).map_err(|e| match e.param() {
                Some(field) => RagError::BadRequest(format!("{field}: {e}")),
                None => RagError::Internal(format!("splitting a document failed: {e}")),
            })
        })
        .await?;
        if chunks.is_empty() {
            // Empty text: listed, never retrieved (no embedding call).
            return Ok(Vec::new());
        }
        let vectors = self
            .embed(chunks.iter().map(|c| c.text.clone()).collect())
            .await?;
        Ok(chunks
            .into_iter()
            .zip(vectors)
            .map(|(c, vector)| NewChunk {
                start_byte: c.start_byte,
                text: c.text,
                vector,
            })
            .collect())
    }

    /// `POST /index`: adds the documents not yet in the index (by text
    /// hash), creating the index on first use. An empty list creates nothing.
    pub async fn index_documents(
        &self,
        name: &str,
        docs: Vec<Document>,
    ) -> Result<Vec<Document>, RagError> {
        validate_index_name(name)?;
        if docs.is_empty() {
            return Ok(Vec::new());
        }
        let existing = self.indexes.read().get(name).cloned();
        let mut out = Vec::with_capacity(docs.len());
        let mut new = Vec::new();
        for d in docs {
            let doc_id = doc_id_of(&d.text);
            let known = existing
                .as_ref()
                .is_some_and(|ix| ix.read().contains(&doc_id));
            if !known && !new.iter().any(|(id, _): &(String, Document)| *id == doc_id) {
                new.push((doc_id.clone(), d.clone()));
            }
            out.push(Document {
                hash_value: Some(content_hash(&d.text, &d.metadata)),
                doc_id,
                is_truncated: false,
                ..d
            });
        }
        let mut prepared = Vec::with_capacity(new.len());
        for (id, d) in new {
            let chunks = self.chunk_and_embed(&d.text, &d.metadata).await?;
            prepared.push((id, d, chunks));
        }
        let shared = {
            let mut map = self.indexes.write();
            map.entry(name.to_string())
                .or_insert_with(|| Arc::new(RwLock::new(Index::new(self.embedder.dimension()))))
                .clone()
        };
        let start = Instant::now();
        let mut ix = shared.write();
        for (id, d, chunks) in prepared {
            if !ix.contains(&id) {
                ix.put(&id, d.text, d.metadata, chunks);
            }
        }
        self.metrics
            .on_store_op("insert", true, start.elapsed().as_secs_f64());
        Ok(out)
    }

    pub fn list_documents(
        &self,
        name: &str,
        offset: usize,
        limit: usize,
        max_text_length: Option<usize>,
        filter: Option<&Metadata>,
    ) -> Result<(Vec<Document>, usize), RagError> {
        let ix = self.get(name)?;
        let ix = ix.read();
        Ok(ix.list(offset, limit, max_text_length, filter))
    }

    /// `POST /indexes/{name}/documents`: new text or metadata for known ids.
    pub async fn update_documents(
        &self,
        name: &str,
        docs: Vec<Document>,
    ) -> Result<UpdateDocumentResponse, RagError> {
        let shared = self.get(name)?;
        let mut resp = UpdateDocumentResponse::default();
        let mut changed = Vec::new();
        {
            let ix = shared.read();
            for d in docs {
                match ix.get(&d.doc_id) {
                    None => resp.not_found_documents.push(d),
                    Some(old) if old.hash_value == content_hash(&d.text, &d.metadata) => {
                        resp.unchanged_documents.push(d)
                    }
                    Some(_) => changed.push(d),
                }
            }
        }
        for d in changed {
            let chunks = self.chunk_and_embed(&d.text, &d.metadata).await?;
            let mut ix = shared.write();
            if ix.contains(&d.doc_id) {
                ix.put(&d.doc_id, d.text.clone(), d.metadata.clone(), chunks);
                resp.updated_documents.push(d);
            } else {
                resp.not_found_documents.push(d);
            }
        }
        Ok(resp)
    }

    pub fn delete_documents(
        &self,
        name: &str,
        ids: Vec<String>,
    ) -> Result<DeleteDocumentResponse, RagError> {
        let shared = self.get(name)?;
        let start = Instant::now();
        let mut ix = shared.write();
        let mut resp = DeleteDocumentResponse::default();
        for id in ids {
            if ix.remove(&id) {
                resp.deleted_doc_ids.push(id);
            } else {
                resp.not_found_doc_ids.push(id);
            }
        }
        self.metrics
            .on_store_op("delete", true, start.elapsed().as_secs_f64());
        Ok(resp)
    }

    pub fn delete_index(&self, name: &str) -> Result<(), RagError> {
        validate_index_name(name)?;
        self.indexes
            .write()
            .shift_remove(name)
            .map(|_| ())
            .ok_or_else(|| RagError::IndexNotFound(name.to_string()))
    }

    /// Hybrid retrieval of the `k` best chunks.
    pub async fn retrieve(
        &self,
        name: &str,
        query: &str,
        k: usize,
        filter: Option<&Metadata>,
    ) -> Result<Vec<Hit>, RagError> {
        let shared = self.get(name)?;
        if query.trim().is_empty() {
            return Err(RagError::BadRequest("Query string cannot be empty.".into()));
        }
        let start = Instant::now();
        let vector = self
            .embed(vec![query.to_string()])
            .await?
            .pop()
            .unwrap_or_default();
        let search_start = Instant::now();
        let hits = shared.read().retrieve(query, &vector, k, filter);
        self.metrics
            .on_store_op("query", true, search_start.elapsed().as_secs_f64());
        let scores: Vec<f32> = hits.iter().map(|h| h.fused.score).collect();
        self.metrics
            .on_retrieve(&scores, start.elapsed().as_secs_f64());
        Ok(hits)
    }

    /// `POST /persist/{name}`: returns the directory written.
    pub async fn persist(
        self: &Arc<Self>,
        name: &str,
        path: Option<&str>,
    ) -> Result<PathBuf, RagError> {
        let shared = self.get(name)?;
        let target = resolve_index_dir(&self.storage_root, name, path)?;
        let this = self.clone();
        let (name, dir) = (name.to_string(), target.clone());
        run_blocking(move || {
            let ix = shared.read();
            persist::persist(&ix, &name, this.embedder.model_name(), &dir)
        })
        .await?;
        Ok(target)
    }

    /// `POST /load/{name}`: 409 if the index exists and `overwrite` is off.
    pub async fn load(
        self: &Arc<Self>,
        name: &str,
        path: Option<&str>,
        overwrite: bool,
    ) -> Result<PathBuf, RagError> {
        validate_index_name(name)?;
        let mut dir = resolve_index_dir(&self.storage_root, name, path)?;
        if !dir.exists() {
            match persist::orphaned_copy(&dir) {
                Some(old) => dir = old,
                None => return Err(RagError::PathNotFound(path.unwrap_or(name).to_string())),
            }
        }
        if !overwrite && self.indexes.read().contains_key(name) {
            return Err(RagError::IndexExists(name.to_string()));
        }
        let (model, dim) = (
            self.embedder.model_name().to_string(),
            self.embedder.dimension(),
        );
        let src = dir.clone();
        let loaded = run_blocking(move || persist::load(&src, &model, dim)).await?;
        let mut map = self.indexes.write();
        if !overwrite && map.contains_key(name) {
            return Err(RagError::IndexExists(name.to_string()));
        }
        map.insert(name.to_string(), Arc::new(RwLock::new(loaded.index)));
        Ok(dir)
    }

    /// SIGTERM: every index to `<storage>/<name>` (KAITO's prestop hook).
    /// Returns how many were written; failures are logged and skipped.
    pub fn persist_all(&self) -> usize {
        let map = self.indexes.read();
        let mut written = 0;
        for (name, shared) in map.iter() {
            let result = resolve_index_dir(&self.storage_root, name, None).and_then(|dir| {
                let ix = shared.read();
                persist::persist(&ix, name, self.embedder.model_name(), &dir)
            });
            match result {
                Ok(()) => written += 1,
                Err(e) => {
                    tracing::error!(index = %name, error = %e, "could not persist the index at shutdown")
                }
            }
        }
        written
    }

    /// `--rag-load-on-start`: every index directory under the storage root.
    pub fn load_all(&self) -> Result<usize, RagError> {
        let root = canonical_root(&self.storage_root)?;
        let mut loaded = 0;
        for entry in std::fs::read_dir(&root)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if validate_index_name(&name).is_err() || !persist::is_index_dir(&entry.path()) {
                continue;
            }
            match persist::load(
                &entry.path(),
                self.embedder.model_name(),
                self.embedder.dimension(),
            ) {
                Ok(l) => {
                    tracing::info!(
                        index = %name,
                        documents = l.index.num_docs(),
                        chunks = l.index.num_chunks(),
                        format_version = l.manifest.version,
                        "loaded a stored RAG index"
                    );
                    self.indexes
                        .write()
                        .insert(name, Arc::new(RwLock::new(l.index)));
                    loaded += 1;
                }
                Err(e) => {
                    tracing::error!(index = %name, error = %e, "could not load the index at start")
                }
            }
        }
        Ok(loaded)
    }
}

/// Disk work and token counting, off the async runtime's threads.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RagError> + Send + 'static,
) -> Result<T, RagError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RagError::Internal(format!("a blocking task failed: {e}")))?
}

#[cfg(test)]
#[path = "service_tests.rs"]
pub(crate) mod tests;
