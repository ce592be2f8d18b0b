//! A JSON body extractor whose errors are OpenAI error objects naming the
//! field at fault (`messages[0].role`), not axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::errors::ApiError;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError {
                status: e.status(),
                ..ApiError::bad_request(format!(
                    "could not read the request body: {}",
                    e.body_text()
                ))
            })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parses a request body, naming the field when a value has the wrong type.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("malformed JSON in the request body: {inner}"))
        } else if path == "." {
            ApiError::bad_request(format!("invalid request body: {inner}"))
        } else {
            ApiError::invalid(path.clone(), format!("invalid value for `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON in the request body: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        temperature: Option<f32>,
        messages: Option<Vec<Msg>>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Msg {
        role: String,
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = parse::<Body>(br#"{"temperature": "hot"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(e.message.contains("`temperature`"), "{}", e.message);
        let e = parse::<Body>(br#"{"messages": [{"role": 3}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
    }

    #[test]
    fn malformed_json_is_a_400_without_param() {
        for body in [&b"{\"temperature\": "[..], b"not json", b"{} trailing", b""] {
            let e = parse::<Body>(body).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(e.param, None);
            assert!(e.message.contains("malformed JSON"), "{}", e.message);
        }
        let e = parse::<Body>(b"\"text\"").unwrap_err();
        assert!(e.message.contains("invalid request body"), "{}", e.message);
    }
}
