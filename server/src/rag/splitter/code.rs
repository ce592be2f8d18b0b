//! The languages code splitting knows, each with its tree-sitter grammar.

/// Names accepted in `metadata.language` (case-insensitive), canonical first.
pub const SUPPORTED_LANGUAGES: &[&str] = &["python", "rust", "go", "javascript"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeLanguage {
    Python,
    Rust,
    Go,
    JavaScript,
}

impl CodeLanguage {
    /// The language for a metadata value; common short names and file
    /// extensions are accepted too (py, rs, golang, js, jsx, mjs, cjs).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "python" | "py" => Some(CodeLanguage::Python),
            "rust" | "rs" => Some(CodeLanguage::Rust),
            "go" | "golang" => Some(CodeLanguage::Go),
            "javascript" | "js" | "jsx" | "mjs" | "cjs" => Some(CodeLanguage::JavaScript),
            _ => None,
        }
    }

    pub fn grammar(self) -> tree_sitter_language::LanguageFn {
        match self {
            CodeLanguage::Python => tree_sitter_python::LANGUAGE,
            CodeLanguage::Rust => tree_sitter_rust::LANGUAGE,
            CodeLanguage::Go => tree_sitter_go::LANGUAGE,
            CodeLanguage::JavaScript => tree_sitter_javascript::LANGUAGE,
        }
    }
}
