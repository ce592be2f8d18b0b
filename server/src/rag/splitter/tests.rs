use serde_json::{json, Map, Value};

use super::*;

/// One token per whitespace-separated word: easy to reason about in tests.
fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

fn meta(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn cfg(chunk_tokens: usize, overlap_tokens: usize) -> SplitConfig {
    SplitConfig {
        chunk_tokens,
        overlap_tokens,
    }
}

/// Sentences numbered so every chunk's position can be checked.
fn prose(sentences: usize) -> String {
    (0..sentences)
        .map(|i| {
            format!(
                "Sentence number {i} talks about topic {} at length here.",
                i % 7
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_offsets(text: &str, chunks: &[Chunk]) {
    for c in chunks {
        assert_eq!(&text[c.start_byte..c.start_byte + c.text.len()], c.text);
    }
}

#[test]
fn defaults_are_kaitos() {
    assert_eq!(
        SplitConfig::default(),
        SplitConfig {
            chunk_tokens: 1024,
            overlap_tokens: 200
        }
    );
}

#[test]
fn text_chunks_fit_end_at_sentences_overlap_and_cover() {
    let text = prose(60); // 9 words per sentence, 540 words
    let chunks = split(&text, &Map::new(), &cfg(50, 10), &words).unwrap();
    assert!(chunks.len() >= 11, "{} chunks", chunks.len());
    check_offsets(&text, &chunks);
    for c in &chunks {
        assert!(words(&c.text) <= 50, "chunk of {} tokens", words(&c.text));
        assert!(
            c.text.ends_with('.'),
            "chunk does not end a sentence: {:?}",
            c.text
        );
    }
    assert_eq!(chunks[0].start_byte, 0);
    assert_eq!(
        chunks.last().unwrap().text.len() + chunks.last().unwrap().start_byte,
        text.len()
    );
    for pair in chunks.windows(2) {
        let end = pair[0].start_byte + pair[0].text.len();
        assert!(
            pair[1].start_byte < end,
            "no overlap between consecutive chunks"
        );
        assert!(pair[1].start_byte > pair[0].start_byte);
    }
}

#[test]
fn short_text_is_one_chunk_and_blank_text_none() {
    let chunks = split(
        "Just one line.",
        &Map::new(),
        &SplitConfig::default(),
        &words,
    )
    .unwrap();
    assert_eq!(
        chunks,
        vec![Chunk {
            text: "Just one line.".into(),
            start_byte: 0
        }]
    );
    assert!(split("  \n ", &Map::new(), &SplitConfig::default(), &words)
        .unwrap()
        .is_empty());
}

#[test]
fn unknown_split_type_splits_as_text_like_kaito() {
    let text = prose(30);
    let m = meta(json!({"split_type": "markdown"}));
    let as_text = split(&text, &Map::new(), &cfg(40, 5), &words).unwrap();
    assert_eq!(split(&text, &m, &cfg(40, 5), &words).unwrap(), as_text);
}

const PYTHON: &str = r#"import os


def first(a, b):
    total = a + b
    for i in range(10):
        total += i * a
    return total


def second(path):
    with open(path) as f:
        data = f.read()
    return data.strip().split()


class Third:
    def method(self, x):
        return x * 2 + len(os.sep)
"#;

#[test]
fn python_code_splits_at_definitions() {
    let m = meta(json!({"split_type": "code", "language": "python"}));
    let chunks = split(PYTHON, &m, &cfg(30, 0), &words).unwrap();
    check_offsets(PYTHON, &chunks);
    assert!(chunks.len() >= 2, "{chunks:?}");
    for c in &chunks {
        assert!(words(&c.text) <= 30);
        // Cuts fall between top-level definitions, never inside one.
        assert!(
            ["import ", "def ", "class "]
                .iter()
                .any(|p| c.text.starts_with(p)),
            "chunk starts mid-definition: {:?}",
            c.text
        );
    }
}

#[test]
fn every_supported_language_parses() {
    let sources = [
        (
            "rust",
            "fn a() -> u32 {\n    1\n}\n\nfn b() -> u32 {\n    2\n}\n",
        ),
        (
            "go",
            "package main\n\nfunc a() int {\n\treturn 1\n}\n\nfunc b() int {\n\treturn 2\n}\n",
        ),
        (
            "javascript",
            "function a() {\n  return 1;\n}\n\nfunction b() {\n  return 2;\n}\n",
        ),
        ("PY", "def a():\n    return 1\n\ndef b():\n    return 2\n"),
    ];
    for (language, source) in sources {
        let m = meta(json!({"split_type": "code", "language": language}));
        let chunks = split(source, &m, &cfg(6, 0), &words).unwrap();
        check_offsets(source, &chunks);
        assert!(chunks.len() >= 2, "{language}: {chunks:?}");
        assert!(
            chunks.iter().all(|c| words(&c.text) <= 6),
            "{language}: {chunks:?}"
        );
    }
}

#[test]
fn code_without_language_is_a_client_error_naming_the_field() {
    for m in [
        json!({"split_type": "code"}),
        json!({"split_type": "code", "language": ""}),
        json!({"split_type": "code", "language": null}),
    ] {
        let err = split("x = 1", &meta(m), &SplitConfig::default(), &words).unwrap_err();
        assert!(matches!(err, SplitError::MissingLanguage));
        assert_eq!(err.param(), Some("metadata.language"));
        let msg = err.to_string();
        assert!(
            msg.contains("metadata.language") && msg.contains("python, rust, go, javascript"),
            "{msg}"
        );
    }
}

#[test]
fn unsupported_or_mistyped_language_is_rejected_with_the_choices() {
    let m = meta(json!({"split_type": "code", "language": "cobol"}));
    let err = split("x", &m, &SplitConfig::default(), &words).unwrap_err();
    assert_eq!(err.param(), Some("metadata.language"));
    assert!(err.to_string().contains("\"cobol\"") && err.to_string().contains("javascript"));

    let m = meta(json!({"split_type": "code", "language": 3}));
    let err = split("x", &m, &SplitConfig::default(), &words).unwrap_err();
    assert!(matches!(
        err,
        SplitError::InvalidMetadata {
            field: "language",
            ..
        }
    ));

    let m = meta(json!({"split_type": ["code"]}));
    let err = split("x", &m, &SplitConfig::default(), &words).unwrap_err();
    assert_eq!(err.param(), Some("metadata.split_type"));
}

#[test]
fn overlap_must_be_smaller_than_the_chunk() {
    for c in [cfg(10, 10), cfg(0, 0), cfg(10, 20)] {
        let err = split("a b c", &Map::new(), &c, &words).unwrap_err();
        assert!(matches!(err, SplitError::InvalidConfig(_)), "{err}");
        assert_eq!(err.param(), None);
    }
}
