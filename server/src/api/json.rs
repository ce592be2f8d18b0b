//! JSON body extractors whose errors are OpenAI error objects naming the
//! field at fault (`messages[0].role`), not axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::errors::ApiError;
use super::validation::SamplingFields;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        parse(&read_body(req, state).await?).map(ApiJson)
    }
}

/// A generation request body: the route's own fields `T` and the
/// [`SamplingFields`] chat and completions share, from one JSON object.
///
/// `#[serde(flatten)]` would buffer the object and lose the path (and
/// position) of a bad sampling field, so the body is read twice instead,
/// each pass ignoring the other's keys. When both fail, the error earlier
/// in the body is the one a single pass would have met, and is reported.
pub struct GenerationJson<T> {
    pub request: T,
    pub sampling: SamplingFields,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for GenerationJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        parse_generation(&read_body(req, state).await?)
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
    Bytes::from_request(req, state).await.map_err(|e| {
        let message = match (e.status(), limit) {
            (StatusCode::PAYLOAD_TOO_LARGE, Some(max)) => format!(
                "the request body is larger than the limit of {max} bytes \
                 (--max-request-body); send less or raise the limit"
            ),
            _ => format!("could not read the request body: {}", e.body_text()),
        };
        ApiError {
            status: e.status(),
            ..ApiError::bad_request(message)
        }
    })
}

/// The body limit in force, for the 413's message (set by
/// [`super::router`] on every request).
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// Why a body did not parse: serde_json's error and the path of the value
/// it was reading (`.` for the body as a whole).
struct ParseError {
    path: String,
    inner: serde_json::Error,
}

impl ParseError {
    /// Where in the body it was met: (line, column).
    fn position(&self) -> (usize, usize) {
        (self.inner.line(), self.inner.column())
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        let ParseError { path, inner } = e;
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("malformed JSON in the request body: {inner}"))
        } else if path == "." {
            ApiError::bad_request(format!("invalid request body: {inner}"))
        } else {
            ApiError::invalid(path.clone(), format!("invalid value for `{path}`: {inner}"))
        }
    }
}

fn deserialize<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| ParseError {
        path: e.path().to_string(),
        inner: e.into_inner(),
    })?;
    de.end().map_err(|inner| ParseError {
        path: ".".into(),
        inner,
    })?;
    Ok(value)
}

/// Parses a request body, naming the field when a value has the wrong type.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    Ok(deserialize(bytes)?)
}

fn parse_generation<T: DeserializeOwned>(bytes: &[u8]) -> Result<GenerationJson<T>, ApiError> {
    match (deserialize(bytes), deserialize(bytes)) {
        (Ok(request), Ok(sampling)) => Ok(GenerationJson { request, sampling }),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e.into()),
        (Err(own), Err(shared)) if shared.position() < own.position() => Err(shared.into()),
        (Err(own), Err(_)) => Err(own.into()),
    }
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

    /// A route's own fields, beside the shared sampling ones.
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Own {
        messages: Vec<Msg>,
    }

    /// `Own` and two of the sampling fields in one struct: what one pass
    /// over the body would report.
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Whole {
        messages: Vec<Msg>,
        temperature: Option<f32>,
        n: Option<i64>,
    }

    #[test]
    fn generation_bodies_report_the_error_one_pass_would() {
        let ok = parse_generation::<Own>(br#"{"messages": [], "n": 2, "user": "x"}"#).unwrap();
        assert_eq!(ok.sampling.n, Some(2));
        for body in [
            &br#"{"messages": [{"role": 3}], "temperature": "hot"}"#[..],
            br#"{"temperature": "hot", "messages": [{"role": 3}]}"#,
            br#"{"temperature": "hot"}"#,
            br#"{"n": 2}"#,
            br#"{"n": 2.5, "messages": []}"#,
            br#"{"messages": [], "n": 2"#,
            br#"{"messages": []} trailing"#,
            br#"["text"]"#,
        ] {
            let want = parse::<Whole>(body).unwrap_err();
            let got = parse_generation::<Own>(body).err().unwrap();
            assert_eq!(got, want, "{}", String::from_utf8_lossy(body));
        }
        let e = parse_generation::<Own>(br#"{"temperature": "hot"}"#)
            .err()
            .unwrap();
        assert_eq!(e.param.as_deref(), Some("temperature"));
    }
}
