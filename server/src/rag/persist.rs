//! The on-disk format of an index and how it is written: never in place.
//!
//! An index is a directory of three files:
//! - `manifest.json`: format name and version, embedding model and
//!   dimension, counts, and the sha256 of the two data files;
//! - `documents.jsonl`: one document per line (id, text, metadata, chunks
//!   with their text and byte offset), in list order;
//! - `vectors.f32`: every chunk's vector, little-endian f32, in the order
//!   the chunks appear in `documents.jsonl`.
//!
//! The BM25 and HNSW structures are derived data, rebuilt on load, so the
//! format does not depend on either crate's own serialisation.
//!
//! Each snapshot gets a random `snapshot_id` (absent, read as 0, in those
//! written before it existed): the index's write-ahead log names the
//! snapshot it continues (`wal.rs`).
//!
//! Writing goes to a temporary sibling directory; every file and the
//! directory are fsynced; then it is swapped with the old copy in one
//! `renameat2(RENAME_EXCHANGE)` (or, where the filesystem lacks it, two
//! renames), the parent is fsynced, and the old copy removed. A kill at
//! any point leaves the previous copy or the new one, each whole.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::RagError;
use super::index::{Index, NewChunk};
use super::types::Metadata;

pub const FORMAT: &str = "tandem-rag-index";
pub const VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const DOCUMENTS: &str = "documents.jsonl";
const VECTORS: &str = "vectors.f32";

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub index_name: String,
    pub embedding_model: String,
    pub dimension: usize,
    pub num_documents: usize,
    pub num_chunks: usize,
    pub documents_sha256: String,
    pub vectors_sha256: String,
    /// Which write-ahead log continues this snapshot (see `wal.rs`).
    #[serde(default)]
    pub snapshot_id: u64,
}

#[derive(Serialize, Deserialize)]
struct DocLine {
    doc_id: String,
    text: String,
    metadata: Metadata,
    chunks: Vec<ChunkLine>,
}

#[derive(Serialize, Deserialize)]
struct ChunkLine {
    start_byte: usize,
    text: String,
}

/// What a loaded index was made with.
pub struct Loaded {
    pub index: Index,
    pub manifest: Manifest,
}

/// True if `dir` holds a persisted index (has a manifest).
pub fn is_index_dir(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file()
}

/// Writes `index` to `target` atomically (see the module docs) under a
/// fresh snapshot id, which it returns.
pub fn persist(index: &Index, name: &str, model: &str, target: &Path) -> Result<u64, RagError> {
    let id = new_snapshot_id();
    persist_as(index, name, model, target, id).map(|_| id)
}

/// A random snapshot id, never 0 (0 means "no snapshot").
pub fn new_snapshot_id() -> u64 {
    rand::random::<u64>() | 1
}

/// [`persist`] under a given snapshot id.
pub fn persist_as(
    index: &Index,
    name: &str,
    model: &str,
    target: &Path,
    snapshot_id: u64,
) -> Result<(), RagError> {
    if target.exists() && !is_index_dir(target) {
        return Err(RagError::BadRequest(format!(
            "{} exists and is not a persisted index; choose another path",
            target.display()
        )));
    }
    write_atomically(target, |tmp| {
        write_files(index, name, model, tmp, snapshot_id)
    })
}

/// The snapshot id in `dir`'s manifest; `None` if it has none readable.
pub fn snapshot_id(dir: &Path) -> Option<u64> {
    let bytes = fs::read(dir.join(MANIFEST)).ok()?;
    let manifest: Manifest = serde_json::from_slice(&bytes).ok()?;
    Some(manifest.snapshot_id)
}

fn write_files(
    index: &Index,
    name: &str,
    model: &str,
    dir: &Path,
    snapshot_id: u64,
) -> std::io::Result<()> {
    let mut docs = HashingWriter::create(&dir.join(DOCUMENTS))?;
    let mut vecs = HashingWriter::create(&dir.join(VECTORS))?;
    let (mut num_documents, mut num_chunks) = (0, 0);
    for (doc, chunks) in index.documents() {
        let line = DocLine {
            doc_id: doc.doc_id.clone(),
            text: doc.text.clone(),
            metadata: doc.metadata.clone(),
            chunks: chunks
                .iter()
                .map(|(c, _)| ChunkLine {
                    start_byte: c.start_byte,
                    text: c.text.clone(),
                })
                .collect(),
        };
        serde_json::to_writer(&mut docs, &line)?;
        docs.write_all(b"\n")?;
        for (_, v) in &chunks {
            for x in v.iter() {
                vecs.write_all(&x.to_le_bytes())?;
            }
        }
        num_documents += 1;
        num_chunks += chunks.len();
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        index_name: name.into(),
        embedding_model: model.into(),
        dimension: index.dim(),
        num_documents,
        num_chunks,
        documents_sha256: docs.finish()?,
        vectors_sha256: vecs.finish()?,
        snapshot_id,
    };
    let mut m = File::create(dir.join(MANIFEST))?;
    serde_json::to_writer_pretty(&mut m, &manifest)?;
    m.sync_all()
}

/// Reads an index written by [`persist`], checking format, model and
/// checksums.
pub fn load(dir: &Path, model: &str, dim: usize) -> Result<Loaded, RagError> {
    let corrupt = |what: String| {
        RagError::BadRequest(format!("{} is not a loadable index: {what}", dir.display()))
    };
    if !dir.is_dir() {
        return Err(RagError::PathNotFound(dir.display().to_string()));
    }
    let manifest: Manifest = fs::read(dir.join(MANIFEST))
        .map_err(|e| corrupt(format!("cannot read {MANIFEST}: {e}")))
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| corrupt(format!("bad {MANIFEST}: {e}")))
        })?;
    if manifest.format != FORMAT {
        return Err(corrupt(format!(
            "format is {:?}, not {FORMAT:?}",
            manifest.format
        )));
    }
    if manifest.version != VERSION {
        return Err(corrupt(format!(
            "format version {} (this tandem reads version {VERSION}); use the tandem that wrote it",
            manifest.version
        )));
    }
    if manifest.embedding_model != model || manifest.dimension != dim {
        return Err(RagError::BadRequest(format!(
            "{} was embedded with {} ({} dimensions) but this server embeds with {model} \
             ({dim}); re-index the documents or serve with that embedding model",
            dir.display(),
            manifest.embedding_model,
            manifest.dimension
        )));
    }
    let docs_bytes = fs::read(dir.join(DOCUMENTS))?;
    let vec_bytes = fs::read(dir.join(VECTORS))?;
    if hex::encode(Sha256::digest(&docs_bytes)) != manifest.documents_sha256
        || hex::encode(Sha256::digest(&vec_bytes)) != manifest.vectors_sha256
    {
        return Err(corrupt("checksum mismatch".into()));
    }
    if vec_bytes.len() != manifest.num_chunks * dim * 4 {
        return Err(corrupt(format!("{VECTORS} has the wrong size")));
    }
    let mut floats = vec_bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let mut documents = Vec::with_capacity(manifest.num_documents);
    for line in BufReader::new(&docs_bytes[..]).lines() {
        // Reading from memory fails only on bytes that are not UTF-8: a
        // damaged file like any other (400), not a storage error (500).
        let line = line.map_err(|e| corrupt(format!("bad line in {DOCUMENTS}: {e}")))?;
        let line: DocLine = serde_json::from_str(&line)
            .map_err(|e| corrupt(format!("bad line in {DOCUMENTS}: {e}")))?;
        let chunks = line
            .chunks
            .into_iter()
            .map(|c| NewChunk {
                start_byte: c.start_byte,
                text: c.text,
                vector: floats.by_ref().take(dim).collect(),
            })
            .collect();
        documents.push((line.doc_id, line.text, line.metadata, chunks));
    }
    if documents.len() != manifest.num_documents {
        return Err(corrupt("document count differs from the manifest".into()));
    }
    Ok(Loaded {
        index: Index::from_documents(dim, documents),
        manifest,
    })
}

/// Runs `write` into a fresh temporary sibling of `target`, then swaps it
/// into place; see the module docs.
pub fn write_atomically(
    target: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), RagError> {
    let parent = target
        .parent()
        .ok_or_else(|| RagError::BadRequest("cannot persist to the filesystem root".into()))?;
    let name = target
        .file_name()
        .ok_or_else(|| RagError::BadRequest("the persist path has no final component".into()))?
        .to_string_lossy()
        .into_owned();
    fs::create_dir_all(parent)?;
    remove_stale_siblings(parent, &name);
    let tmp = parent.join(format!(
        ".{name}.tmp-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    fs::create_dir(&tmp)?;
    let result = write(&tmp)
        .and_then(|_| sync_dir(&tmp))
        .and_then(|_| swap_into_place(&tmp, target, parent, &name))
        .and_then(|_| sync_dir(parent));
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result.map_err(RagError::from)
}

/// Moves `tmp` to `target`; an old `target` ends up at `tmp` and is removed.
fn swap_into_place(tmp: &Path, target: &Path, parent: &Path, name: &str) -> std::io::Result<()> {
    if !target.exists() {
        return fs::rename(tmp, target);
    }
    match exchange(tmp, target) {
        Ok(()) => {}
        Err(e)
            if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOSYS) =>
        {
            // No RENAME_EXCHANGE here: a kill between these two renames
            // leaves the old copy under `.<name>.old-*`, which load finds.
            let old = parent.join(format!(".{name}.old-{:x}", rand::random::<u32>()));
            fs::rename(target, &old)?;
            fs::rename(tmp, target)?;
            let _ = fs::remove_dir_all(&old);
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    fs::remove_dir_all(tmp)
}

fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Temporary copies left by a writer that was killed.
fn remove_stale_siblings(parent: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    if let Ok(entries) = fs::read_dir(parent) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Removes the index at `target` and any copy a kill left beside it: the
/// directory is first renamed to a temporary name (which the next persist
/// to `target` clears away if a kill interrupts the removal), so a kill
/// never leaves a half-removed index that load would trip on.
pub fn remove(target: &Path) -> Result<(), RagError> {
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Ok(());
    };
    let name = name.to_string_lossy().into_owned();
    let mut doomed: Vec<PathBuf> = Vec::new();
    if target.exists() {
        let tmp = parent.join(format!(
            ".{name}.tmp-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::rename(target, &tmp)?;
        doomed.push(tmp);
    }
    while let Some(old) = orphaned_copy(target) {
        let tmp = parent.join(format!(".{name}.tmp-old-{:x}", rand::random::<u32>()));
        fs::rename(old, &tmp)?;
        doomed.push(tmp);
    }
    sync_dir(parent)?;
    for d in doomed {
        fs::remove_dir_all(d)?;
    }
    Ok(())
}

/// Where an index that a kill caught between two renames was left, if so.
pub fn orphaned_copy(target: &Path) -> Option<PathBuf> {
    let name = target.file_name()?.to_string_lossy().into_owned();
    let prefix = format!(".{name}.old-");
    fs::read_dir(target.parent()?)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A buffered file writer that hashes what it writes and fsyncs on finish.
struct HashingWriter {
    out: BufWriter<File>,
    hash: Sha256,
}

impl HashingWriter {
    fn create(path: &Path) -> std::io::Result<Self> {
        Ok(HashingWriter {
            out: BufWriter::with_capacity(1 << 20, File::create(path)?),
            hash: Sha256::new(),
        })
    }

    fn finish(self) -> std::io::Result<String> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(hex::encode(self.hash.finalize()))
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
