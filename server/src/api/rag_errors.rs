//! RAG errors as HTTP answers. On KAITO's own routes they take KAITO
//! RAGEngine's (FastAPI's) shape: `{"detail": "..."}`, and for out-of-range
//! parameters the 422 validation list `{"detail": [{"type", "loc", "msg",
//! "input"}]}` that the generated `kaito-rag-engine-client` parses. In chat
//! completions with `index_name` they are OpenAI error objects.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::errors::ApiError;
use crate::rag::error::RagError;

/// KAITO's status for each error.
pub fn status(e: &RagError) -> StatusCode {
    match e {
        RagError::IndexNotFound(_) | RagError::PathNotFound(_) => StatusCode::NOT_FOUND,
        RagError::IndexExists(_) => StatusCode::CONFLICT,
        RagError::BadRequest(_) => StatusCode::BAD_REQUEST,
        RagError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        RagError::Embed(_) | RagError::Storage(_) | RagError::Internal(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The `detail` value of KAITO's response body.
pub fn detail(e: &RagError) -> Value {
    match e {
        RagError::Invalid { loc, msg, input } => json!([{
            "type": "value_error",
            "loc": loc,
            "msg": msg,
            "input": input,
        }]),
        other => Value::String(other.to_string()),
    }
}

/// The answer of a KAITO route that failed; server errors are logged.
pub fn kaito_response(e: RagError) -> Response {
    let status = status(&e);
    if status.is_server_error() {
        tracing::error!(error = %e, "RAG request failed");
    }
    (status, Json(json!({ "detail": detail(&e) }))).into_response()
}

/// The OpenAI error object for a chat completion whose retrieval failed,
/// naming `param`; server errors say nothing of their cause.
pub fn openai_error(e: RagError, param: &str) -> ApiError {
    let status = status(&e);
    let kind = match status {
        StatusCode::NOT_FOUND => "not_found_error",
        s if s.is_server_error() => return ApiError::internal(e),
        _ => "invalid_request_error",
    };
    ApiError {
        status,
        message: e.to_string(),
        kind,
        param: Some(param.to_string()),
        code: None,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_shapes_follow_kaito() {
        let e = RagError::IndexNotFound("docs".into());
        assert_eq!(status(&e), 404);
        assert_eq!(detail(&e), json!("No such index: 'docs' exists."));
        assert_eq!(status(&RagError::IndexExists("a".into())), 409);
        let e = RagError::invalid(&["query", "limit"], "must be at most 100", json!(500));
        assert_eq!(status(&e), 422);
        assert_eq!(detail(&e)[0]["loc"], json!(["query", "limit"]));
    }

    #[test]
    fn chat_errors_are_openai_objects_naming_the_field() {
        let e = openai_error(RagError::IndexNotFound("kb".into()), "index_name");
        assert_eq!(
            (e.status, e.kind),
            (StatusCode::NOT_FOUND, "not_found_error")
        );
        assert_eq!(e.param.as_deref(), Some("index_name"));
        let e = openai_error(RagError::Internal("disk on fire".into()), "index_name");
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message.contains("disk"), "{}", e.message);
    }
}
