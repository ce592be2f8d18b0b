use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::rag::index::tests::add;
use crate::rag::testing::toy_vector;

const MODEL: &str = "toy-letters";
const DIM: usize = 26;

fn small_index(n: usize, tag: &str) -> Index {
    let mut ix = Index::new(DIM);
    for i in 0..n {
        add(
            &mut ix,
            &format!("{tag} document number {i}\n\nsecond part of {tag} {i}"),
            json!({"i": i, "tag": tag}),
        );
    }
    ix
}

#[test]
fn persist_then_load_gives_the_same_index() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("idx");
    let ix = small_index(20, "alpha");
    persist(&ix, "idx", MODEL, &target).unwrap();
    let loaded = load(&target, MODEL, DIM).unwrap();
    assert_eq!(loaded.manifest.version, VERSION);
    assert_eq!(loaded.manifest.num_documents, 20);
    assert_eq!(loaded.manifest.num_chunks, 40);
    assert_eq!(
        loaded.index.list(0, 100, None, None),
        ix.list(0, 100, None, None)
    );
    let q = "alpha document number 7";
    let before: Vec<_> = ix
        .retrieve(q, &toy_vector(q), 5, None)
        .iter()
        .map(|h| h.to_node())
        .collect();
    let after: Vec<_> = loaded
        .index
        .retrieve(q, &toy_vector(q), 5, None)
        .iter()
        .map(|h| h.to_node())
        .collect();
    assert_eq!(before, after);
    // A second persist replaces the first in place, leaving no temporaries.
    persist(&small_index(3, "beta"), "idx", MODEL, &target).unwrap();
    assert_eq!(load(&target, MODEL, DIM).unwrap().index.num_docs(), 3);
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["idx".to_string()]);
}

#[test]
fn wrong_model_version_or_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("idx");
    persist(&small_index(2, "a"), "idx", MODEL, &target).unwrap();
    let e = load(&target, "other-model", DIM).err().unwrap();
    assert!(matches!(e, RagError::BadRequest(_)), "{e:?}");
    assert!(e.to_string().contains("other-model"), "{e}");
    // Flip one byte of the vectors: the checksum catches it.
    let vpath = target.join(VECTORS);
    let mut bytes = fs::read(&vpath).unwrap();
    bytes[5] ^= 0xff;
    fs::write(&vpath, bytes).unwrap();
    assert!(load(&target, MODEL, DIM)
        .err()
        .unwrap()
        .to_string()
        .contains("checksum"));
    // A newer format version is named, not misread.
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(target.join(MANIFEST)).unwrap()).unwrap();
    m["version"] = json!(VERSION + 1);
    fs::write(target.join(MANIFEST), m.to_string()).unwrap();
    assert!(load(&target, MODEL, DIM)
        .err()
        .unwrap()
        .to_string()
        .contains("version"));
    assert!(matches!(
        load(&dir.path().join("none"), MODEL, DIM).err().unwrap(),
        RagError::PathNotFound(_)
    ));
}

/// Found by the `persisted_index` fuzz target: documents that are not
/// UTF-8 under a matching checksum were a storage error (500).
#[test]
fn documents_that_are_not_utf8_are_a_bad_index() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("idx");
    persist(&small_index(2, "a"), "idx", MODEL, &target).unwrap();
    let bytes = b"\xff".to_vec();
    fs::write(target.join(DOCUMENTS), &bytes).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(target.join(MANIFEST)).unwrap()).unwrap();
    m["documents_sha256"] = json!(hex::encode(Sha256::digest(&bytes)));
    fs::write(target.join(MANIFEST), m.to_string()).unwrap();
    let e = load(&target, MODEL, DIM).err().unwrap();
    assert!(matches!(e, RagError::BadRequest(_)), "{e:?}");
    assert!(e.to_string().contains(DOCUMENTS), "{e}");
}

#[test]
fn a_directory_that_is_not_an_index_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("photos");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("cat.jpg"), b"meow").unwrap();
    let e = persist(&small_index(1, "a"), "i", MODEL, &target)
        .err()
        .unwrap();
    assert!(matches!(e, RagError::BadRequest(_)), "{e:?}");
    assert!(target.join("cat.jpg").exists());
}

const CHILD_ENV: &str = "TANDEM_TEST_PERSIST_FOREVER";

/// The child of the kill -9 test: persists a large index to the target in a
/// loop until killed (bounded, in case nobody kills it).
#[test]
#[ignore = "run by kill_9_mid_persist_leaves_the_previous_copy_whole"]
fn persist_child() {
    let Ok(target) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut ix = Index::new(DIM);
    let filler = "lorem ipsum dolor sit amet ".repeat(80);
    for i in 0..3000 {
        let text = format!("big {i} {filler}");
        let id = super::super::index::doc_id_of(&text);
        let chunk = NewChunk {
            start_byte: 0,
            text: text.clone(),
            vector: toy_vector(&text),
        };
        ix.put(&id, text, Default::default(), vec![chunk]);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        persist(&ix, "idx", MODEL, Path::new(&target)).unwrap();
    }
}

#[test]
fn kill_9_mid_persist_leaves_the_previous_copy_whole() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("idx");
    persist(&small_index(5, "previous"), "idx", MODEL, &target).unwrap();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "rag::persist::tests::persist_child",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, &target)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until a write is under way (its temporary exists), then kill.
        let deadline = Instant::now() + Duration::from_secs(30);
        let writing = || {
            fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".idx.tmp-"))
        };
        while !writing() {
            assert!(Instant::now() < deadline, "the child never started writing");
            assert!(child.try_wait().unwrap().is_none(), "the child exited");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(round * 7));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let loaded = load(&target, MODEL, DIM).expect("a whole copy after kill -9");
        let n = loaded.index.num_docs();
        assert!(n == 5 || n == 3000, "round {round}: {n} documents");
        assert_eq!(loaded.manifest.num_documents, n);
    }
    // The next persist clears what the killed writer left behind.
    persist(&small_index(1, "after"), "idx", MODEL, &target).unwrap();
    let left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["idx".to_string()]);
}
