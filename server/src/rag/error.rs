//! Errors of the RAG module, answered in KAITO RAGEngine's (FastAPI's)
//! shape: `{"detail": "..."}`, and for out-of-range parameters the 422
//! validation list `{"detail": [{"type", "loc", "msg", "input"}]}` that the
//! generated `kaito-rag-engine-client` parses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::embedder::EmbedError;

#[derive(Debug, thiserror::Error)]
pub enum RagError {
    #[error("No such index: '{0}' exists.")]
    IndexNotFound(String),
    #[error("Index '{0}' already exists. Use a different name, delete the existing index first, or load with overwrite=true.")]
    IndexExists(String),
    #[error("{0}")]
    BadRequest(String),
    /// 422 for one field: `loc` is FastAPI's location (`["query", "limit"]`).
    #[error("{msg}")]
    Invalid {
        loc: Vec<String>,
        msg: String,
        input: Value,
    },
    #[error("Path does not exist: {0}")]
    PathNotFound(String),
    #[error("embedding failed: {0}")]
    Embed(#[from] EmbedError),
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Internal(String),
}

impl RagError {
    pub fn invalid(loc: &[&str], msg: impl Into<String>, input: Value) -> Self {
        RagError::Invalid {
            loc: loc.iter().map(|s| s.to_string()).collect(),
            msg: msg.into(),
            input,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            RagError::IndexNotFound(_) | RagError::PathNotFound(_) => StatusCode::NOT_FOUND,
            RagError::IndexExists(_) => StatusCode::CONFLICT,
            RagError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RagError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            RagError::Embed(_) | RagError::Storage(_) | RagError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The `detail` value of the response body.
    pub fn detail(&self) -> Value {
        match self {
            RagError::Invalid { loc, msg, input } => json!([{
                "type": "value_error",
                "loc": loc,
                "msg": msg,
                "input": input,
            }]),
            other => Value::String(other.to_string()),
        }
    }
}

impl From<std::io::Error> for RagError {
    fn from(e: std::io::Error) -> Self {
        RagError::Storage(format!("storage error: {e}"))
    }
}

impl IntoResponse for RagError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            tracing::error!(error = %self, "RAG request failed");
        }
        (self.status(), Json(json!({ "detail": self.detail() }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_shapes_follow_kaito() {
        let e = RagError::IndexNotFound("docs".into());
        assert_eq!(e.status(), 404);
        assert_eq!(e.detail(), json!("No such index: 'docs' exists."));
        assert_eq!(RagError::IndexExists("a".into()).status(), 409);
        let e = RagError::invalid(&["query", "limit"], "must be at most 100", json!(500));
        assert_eq!(e.status(), 422);
        assert_eq!(e.detail()[0]["loc"], json!(["query", "limit"]));
    }
}
