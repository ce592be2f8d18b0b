//! The write-ahead log of one index: every acknowledged write, appended and
//! fsynced before the client hears 200, so a `kill -9` loses none of them.
//!
//! `<storage>/<name>.wal` is a 16-byte header — the magic `TNDMWAL1` and
//! the id of the snapshot the log extends (`snapshot_id` in that
//! snapshot's manifest; 0: no snapshot) — then records, each framed as
//! `[u32 length][u32 crc32 of the payload][payload]` (little-endian). A
//! payload is `[u32 n][n bytes of JSON head][the chunk vectors, f32 LE]`:
//! the head says what the write did (documents with their chunks' text,
//! or ids), the vectors follow in the order the head lists the chunks.
//!
//! Reading stops at the first record that is short or fails its checksum:
//! a write a crash cut off. It was never acknowledged (acknowledgement
//! waits for the fsync), so it is dropped and the file cut back to the
//! records before it.
//!
//! A log whose header names another snapshot than the one on disk is stale
//! (a crash fell between writing a snapshot and starting its empty log):
//! every record in it is already in that snapshot, so it is ignored and
//! replaced rather than applied twice.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::index::NewChunk;
use super::types::Metadata;

const MAGIC: &[u8; 8] = b"TNDMWAL1";
pub const HEADER_LEN: u64 = 16;
const FRAME_LEN: usize = 8;

/// One logical write to an index, as logged and as replayed.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// The index starts over, empty (it was created anew in memory).
    Reset,
    /// The index is deleted.
    Drop,
    /// Add each document whose id the index lacks.
    Insert(Vec<DocRecord>),
    /// Replace each document whose id the index has.
    Update(Vec<DocRecord>),
    /// Remove each of these ids the index has.
    Delete(Vec<String>),
}

impl Record {
    /// True for a write that changes nothing (not worth a log record).
    pub fn is_empty(&self) -> bool {
        match self {
            Record::Reset | Record::Drop => false,
            Record::Insert(d) | Record::Update(d) => d.is_empty(),
            Record::Delete(ids) => ids.is_empty(),
        }
    }
}

/// A document as written: its id, text, metadata and embedded chunks.
#[derive(Clone, Debug, PartialEq)]
pub struct DocRecord {
    pub doc_id: String,
    pub text: String,
    pub metadata: Metadata,
    pub chunks: Vec<NewChunk>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Head {
    Reset,
    Drop,
    Insert { docs: Vec<DocHead> },
    Update { docs: Vec<DocHead> },
    Delete { ids: Vec<String> },
}

#[derive(Serialize, Deserialize)]
struct DocHead {
    doc_id: String,
    text: String,
    metadata: Metadata,
    chunks: Vec<ChunkHead>,
}

#[derive(Serialize, Deserialize)]
struct ChunkHead {
    start_byte: usize,
    text: String,
    /// How many floats of the vector tail are this chunk's.
    dim: usize,
}

/// The payload of one record (see the module docs).
pub fn encode(record: &Record) -> Vec<u8> {
    let mut vectors = Vec::new();
    let mut heads = |docs: &[DocRecord]| -> Vec<DocHead> {
        docs.iter()
            .map(|d| DocHead {
                doc_id: d.doc_id.clone(),
                text: d.text.clone(),
                metadata: d.metadata.clone(),
                chunks: d
                    .chunks
                    .iter()
                    .map(|c| {
                        vectors.extend(c.vector.iter().flat_map(|x| x.to_le_bytes()));
                        ChunkHead {
                            start_byte: c.start_byte,
                            text: c.text.clone(),
                            dim: c.vector.len(),
                        }
                    })
                    .collect(),
            })
            .collect()
    };
    let head = match record {
        Record::Reset => Head::Reset,
        Record::Drop => Head::Drop,
        Record::Insert(d) => Head::Insert { docs: heads(d) },
        Record::Update(d) => Head::Update { docs: heads(d) },
        Record::Delete(ids) => Head::Delete { ids: ids.clone() },
    };
    let json = serde_json::to_vec(&head).expect("a record head serialises");
    let mut out = Vec::with_capacity(4 + json.len() + vectors.len());
    out.extend((json.len() as u32).to_le_bytes());
    out.extend(json);
    out.extend(vectors);
    out
}

/// A payload back into its record; `None` if it does not parse.
pub fn decode(payload: &[u8]) -> Option<Record> {
    let n = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    let head: Head = serde_json::from_slice(payload.get(4..4 + n)?).ok()?;
    let mut floats = payload[4 + n..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let mut docs = |heads: Vec<DocHead>| -> Option<Vec<DocRecord>> {
        heads
            .into_iter()
            .map(|d| {
                let chunks = d
                    .chunks
                    .into_iter()
                    .map(|c| {
                        let vector: Vec<f32> = floats.by_ref().take(c.dim).collect();
                        (vector.len() == c.dim).then_some(NewChunk {
                            start_byte: c.start_byte,
                            text: c.text,
                            vector,
                        })
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(DocRecord {
                    doc_id: d.doc_id,
                    text: d.text,
                    metadata: d.metadata,
                    chunks,
                })
            })
            .collect()
    };
    let record = match head {
        Head::Reset => Record::Reset,
        Head::Drop => Record::Drop,
        Head::Insert { docs: d } => Record::Insert(docs(d)?),
        Head::Update { docs: d } => Record::Update(docs(d)?),
        Head::Delete { ids } => Record::Delete(ids),
    };
    let rest_is_empty = floats.next().is_none();
    rest_is_empty.then_some(record)
}

/// One framed record: length, checksum, payload.
pub fn frame(record: &Record) -> Vec<u8> {
    let payload = encode(record);
    let mut out = Vec::with_capacity(FRAME_LEN + payload.len());
    out.extend((payload.len() as u32).to_le_bytes());
    out.extend(crc32fast::hash(&payload).to_le_bytes());
    out.extend(payload);
    out
}

/// The records framed in `body` (the log after its header), and how many
/// bytes of it they fill: reading stops at the first short, corrupt or
/// unparsable record, and everything from there on is the torn tail.
pub fn read_records(body: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((record, len)) = read_one(&body[at..]) {
        records.push(record);
        at += len;
    }
    (records, at)
}

fn read_one(bytes: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(FRAME_LEN..FRAME_LEN.checked_add(len)?)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    Some((decode(payload)?, FRAME_LEN + len))
}

fn header(snapshot_id: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&snapshot_id.to_le_bytes());
    h
}

/// The snapshot id a log's header names, or `None` if it has no header.
pub fn header_id(bytes: &[u8]) -> Option<u64> {
    (bytes.get(..8)? == MAGIC).then(|| u64::from_le_bytes(bytes[8..16].try_into().unwrap()))
}

/// What opening a log found.
pub struct Opened {
    pub wal: Wal,
    /// The records to replay on the snapshot, oldest first.
    pub records: Vec<Record>,
    /// Bytes of a torn last record that were cut off.
    pub torn_bytes: u64,
    /// The log named another snapshot (or had no header) and was replaced.
    pub stale: bool,
}

/// An open log, positioned at its end.
pub struct Wal {
    path: PathBuf,
    file: File,
    len: u64,
}

impl Wal {
    /// Opens the log at `path` as the continuation of snapshot
    /// `snapshot_id`: a missing or stale log is replaced by an empty one
    /// naming it, a torn tail is cut off.
    pub fn open(path: &Path, snapshot_id: u64) -> std::io::Result<Opened> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        if header_id(&bytes) != Some(snapshot_id) {
            let stale = !bytes.is_empty();
            let wal = Self::create(path, snapshot_id)?;
            return Ok(Opened {
                wal,
                records: Vec::new(),
                torn_bytes: 0,
                stale,
            });
        }
        let (records, used) = read_records(&bytes[HEADER_LEN as usize..]);
        let len = HEADER_LEN + used as u64;
        let mut file = OpenOptions::new().write(true).open(path)?;
        let torn_bytes = bytes.len() as u64 - len;
        if torn_bytes > 0 {
            file.set_len(len)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::Start(len))?;
        Ok(Opened {
            wal: Wal {
                path: path.to_path_buf(),
                file,
                len,
            },
            records,
            torn_bytes,
            stale: false,
        })
    }

    /// A new empty log for snapshot `snapshot_id`, put in place of any old
    /// one by a rename (a crash leaves the old log or the new one).
    pub fn create(path: &Path, snapshot_id: u64) -> std::io::Result<Wal> {
        Self::create_with(path, snapshot_id, &[])
    }

    /// [`Wal::create`], the new log holding `records`.
    pub fn create_with(path: &Path, snapshot_id: u64, records: &[&Record]) -> std::io::Result<Wal> {
        let tmp = path.with_extension("wal.tmp");
        let mut bytes = header(snapshot_id).to_vec();
        for r in records {
            bytes.extend(frame(r));
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        sync_parent(path)?;
        let mut file = OpenOptions::new().write(true).open(path)?;
        file.seek(SeekFrom::End(0))?;
        Ok(Wal {
            path: path.to_path_buf(),
            file,
            len: bytes.len() as u64,
        })
    }

    /// Starts over as the empty log of snapshot `snapshot_id`.
    pub fn restart(&mut self, snapshot_id: u64) -> std::io::Result<()> {
        *self = Self::create(&self.path, snapshot_id)?;
        Ok(())
    }

    /// Appends the records and fsyncs once; returns the bytes written.
    /// After an error the file's end is unknown: the caller must not
    /// append again before [`Wal::restart`].
    pub fn append(&mut self, records: &[&Record]) -> std::io::Result<u64> {
        let mut buf = Vec::new();
        for r in records {
            buf.extend(frame(r));
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.len += buf.len() as u64;
        Ok(buf.len() as u64)
    }

    /// The log's size in bytes, header included.
    pub fn size(&self) -> u64 {
        self.len
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes a log (the index was deleted); a missing one is no error.
pub fn remove(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes a rename or an unlink in `path`'s directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
