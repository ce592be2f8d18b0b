//! Stop strings: end generation when the output text contains one of the
//! request's `stop` strings, and never show the client text that might still
//! turn out to be (the start of) one.
//!
//! Text arrives as deltas that split stop strings anywhere, so the matcher
//! keeps a short tail of unreleased text: just the longest suffix that is
//! still a prefix of some stop string. Everything before it is safe to send.
//!
//! Which stop wins: generation ends the moment any stop string is complete,
//! so the match is the one that *ends* first in the text; among stops ending
//! at the same place, the longest (so no part of a stop string leaks). This
//! makes the result independent of how the text was cut into deltas.

/// OpenAI's limit on `stop` entries.
pub const MAX_STOP_STRINGS: usize = 4;

/// Longest stop string, in bytes: the matcher holds back up to this much
/// text, so an unbounded one would hold back a whole answer.
pub const MAX_STOP_BYTES: usize = 1024;

/// A `stop` parameter the API must refuse (HTTP 400, `param: "stop"`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StopError {
    #[error("`stop` has {count} entries; at most {MAX_STOP_STRINGS} are allowed")]
    TooMany { count: usize },
    #[error("`stop[{index}]` is an empty string; stop strings must not be empty")]
    Empty { index: usize },
    #[error(
        "`stop[{index}]` is {bytes} bytes long; stop strings are at most {MAX_STOP_BYTES} bytes"
    )]
    TooLong { index: usize, bytes: usize },
}

impl StopError {
    /// The request field at fault, for the OpenAI error object's `param`.
    pub fn param(&self) -> &'static str {
        "stop"
    }
}

/// Checks a request's `stop` list: at most [`MAX_STOP_STRINGS`], none empty
/// (an empty string would match before any text and stop at once), none
/// over [`MAX_STOP_BYTES`].
pub fn validate(stop: &[String]) -> Result<(), StopError> {
    if stop.len() > MAX_STOP_STRINGS {
        return Err(StopError::TooMany { count: stop.len() });
    }
    if let Some(index) = stop.iter().position(String::is_empty) {
        return Err(StopError::Empty { index });
    }
    match stop.iter().position(|s| s.len() > MAX_STOP_BYTES) {
        Some(index) => Err(StopError::TooLong {
            index,
            bytes: stop[index].len(),
        }),
        None => Ok(()),
    }
}

/// What one [`StopMatcher::push`] decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// Text safe to send to the client now (possibly empty).
    pub release: String,
    /// The stop string that completed; the request is finished
    /// (`finish_reason: "stop"`, vLLM's `stop_reason`).
    pub stopped: Option<String>,
}

/// Per-request stop-string matcher over streamed text deltas.
#[derive(Clone, Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    include_stop_str_in_output: bool,
    /// Received text not yet released; never longer than the longest stop
    /// (minus one byte) between pushes.
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stop` (validated here). With
    /// `include_stop_str_in_output` (vLLM) the stop string itself is released
    /// too; text after it never is.
    pub fn new(stop: Vec<String>, include_stop_str_in_output: bool) -> Result<Self, StopError> {
        validate(&stop)?;
        Ok(Self {
            stops: stop,
            include_stop_str_in_output,
            held: String::new(),
            stopped: false,
        })
    }

    /// Whether a stop string has completed; later pushes release nothing.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds the next text delta.
    pub fn push(&mut self, delta: &str) -> StopOutcome {
        if self.stopped {
            return StopOutcome::default();
        }
        if self.stops.is_empty() {
            return StopOutcome {
                release: delta.to_string(),
                stopped: None,
            };
        }
        self.held.push_str(delta);
        // Released text has no suffix that starts a stop, so every match
        // starts inside `held`.
        if let Some((start, which)) = self.first_match() {
            let stop = self.stops[which].clone();
            let end = if self.include_stop_str_in_output {
                start + stop.len()
            } else {
                start
            };
            let mut release = std::mem::take(&mut self.held);
            release.truncate(end);
            self.stopped = true;
            return StopOutcome {
                release,
                stopped: Some(stop),
            };
        }
        let keep = self.partial_match_start();
        let tail = self.held.split_off(keep);
        StopOutcome {
            release: std::mem::replace(&mut self.held, tail),
            stopped: None,
        }
    }

    /// Releases text held back as a possible stop prefix; call when
    /// generation ends for another reason (length, EOS).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The completed stop that ends first in `held` (longest on a tie), as
    /// (start byte, index into `stops`).
    fn first_match(&self) -> Option<(usize, usize)> {
        self.stops
            .iter()
            .enumerate()
            .filter_map(|(i, stop)| Some((self.held.find(stop.as_str())?, i)))
            .min_by_key(|&(start, i)| (start + self.stops[i].len(), start))
    }

    /// Byte offset (a char boundary) of the longest suffix of `held` that is
    /// a proper prefix of some stop; `held.len()` if none.
    fn partial_match_start(&self) -> usize {
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let earliest = self.held.len().saturating_sub(longest.saturating_sub(1));
        (earliest..self.held.len())
            .filter(|&i| self.held.is_char_boundary(i))
            .find(|&i| {
                let suffix = &self.held[i..];
                self.stops.iter().any(|stop| stop.starts_with(suffix))
            })
            .unwrap_or(self.held.len())
    }
}
