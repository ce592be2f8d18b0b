//! The indexes of one server and every operation on them, for the HTTP
//! routes, chat completions and the shutdown hook. Embedding (async, on the
//! embedder) happens before any lock is taken; the locks only cover memory
//! work, and disk work (the write-ahead log's fsyncs included) and token
//! counting run on blocking threads.
//!
//! Locks, always taken in this order: `lifecycle` (creating, deleting or
//! loading an index), an index's log lock (every write), its index lock;
//! the name map's lock is taken last and never held while waiting for
//! another.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indexmap::IndexMap;
use parking_lot::{Mutex, RwLock};

use super::durable::{Entry, Store};
use super::embedder::Embedder;
use super::error::RagError;
use super::index::{content_hash, doc_id_of, Hit, NewChunk};
use super::metrics::RagMetrics;
use super::paths::{canonical_root, resolve_index_dir, validate_index_name};
use super::persist;
use super::splitter::{self, SplitConfig};
use super::types::{DeleteDocumentResponse, Document, Metadata, UpdateDocumentResponse};
use super::wal::{DocRecord, Record};

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

type Shared = Arc<Entry>;

pub struct RagService {
    embedder: Arc<dyn Embedder>,
    storage_root: PathBuf,
    indexes: RwLock<IndexMap<String, Shared>>,
    /// Held while an index is created, deleted or replaced by a load.
    lifecycle: Mutex<()>,
    store: Store,
    pub metrics: RagMetrics,
    pub chat: ChatSettings,
}

impl RagService {
    pub fn new(embedder: Arc<dyn Embedder>, storage_root: PathBuf, chat: ChatSettings) -> Self {
        let store = Store::new(
            storage_root.clone(),
            embedder.model_name(),
            embedder.dimension(),
            true,
        );
        RagService {
            embedder,
            storage_root,
            indexes: RwLock::new(IndexMap::new()),
            lifecycle: Mutex::new(()),
            store,
            metrics: RagMetrics::new(),
            chat,
        }
    }

    /// `--rag-wal false`: no write-ahead log (writes live in memory until
    /// a persist, as before the log existed).
    pub fn with_wal(mut self, on: bool) -> Self {
        self.store = Store::new(
            self.storage_root.clone(),
            self.embedder.model_name(),
            self.embedder.dimension(),
            on,
        );
        self
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

    /// A document with its chunks embedded, ready to log and apply.
    async fn prepare(&self, doc_id: String, d: Document) -> Result<DocRecord, RagError> {
        let chunks = self.chunk_and_embed(&d.text, &d.metadata).await?;
        Ok(DocRecord {
            doc_id,
            text: d.text,
            metadata: d.metadata,
            chunks,
        })
    }

    /// The live index `name`, created (empty) if there is none.
    fn entry_or_create(&self, name: &str) -> Result<Shared, RagError> {
        if let Some(e) = self.indexes.read().get(name) {
            return Ok(e.clone());
        }
        let _life = self.lifecycle.lock();
        if let Some(e) = self.indexes.read().get(name) {
            return Ok(e.clone());
        }
        let entry = Arc::new(self.store.create(name)?);
        self.indexes.write().insert(name.to_string(), entry.clone());
        Ok(entry)
    }

    /// Logs and applies a write (blocking: the log is fsynced), creating
    /// the index if `create`, else 404 without it. An index deleted or
    /// replaced meanwhile is looked up again.
    fn write(&self, name: &str, record: Record, create: bool) -> Result<Vec<bool>, RagError> {
        loop {
            let entry = match create {
                true => self.entry_or_create(name)?,
                false => self.get(name)?,
            };
            let mut log = entry.lock_log();
            if log.is_detached() {
                continue;
            }
            return self.store.commit(&entry, &mut log, record, &self.metrics);
        }
    }

    /// [`Self::write`] on a blocking thread, timed as store operation
    /// `op` if given (KAITO's operations are insert, query and delete).
    async fn write_blocking(
        self: &Arc<Self>,
        name: &str,
        record: Record,
        create: bool,
        op: Option<&'static str>,
    ) -> Result<Vec<bool>, RagError> {
        let (this, name) = (self.clone(), name.to_string());
        let start = Instant::now();
        let result = run_blocking(move || this.write(&name, record, create)).await;
        if let Some(op) = op {
            self.metrics
                .on_store_op(op, result.is_ok(), start.elapsed().as_secs_f64());
        }
        result
    }

    /// `POST /index`: adds the documents not yet in the index (by text
    /// hash), creating the index on first use. An empty list creates
    /// nothing. Answers once the new documents are in the log.
    pub async fn index_documents(
        self: &Arc<Self>,
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
                .is_some_and(|e| e.index.read().contains(&doc_id));
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
        if new.is_empty() {
            return Ok(out);
        }
        let mut prepared = Vec::with_capacity(new.len());
        for (id, d) in new {
            prepared.push(self.prepare(id, d).await?);
        }
        self.write_blocking(name, Record::Insert(prepared), true, Some("insert"))
            .await?;
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
        let entry = self.get(name)?;
        let ix = entry.index.read();
        Ok(ix.list(offset, limit, max_text_length, filter))
    }

    /// `POST /indexes/{name}/documents`: new text or metadata for known ids.
    pub async fn update_documents(
        self: &Arc<Self>,
        name: &str,
        docs: Vec<Document>,
    ) -> Result<UpdateDocumentResponse, RagError> {
        let entry = self.get(name)?;
        let mut resp = UpdateDocumentResponse::default();
        let mut changed = Vec::new();
        {
            let ix = entry.index.read();
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
        if changed.is_empty() {
            return Ok(resp);
        }
        let mut prepared = Vec::with_capacity(changed.len());
        for d in &changed {
            prepared.push(self.prepare(d.doc_id.clone(), d.clone()).await?);
        }
        let applied = self
            .write_blocking(name, Record::Update(prepared), false, None)
            .await?;
        for (d, ok) in changed.into_iter().zip(applied) {
            match ok {
                true => resp.updated_documents.push(d),
                false => resp.not_found_documents.push(d),
            }
        }
        Ok(resp)
    }

    /// `POST /indexes/{name}/documents/delete`.
    pub async fn delete_documents(
        self: &Arc<Self>,
        name: &str,
        ids: Vec<String>,
    ) -> Result<DeleteDocumentResponse, RagError> {
        self.get(name)?;
        let deleted = self
            .write_blocking(name, Record::Delete(ids.clone()), false, Some("delete"))
            .await?;
        let mut resp = DeleteDocumentResponse::default();
        for (id, ok) in ids.into_iter().zip(deleted) {
            match ok {
                true => resp.deleted_doc_ids.push(id),
                false => resp.not_found_doc_ids.push(id),
            }
        }
        Ok(resp)
    }

    /// `DELETE /indexes/{name}`: with the log on, its stored copy under
    /// `<storage>/<name>` goes too, so it stays deleted after a restart.
    pub async fn delete_index(self: &Arc<Self>, name: &str) -> Result<(), RagError> {
        validate_index_name(name)?;
        let (this, name) = (self.clone(), name.to_string());
        run_blocking(move || {
            let _life = this.lifecycle.lock();
            let entry = this.get(&name)?;
            let mut log = entry.lock_log();
            this.store.drop_index(&entry, &mut log)?;
            this.indexes.write().shift_remove(&name);
            Ok(())
        })
        .await
    }

    /// Hybrid retrieval of the `k` best chunks.
    pub async fn retrieve(
        &self,
        name: &str,
        query: &str,
        k: usize,
        filter: Option<&Metadata>,
    ) -> Result<Vec<Hit>, RagError> {
        let entry = self.get(name)?;
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
        let hits = entry.index.read().retrieve(query, &vector, k, filter);
        self.metrics
            .on_store_op("query", true, search_start.elapsed().as_secs_f64());
        let scores: Vec<f32> = hits.iter().map(|h| h.fused.score).collect();
        self.metrics
            .on_retrieve(&scores, start.elapsed().as_secs_f64());
        Ok(hits)
    }

    /// `POST /persist/{name}`: returns the directory written. To the
    /// default `<storage>/<name>` it is a compaction (the log starts over).
    pub async fn persist(
        self: &Arc<Self>,
        name: &str,
        path: Option<&str>,
    ) -> Result<PathBuf, RagError> {
        let entry = self.get(name)?;
        let target = resolve_index_dir(&self.storage_root, name, path)?;
        let to_default = target == self.store.index_dir(name)?;
        if !to_default {
            self.refuse_other_index_home(name, &target)?;
        }
        let (this, dir) = (self.clone(), target.clone());
        run_blocking(move || {
            if to_default {
                let mut log = entry.lock_log();
                if log.is_detached() {
                    return Err(RagError::IndexNotFound(entry.name.clone()));
                }
                return this.store.compact(&entry, &mut log, &this.metrics);
            }
            let ix = entry.index.read();
            persist::persist(&ix, &entry.name, this.embedder.model_name(), &dir).map(|_| ())
        })
        .await?;
        Ok(target)
    }

    /// With the log on, `<storage>/<other>` is where index `other` lives
    /// (or its log's snapshot): persisting another index there would
    /// orphan its log.
    fn refuse_other_index_home(&self, name: &str, target: &Path) -> Result<(), RagError> {
        if !self.store.wal_enabled()
            || target.parent() != Some(&canonical_root(&self.storage_root)?)
        {
            return Ok(());
        }
        let other = target.file_name().unwrap_or_default().to_string_lossy();
        let taken = validate_index_name(&other).is_ok()
            && other != name
            && (self.indexes.read().contains_key(other.as_ref())
                || self.store.wal_path(&other)?.exists());
        match taken {
            true => Err(RagError::BadRequest(format!(
                "{} is where index {other:?} is stored; persist to another path",
                target.display()
            ))),
            false => Ok(()),
        }
    }

    /// `POST /load/{name}`: 409 if the index exists and `overwrite` is off.
    /// From the default `<storage>/<name>`, the snapshot with its log
    /// replayed; from elsewhere, the copy there, which then becomes what is
    /// stored under the name.
    pub async fn load(
        self: &Arc<Self>,
        name: &str,
        path: Option<&str>,
        overwrite: bool,
    ) -> Result<PathBuf, RagError> {
        validate_index_name(name)?;
        let mut dir = resolve_index_dir(&self.storage_root, name, path)?;
        let from_default = dir == self.store.index_dir(name)?;
        let missing = || RagError::PathNotFound(path.unwrap_or(name).to_string());
        if !from_default && !dir.exists() {
            dir = persist::orphaned_copy(&dir).ok_or_else(missing)?;
        }
        if !overwrite && self.indexes.read().contains_key(name) {
            return Err(RagError::IndexExists(name.to_string()));
        }
        let (this, src, name, missing) = (self.clone(), dir.clone(), name.to_string(), missing());
        run_blocking(move || this.load_blocking(&name, &src, from_default, overwrite, missing))
            .await?;
        Ok(dir)
    }

    fn load_blocking(
        &self,
        name: &str,
        src: &Path,
        from_default: bool,
        overwrite: bool,
        missing: RagError,
    ) -> Result<(), RagError> {
        let _life = self.lifecycle.lock();
        let old = self.indexes.read().get(name).cloned();
        if old.is_some() && !overwrite {
            return Err(RagError::IndexExists(name.to_string()));
        }
        // Writes to the old index wait until it is replaced, then go to
        // the new one.
        let mut old_log = old.as_ref().map(|e| e.lock_log());
        let entry = if from_default {
            self.store.open(name)?.ok_or(missing)?.0
        } else {
            let loaded = persist::load(src, self.embedder.model_name(), self.embedder.dimension())?;
            self.store.adopt(name, loaded.index, &self.metrics)?
        };
        if let Some(log) = old_log.as_mut() {
            log.detach();
        }
        self.indexes
            .write()
            .insert(name.to_string(), Arc::new(entry));
        Ok(())
    }

    /// SIGTERM: every index to `<storage>/<name>` (KAITO's prestop hook),
    /// emptying its log. Returns how many were written; failures are
    /// logged and skipped.
    pub fn persist_all(&self) -> usize {
        let entries: Vec<Shared> = self.indexes.read().values().cloned().collect();
        let mut written = 0;
        for entry in entries {
            let mut log = entry.lock_log();
            if log.is_detached() {
                continue;
            }
            match self.store.compact(&entry, &mut log, &self.metrics) {
                Ok(()) => written += 1,
                Err(e) => {
                    tracing::error!(index = %entry.name, error = %e, "could not persist the index at shutdown")
                }
            }
        }
        written
    }

    /// `--rag-load-on-start`: every index stored under the storage root (a
    /// snapshot directory, a log, or both), its log replayed.
    pub fn load_all(&self) -> Result<usize, RagError> {
        let root = canonical_root(&self.storage_root)?;
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(&root)?.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let (name, stored) = match file.strip_suffix(".wal") {
                Some(stem) => (stem.to_string(), self.store.wal_enabled()),
                None => (file.clone(), persist::is_index_dir(&entry.path())),
            };
            if stored && validate_index_name(&name).is_ok() {
                names.insert(name);
            }
        }
        let _life = self.lifecycle.lock();
        let mut loaded = 0;
        for name in names {
            match self.store.open(&name) {
                Ok(Some((entry, replayed))) => {
                    let ix = entry.index.read();
                    tracing::info!(
                        index = %name,
                        documents = ix.num_docs(),
                        chunks = ix.num_chunks(),
                        log_records = replayed,
                        "loaded a stored RAG index"
                    );
                    drop(ix);
                    self.indexes.write().insert(name, Arc::new(entry));
                    loaded += 1;
                }
                Ok(None) => {}
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

#[cfg(test)]
#[path = "durable_tests.rs"]
mod durable_tests;
