//! Durable indexes: the in-memory index of a name together with its
//! write-ahead log, and the rules that keep memory, the snapshot in
//! `<storage>/<name>` and the log `<storage>/<name>.wal` telling one story.
//!
//! - A write is logged (appended and fsynced) before it touches memory, so
//!   what a reader sees and what a client was told is on disk. The log
//!   lock is held from the append to the end of the apply, so the log's
//!   order is the order writes reached memory, and replay repeats it.
//! - Start-up (or `/load` of the default location) loads the snapshot and
//!   replays the log that names it.
//! - Compaction writes a snapshot under a new id, then starts an empty log
//!   naming it; a kill between the two leaves a log naming the old id,
//!   which is then ignored, not applied twice (`wal.rs`).
//! - Deleting an index writes a log holding only `Drop` (the point of no
//!   return), then removes the snapshot and the log.
//!
//! With `--rag-wal false` there is no log: memory only, snapshots on
//! `/persist` and at shutdown, as before the log existed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, MutexGuard, RwLock};

use super::error::RagError;
use super::index::Index;
use super::metrics::RagMetrics;
use super::paths::{canonical_root, resolve_index_dir};
use super::persist;
use super::wal::{Opened, Record, Wal};

/// Past this size a write compacts its index's log.
pub const DEFAULT_COMPACT_BYTES: u64 = 64 << 20;

/// One live index: its documents and the log its writes go through.
pub struct Entry {
    pub name: String,
    pub index: RwLock<Index>,
    log: Mutex<LogState>,
}

/// What only the holder of an index's log lock may touch.
pub struct LogState {
    wal: Option<Wal>,
    /// Deleted or replaced by a load: writers look the name up again.
    detached: bool,
    /// The index was created anew in memory: a `Reset` goes before its
    /// first logged write.
    pending_reset: bool,
    /// An append failed and left the log's end unknown: the next write
    /// compacts first (a snapshot of memory and a fresh log).
    needs_compaction: bool,
}

impl LogState {
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// The index was replaced by a load: later writes go to the new one.
    pub fn detach(&mut self) {
        self.detached = true;
    }
}

impl Entry {
    fn new(name: &str, index: Index, wal: Option<Wal>, pending_reset: bool) -> Self {
        Entry {
            name: name.to_string(),
            index: RwLock::new(index),
            log: Mutex::new(LogState {
                wal,
                detached: false,
                pending_reset,
                needs_compaction: false,
            }),
        }
    }

    /// The log lock: held by every write to this index, from the check
    /// that the index is still live to the end of the apply.
    pub fn lock_log(&self) -> MutexGuard<'_, LogState> {
        self.log.lock()
    }
}

/// Where and how a server's indexes are stored.
pub struct Store {
    root: PathBuf,
    model: String,
    dim: usize,
    wal: bool,
    pub compact_bytes: u64,
}

impl Store {
    pub fn new(root: PathBuf, model: &str, dim: usize, wal: bool) -> Self {
        Store {
            root,
            model: model.to_string(),
            dim,
            wal,
            compact_bytes: DEFAULT_COMPACT_BYTES,
        }
    }

    pub fn wal_enabled(&self) -> bool {
        self.wal
    }

    /// `<storage>/<name>`: the snapshot the log continues.
    pub fn index_dir(&self, name: &str) -> Result<PathBuf, RagError> {
        resolve_index_dir(&self.root, name, None)
    }

    /// `<storage>/<name>.wal`.
    pub fn wal_path(&self, name: &str) -> Result<PathBuf, RagError> {
        Ok(canonical_root(&self.root)?.join(format!("{name}.wal")))
    }

    /// The snapshot of `dir`: itself, or the copy a kill between two
    /// renames left beside it.
    fn snapshot_at(dir: &Path) -> Option<PathBuf> {
        if persist::is_index_dir(dir) {
            return Some(dir.to_path_buf());
        }
        persist::orphaned_copy(dir).filter(|d| persist::is_index_dir(d))
    }

    fn stored_snapshot_id(&self, name: &str) -> Result<u64, RagError> {
        let dir = self.index_dir(name)?;
        Ok(Self::snapshot_at(&dir)
            .and_then(|d| persist::snapshot_id(&d))
            .unwrap_or(0))
    }

    fn open_wal(&self, name: &str, snapshot_id: u64) -> Result<Opened, RagError> {
        let path = self.wal_path(name)?;
        let opened = Wal::open(&path, snapshot_id).map_err(|e| wal_error(&path, e))?;
        if opened.stale {
            tracing::warn!(index = %name, "ignored a write-ahead log that an existing snapshot already holds");
        }
        if opened.torn_bytes > 0 {
            tracing::warn!(index = %name, bytes = opened.torn_bytes, "cut off a write-ahead log record a crash left unfinished");
        }
        Ok(opened)
    }

    /// A new, empty index for `name` (its first write logs a `Reset`, so
    /// whatever was stored under the name before is superseded, as a
    /// snapshot of it at shutdown would supersede it).
    pub fn create(&self, name: &str) -> Result<Entry, RagError> {
        let wal = match self.wal {
            true => Some(self.open_wal(name, self.stored_snapshot_id(name)?)?.wal),
            false => None,
        };
        Ok(Entry::new(name, Index::new(self.dim), wal, true))
    }

    /// The index stored under `name`: its snapshot with its log replayed.
    /// `None` if nothing is stored, or what is stored ends deleted (the
    /// files a kill left mid-delete are then removed).
    pub fn open(&self, name: &str) -> Result<Option<(Entry, usize)>, RagError> {
        let dir = self.index_dir(name)?;
        let wal_path = self.wal_path(name)?;
        let snapshot = Self::snapshot_at(&dir);
        let has_log = self.wal && wal_path.exists();
        if snapshot.is_none() && !has_log {
            return Ok(None);
        }
        let loaded = match &snapshot {
            Some(d) => Some(persist::load(d, &self.model, self.dim)?),
            None => None,
        };
        let id = loaded.as_ref().map_or(0, |l| l.manifest.snapshot_id);
        let mut state = loaded.map(|l| l.index);
        let (mut wal, mut replayed) = (None, 0);
        if self.wal {
            let opened = self.open_wal(name, id)?;
            replayed = opened.records.len();
            state = replay(state, opened.records, self.dim);
            wal = Some(opened.wal);
        }
        match state {
            Some(index) => Ok(Some((Entry::new(name, index, wal, false), replayed))),
            None => {
                drop(wal);
                self.remove_files(name)?;
                Ok(None)
            }
        }
    }

    /// `index` (loaded from another path) becomes what is stored under
    /// `name`: a snapshot of it, and an empty log. Until the snapshot is
    /// in place the old snapshot and log stand.
    pub fn adopt(&self, name: &str, index: Index, metrics: &RagMetrics) -> Result<Entry, RagError> {
        if !self.wal {
            return Ok(Entry::new(name, index, None, false));
        }
        let wal = self.open_wal(name, self.stored_snapshot_id(name)?)?.wal;
        let entry = Entry::new(name, index, Some(wal), false);
        self.compact(&entry, &mut entry.lock_log(), metrics)?;
        Ok(entry)
    }

    /// Logs `record` and applies it to the entry's index; returns, per
    /// document or id, whether it changed the index. `log` is the entry's
    /// lock, held by the caller, and the entry is live.
    pub fn commit(
        &self,
        entry: &Entry,
        log: &mut LogState,
        record: Record,
        metrics: &RagMetrics,
    ) -> Result<Vec<bool>, RagError> {
        debug_assert!(!log.detached);
        if log.needs_compaction {
            self.compact(entry, log, metrics)?;
        }
        let (record, changes) = effective(&entry.index.read(), record);
        if record.is_empty() {
            return Ok(changes);
        }
        if let Some(wal) = log.wal.as_mut() {
            let reset = Record::Reset;
            let records = match log.pending_reset {
                true => vec![&reset, &record],
                false => vec![&record],
            };
            match wal.append(&records) {
                Ok(bytes) => metrics.on_wal_append(bytes),
                Err(e) => {
                    log.needs_compaction = true;
                    return Err(wal_error(wal.path(), e));
                }
            }
            log.pending_reset = false;
        }
        apply(&mut entry.index.write(), record);
        let full = log
            .wal
            .as_ref()
            .is_some_and(|w| w.size() > self.compact_bytes);
        if full {
            // The write is durable already; a failed compaction is retried
            // at the next one.
            if let Err(e) = self.compact(entry, log, metrics) {
                tracing::warn!(index = %entry.name, error = %e, "could not compact the write-ahead log");
            }
        }
        Ok(changes)
    }

    /// Writes the entry's snapshot to `<storage>/<name>` and empties its
    /// log. `log` is the entry's lock: no write can slip in between.
    pub fn compact(
        &self,
        entry: &Entry,
        log: &mut LogState,
        metrics: &RagMetrics,
    ) -> Result<(), RagError> {
        let dir = self.index_dir(&entry.name)?;
        let id = persist::new_snapshot_id();
        let written = persist::persist_as(&entry.index.read(), &entry.name, &self.model, &dir, id);
        let Some(wal) = log.wal.as_mut() else {
            return written;
        };
        if written.is_err() && persist::snapshot_id(&dir) != Some(id) {
            return written; // the old snapshot and its log still stand
        }
        log.pending_reset = false;
        match wal.restart(id) {
            Ok(()) => {
                log.needs_compaction = false;
                metrics.on_wal_compaction();
                written
            }
            Err(e) => {
                log.needs_compaction = true;
                Err(wal_error(wal.path(), e))
            }
        }
    }

    /// Deletes the stored index: a log of one `Drop` replaces the old log
    /// (from then on the index is gone for good), then the snapshot and
    /// the log are removed. The caller removes the entry from memory.
    pub fn drop_index(&self, entry: &Entry, log: &mut LogState) -> Result<(), RagError> {
        if self.wal {
            let path = self.wal_path(&entry.name)?;
            let id = self.stored_snapshot_id(&entry.name)?;
            if let Err(e) = Wal::create_with(&path, id, &[&Record::Drop]) {
                // The old log may have been renamed over: start afresh.
                log.needs_compaction = true;
                return Err(wal_error(&path, e));
            }
            log.wal = None;
            if let Err(e) = self.remove_files(&entry.name) {
                tracing::warn!(index = %entry.name, error = %e, "the index is deleted but its files are not all removed yet");
            }
        }
        log.detached = true;
        Ok(())
    }

    /// Removes `<storage>/<name>` (and copies a kill left), then the log.
    fn remove_files(&self, name: &str) -> Result<(), RagError> {
        persist::remove(&self.index_dir(name)?)?;
        let path = self.wal_path(name)?;
        super::wal::remove(&path).map_err(|e| wal_error(&path, e))
    }
}

/// The part of `record` that changes `ix`, and for each of its documents
/// or ids whether it is in that part (a text already indexed, an id not
/// there to update or delete are not; nor is a repeat within the record).
pub fn effective(ix: &Index, record: Record) -> (Record, Vec<bool>) {
    let mut seen = HashSet::new();
    match record {
        Record::Insert(docs) => {
            let (docs, changes) = split(docs, |d| {
                !ix.contains(&d.doc_id) && seen.insert(d.doc_id.clone())
            });
            (Record::Insert(docs), changes)
        }
        Record::Update(docs) => {
            let (docs, changes) = split(docs, |d| ix.contains(&d.doc_id));
            (Record::Update(docs), changes)
        }
        Record::Delete(ids) => {
            let (ids, changes) = split(ids, |id| ix.contains(id) && seen.insert(id.clone()));
            (Record::Delete(ids), changes)
        }
        other => (other, Vec::new()),
    }
}

fn split<T>(items: Vec<T>, mut keep: impl FnMut(&T) -> bool) -> (Vec<T>, Vec<bool>) {
    let mut kept = Vec::with_capacity(items.len());
    let mut changes = Vec::with_capacity(items.len());
    for item in items {
        let k = keep(&item);
        changes.push(k);
        if k {
            kept.push(item);
        }
    }
    (kept, changes)
}

/// Applies a write to an index. Each document or id is tested against
/// the index as it is then, so replaying a log on the snapshot it
/// continues repeats exactly what happened in memory.
pub fn apply(ix: &mut Index, record: Record) {
    match record {
        Record::Insert(docs) => {
            for d in docs {
                if !ix.contains(&d.doc_id) {
                    ix.put(&d.doc_id, d.text, d.metadata, d.chunks);
                }
            }
        }
        Record::Update(docs) => {
            for d in docs {
                if ix.contains(&d.doc_id) {
                    ix.put(&d.doc_id, d.text, d.metadata, d.chunks);
                }
            }
        }
        Record::Delete(ids) => {
            for id in ids {
                ix.remove(&id);
            }
        }
        Record::Reset | Record::Drop => {}
    }
}

/// The index after `records` (`None`: deleted, or never created).
pub fn replay(mut state: Option<Index>, records: Vec<Record>, dim: usize) -> Option<Index> {
    for record in records {
        match record {
            Record::Reset => state = Some(Index::new(dim)),
            Record::Drop => state = None,
            other => {
                if let Some(ix) = state.as_mut() {
                    apply(ix, other);
                }
            }
        }
    }
    state
}

fn wal_error(path: &Path, e: std::io::Error) -> RagError {
    RagError::Storage(format!(
        "could not write the write-ahead log {}: {e}",
        path.display()
    ))
}
