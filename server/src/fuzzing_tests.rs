//! The fuzz entry points over their seed corpora (`fuzz/seeds/<target>`),
//! so the seeds and the properties are checked where no nightly toolchain
//! is at hand, and the inputs libFuzzer found, kept as regressions.

use std::path::PathBuf;

use super::*;

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// Every seed keeps its target's property, and is a valid request: the
/// fuzzer starts from inputs that reach past the parsers.
#[test]
fn every_seed_keeps_its_property_and_is_accepted() {
    type Entry = fn(&[u8]) -> Option<StatusCode>;
    let requests: [(&str, Entry); 3] = [
        ("openai_request", openai_status),
        ("rag_request", rag_status),
        ("persisted_index", persisted_status),
    ];
    for (name, entry) in requests {
        for (path, bytes) in seeds(name) {
            let status = entry(&bytes).unwrap();
            assert!(status.is_success(), "{}: {status}", path.display());
        }
    }
    for (_, bytes) in seeds("chat_template") {
        chat_template(&bytes);
    }
    for (path, bytes) in seeds("worker_body") {
        let parsed = serde_json::from_slice::<crate::worker::wire::DecodeRequest>(&bytes).is_ok()
            || serde_json::from_slice::<crate::worker::wire::ReleaseRequest>(&bytes).is_ok()
            || serde_json::from_slice::<tandem_engine::serving::ServingRequest>(&bytes).is_ok();
        assert!(parsed, "{} parses as no wire type", path.display());
        worker_body(&bytes);
    }
}

/// Inputs libFuzzer found that broke a property, minimized (the fix is
/// named with each).
#[test]
fn fuzz_findings_stay_fixed() {
    // persisted_index: documents.jsonl of one byte that is not UTF-8, its
    // checksum resealed, was a 500 ("stream did not contain valid UTF-8");
    // persist::load now refuses it as a damaged index (400).
    assert_eq!(persisted_status(b"\x00\xff"), Some(StatusCode::BAD_REQUEST));
}

/// Regenerates the seeds made from Rust values (a persisted index's
/// files, the worker's wire bodies) when their format changes:
/// `cargo test -p tandem-server --lib write_generated_seeds -- --ignored`.
#[test]
#[ignore]
fn write_generated_seeds() {
    use tandem_engine::kv_handoff::KvHandle;
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let fixture = persisted_fixture();
    std::fs::create_dir_all(out.join("persisted_index")).unwrap();
    for (i, f) in fixture.files.iter().enumerate() {
        let mut bytes = vec![i as u8];
        bytes.extend(std::fs::read(fixture.root.join("pristine").join(f)).unwrap());
        std::fs::write(
            out.join("persisted_index").join(f.file_name().unwrap()),
            bytes,
        )
        .unwrap();
    }
    let mut request = tandem_engine::sequence::Request {
        prompt_tokens: vec![1, 2, 3],
        params: Default::default(),
        stop: Default::default(),
        handoff: Default::default(),
    };
    request.stop.max_tokens = 4;
    let serving = tandem_engine::serving::ServingRequest::new(request);
    let kv: KvHandle = serde_json::from_value(json!({
        "agent": "cGVlcg==", "lease": 3, "block_ids": [5, 1],
        "block_hashes": [18446744073709551615u64], "block_checksums": [9, 10], "num_tokens": 20,
    }))
    .unwrap();
    let decode = crate::worker::wire::DecodeRequest {
        request: serving.clone(),
        output_tokens: vec![7],
        kv,
    };
    let w = out.join("worker_body");
    std::fs::write(w.join("serving"), serde_json::to_vec(&serving).unwrap()).unwrap();
    std::fs::write(w.join("decode"), serde_json::to_vec(&decode).unwrap()).unwrap();
}
