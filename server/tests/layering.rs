//! The server's modules call one way: `cli` wires everything; the API calls
//! the router, the worker's engine and RAG through traits and plain types;
//! RAG is a service that knows nothing of HTTP handlers. Cargo enforces the
//! arrows between crates; this test enforces them between the modules of
//! `server/src`, so an import cycle cannot come back unnoticed.

use std::path::{Path, PathBuf};

/// Module → the sibling modules it must never name (`crate::NAME`).
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("rag", &["api", "router", "worker", "cli"]),
    ("api", &["router", "worker", "cli"]),
    ("worker", &["router", "cli"]),
    ("router", &["cli"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line, without a trailing `//` comment.
fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

#[test]
fn server_modules_never_import_against_the_flow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (module, forbidden) in FORBIDDEN {
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        assert!(!files.is_empty(), "server/src/{module} has no Rust files");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("source is UTF-8");
            for (n, line) in text.lines().enumerate() {
                for target in *forbidden {
                    if code(line).contains(&format!("crate::{target}")) {
                        violations.push(format!(
                            "{}:{}: `{module}` names `crate::{target}`: {}",
                            file.strip_prefix(&src).unwrap_or(&file).display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the module flow (move the shared type down, or pass it in):\n{}",
        violations.join("\n")
    );
}
