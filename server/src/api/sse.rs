//! Server-sent events as OpenAI streams them: `data: <json>\n\n` per chunk,
//! optionally a usage chunk with no choices, then `data: [DONE]\n\n`. A
//! failure mid-stream becomes one error-object event before `[DONE]`.
//!
//! The route families only say what goes into their chunks (a
//! [`ChunkWriter`]); the order of events is decided here, once.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::stream::{Stream, StreamExt};
use serde::Serialize;
use tandem_engine::serving::RequestOutput;

use super::errors::ApiError;
use super::generate::{Launched, UsageInfo};
use super::StreamOptions;

pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// One event carrying `chunk` as JSON.
pub fn event<T: Serialize>(chunk: &T) -> Bytes {
    let mut buf = b"data: ".to_vec();
    serde_json::to_writer(&mut buf, chunk).expect("chunks serialise");
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// What one route family (completions, chat) puts into its chunks.
pub trait ChunkWriter: Send + 'static {
    /// Events before any output (chat: each choice's role).
    fn opening(&mut self, num_choices: usize) -> Vec<Bytes>;
    /// The event for one update of choice `index`, or `None` when it has
    /// nothing to send (no text, no logprobs, not the last).
    fn update(&mut self, index: usize, out: &RequestOutput) -> Option<Bytes>;
    /// The usage event (`choices: []`).
    fn usage(&self, usage: &UsageInfo) -> Bytes;
}

/// The events of one streamed response, in order; a usage chunk at the end
/// if `stream_options.include_usage`.
pub fn events<W: ChunkWriter>(
    mut writer: W,
    launched: Launched,
    options: Option<StreamOptions>,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let include_usage = options.is_some_and(|o| o.include_usage.unwrap_or(false));
    async_stream::stream! {
        let Launched { mut stream, mut tally } = launched;
        for e in writer.opening(tally.num_choices()) {
            yield e;
        }
        let mut failed = false;
        while let Some((index, item)) = stream.next().await {
            match item {
                Ok(out) => {
                    tally.record(index, out.usage);
                    if let Some(e) = writer.update(index, &out) {
                        yield e;
                    }
                }
                Err(err) => {
                    yield event(&ApiError::from(err).body());
                    failed = true;
                    break;
                }
            }
        }
        // Dropping the remaining sequences (after an error) aborts them.
        drop(stream);
        if include_usage && !failed {
            yield writer.usage(&tally.total());
        }
        yield Bytes::from_static(DONE);
    }
}

/// A `text/event-stream` response over `events`.
pub fn response(events: impl Stream<Item = Bytes> + Send + 'static) -> Response {
    let body = Body::from_stream(events.map(Ok::<_, Infallible>));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_data_lines_with_a_blank_line_after() {
        let e = event(&serde_json::json!({"a": "x\ny"}));
        assert_eq!(&e[..], b"data: {\"a\":\"x\\ny\"}\n\n");
        assert_eq!(DONE, b"data: [DONE]\n\n");
    }
}
