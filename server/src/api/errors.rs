//! The one error type every handler returns, rendered as an OpenAI error
//! object: `{"error": {"message", "type", "param", "code"}}`.
//!
//! Messages of 4xx errors go to the client verbatim, so they name the field
//! and the limit. 5xx errors never carry internals: the detail is logged and
//! the client gets a generic message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tandem_engine::serving::ServingError;

#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorObject<'a>,
}

#[derive(Serialize)]
pub struct ErrorObject<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 for a request field: the message should name the field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    /// 400 not tied to one field (malformed JSON, ...).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400: prompt plus requested output exceed the context window.
    pub fn context_length(
        param: &str,
        max_model_len: usize,
        prompt: usize,
        max_tokens: usize,
    ) -> Self {
        let message = format!(
            "This model's maximum context length is {max_model_len} tokens. However, you \
             requested {} tokens ({prompt} in the prompt, {max_tokens} in the completion). \
             Please reduce the length of the prompt or of max_tokens.",
            prompt + max_tokens
        );
        ApiError {
            code: Some("context_length_exceeded"),
            ..Self::invalid(param, message)
        }
    }

    pub fn unknown_model(model: &str) -> Self {
        ApiError {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "not_found_error",
                format!("The model `{model}` does not exist."),
            )
        }
    }

    pub fn unknown_route(method: &str, path: &str) -> Self {
        ApiError {
            code: Some("not_found"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "not_found_error",
                format!("No route for {method} {path}."),
            )
        }
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("{method} is not allowed on {path}."),
        )
    }

    pub fn unauthorized() -> Self {
        ApiError {
            code: Some("invalid_api_key"),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "Missing or incorrect API key: send it as `Authorization: Bearer <key>`.",
            )
        }
    }

    /// 429: the waiting queue is full.
    pub fn overloaded(waiting: usize, max_waiting: usize) -> Self {
        ApiError {
            code: Some("too_many_waiting_requests"),
            retry_after: Some(1),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "The server is overloaded: {waiting} requests are waiting and \
                     --max-waiting is {max_waiting}. Retry later."
                ),
            )
        }
    }

    pub fn shutting_down() -> Self {
        ApiError {
            retry_after: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "The server is shutting down.",
            )
        }
    }

    /// 503 with Retry-After: nothing can serve the request right now.
    pub fn unavailable(message: String) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message);
        e.retry_after = Some(1);
        e
    }

    /// 503 from `/health` when the engine thread has died.
    pub fn engine_dead() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "The engine is not running; restart this worker (its log has the cause).",
        )
    }

    /// 500: logs `detail` and tells the client nothing about it.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error while serving a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The server had an error while processing the request.",
        )
    }

    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        }
    }

    /// The error object as JSON text (also sent as an SSE event mid-stream).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.body()).expect("error objects serialise")
    }
}

impl From<ServingError> for ApiError {
    fn from(e: ServingError) -> Self {
        match e {
            // The engine's own checks (context length, KV capacity): written
            // for users.
            ServingError::Rejected(msg) => ApiError::bad_request(msg),
            ServingError::Shutdown => ApiError::shutting_down(),
            ServingError::Engine(detail) => ApiError::internal(detail),
            ServingError::Unavailable(msg) => ApiError::unavailable(msg),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
