//! Tool calls read out of generated text as it streams, in the format the
//! model was trained to write them (`--tool-call-parser`):
//!
//! * **hermes** (Qwen2.5, SmolLM2, Hermes): `<tool_call>{"name": …,
//!   "arguments": {…}}</tool_call>`, any number, text around them is
//!   content;
//! * **llama3_json** (Llama 3.1+): the output *starts* with
//!   `{"name": …, "parameters": {…}}` (optionally after `<|python_tag|>`),
//!   several joined by `;`; output that does not start so is content.
//!
//! The parser is fed the text pieces the detokenizer produces and answers
//! with deltas in the OpenAI streaming shape: content, a call's name (with
//! its id) once the name is complete, then the call's arguments in pieces as
//! they are written. A non-streamed response is the same parser fed the
//! whole text, so both agree on every call's name and arguments.
//!
//! A call whose body is not the expected `{"name": …, "arguments": …}`
//! prefix is held until it ends and parsed as a whole; one that is not a
//! JSON object with a name is given back as content, as vLLM's parsers do.

use serde::Deserialize;
use serde_json::Value;

/// How the served model writes tool calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ToolCallFormat {
    /// `<tool_call>{"name": …, "arguments": …}</tool_call>`.
    #[default]
    Hermes,
    /// `{"name": …, "parameters": …}` at the start, `;`-separated.
    #[value(name = "llama3_json")]
    Llama3Json,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const PYTHON_TAG: &str = "<|python_tag|>";

impl ToolCallFormat {
    /// The key holding a call's arguments in this format.
    pub fn arguments_key(self) -> &'static str {
        match self {
            ToolCallFormat::Hermes => "arguments",
            ToolCallFormat::Llama3Json => "parameters",
        }
    }
}

/// What one piece of text added to a choice.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedDelta {
    pub content: String,
    pub calls: Vec<CallDelta>,
}

/// A piece of one tool call: its first delta carries the id and name.
#[derive(Clone, Debug, PartialEq)]
pub struct CallDelta {
    /// The call's position among this choice's calls.
    pub index: usize,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// A whole call, as a non-streamed response shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// The whole of one choice's output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedOutput {
    /// `None` when the output was only tool calls.
    pub content: Option<String>,
    pub calls: Vec<ToolCall>,
}

enum State {
    /// Hermes: content until an opening tag. Llama 3: deciding whether the
    /// output starts with a call (only whitespace seen so far).
    Text,
    /// Inside a call's body.
    Call(CallBody),
    /// Llama 3: after a call, before `;` and the next one.
    BetweenCalls,
    /// Llama 3: the output is content from here on.
    Content,
}

/// One choice's parser.
pub struct ToolCallParser {
    format: ToolCallFormat,
    state: State,
    /// Text not yet consumed by the state machine.
    pending: String,
    calls: usize,
}

impl ToolCallParser {
    pub fn new(format: ToolCallFormat) -> Self {
        ToolCallParser {
            format,
            state: State::Text,
            pending: String::new(),
            calls: 0,
        }
    }

    /// Whether any tool call has begun.
    pub fn called(&self) -> bool {
        self.calls > 0
    }

    /// Feeds the next piece of generated text.
    pub fn push(&mut self, text: &str) -> ParsedDelta {
        self.pending.push_str(text);
        let mut out = ParsedDelta::default();
        while self.step(&mut out, false) {}
        out
    }

    /// The end of the output: whatever is held back is flushed.
    pub fn finish(&mut self) -> ParsedDelta {
        let mut out = ParsedDelta::default();
        while self.step(&mut out, true) {}
        if let State::Call(body) = std::mem::replace(&mut self.state, State::Content) {
            // Cut off mid-call (max_tokens): a started call stays a call.
            self.end_call(body, &mut out, true);
        }
        let rest = std::mem::take(&mut self.pending);
        if !(self.called() && rest.trim().is_empty()) {
            out.content.push_str(&rest);
        }
        out
    }

    /// One transition; false when it needs more text.
    fn step(&mut self, out: &mut ParsedDelta, at_end: bool) -> bool {
        match (&mut self.state, self.format) {
            (State::Text, ToolCallFormat::Hermes) => self.hermes_text(out, at_end),
            (State::Text, ToolCallFormat::Llama3Json) => self.llama_start(),
            (State::Call(_), _) => self.call_step(out),
            (State::BetweenCalls, _) => self.llama_between(),
            (State::Content, _) => {
                out.content.push_str(&std::mem::take(&mut self.pending));
                false
            }
        }
    }

    fn hermes_text(&mut self, out: &mut ParsedDelta, at_end: bool) -> bool {
        if let Some(p) = self.pending.find(HERMES_OPEN) {
            self.emit_text(&self.pending[..p], out);
            self.pending.drain(..p + HERMES_OPEN.len());
            self.state = State::Call(CallBody::new(self.calls));
            self.calls += 1;
            return true;
        }
        if at_end {
            return false;
        }
        // Keep back a tail that may be the start of an opening tag.
        let keep = partial_suffix(&self.pending, HERMES_OPEN);
        let mut cut = self.pending.len() - keep;
        // Between calls, whitespace waits to see what follows it.
        if self.called() {
            cut = self.pending[..cut].trim_end().len();
        }
        let text: String = self.pending.drain(..cut).collect();
        self.emit_text(&text, out);
        false
    }

    fn emit_text(&self, text: &str, out: &mut ParsedDelta) {
        if !(self.called() && text.trim().is_empty()) {
            out.content.push_str(text);
        }
    }

    /// Llama 3: a call only if the output starts with one.
    fn llama_start(&mut self) -> bool {
        let trimmed = self.pending.trim_start();
        if trimmed.is_empty() || PYTHON_TAG.starts_with(trimmed) && trimmed != PYTHON_TAG {
            return false;
        }
        let rest = trimmed.strip_prefix(PYTHON_TAG).unwrap_or(trimmed);
        if rest.trim_start().is_empty() {
            return false;
        }
        if rest.trim_start().starts_with('{') {
            self.pending = rest.trim_start().to_string();
            self.state = State::Call(CallBody::new(self.calls));
            self.calls += 1;
        } else {
            self.state = State::Content;
        }
        true
    }

    fn llama_between(&mut self) -> bool {
        let rest = self
            .pending
            .trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if rest.is_empty() {
            self.pending.clear();
            return false;
        }
        let is_call = rest.starts_with('{');
        self.pending = rest.to_string();
        if is_call {
            self.state = State::Call(CallBody::new(self.calls));
            self.calls += 1;
        } else {
            self.state = State::Content;
        }
        true
    }

    fn call_step(&mut self, out: &mut ParsedDelta) -> bool {
        let State::Call(body) = &mut self.state else {
            unreachable!("call_step runs in the Call state")
        };
        let end = match self.format {
            ToolCallFormat::Hermes => self.pending.find(HERMES_CLOSE).map(|p| (p, HERMES_CLOSE)),
            ToolCallFormat::Llama3Json => {
                let mut depth = DepthScan::default();
                depth
                    .end_of_value(&format!("{}{}", body.text, self.pending), 0)
                    .map(|e| (e - body.text.len(), ""))
            }
        };
        let Some((at, closer)) = end else {
            // Hermes: hold back what may be the start of the closing tag.
            let keep = match self.format {
                ToolCallFormat::Hermes => partial_suffix(&self.pending, HERMES_CLOSE),
                ToolCallFormat::Llama3Json => 0,
            };
            let take = self.pending.len() - keep;
            let piece: String = self.pending.drain(..take).collect();
            body.text.push_str(&piece);
            body.stream(self.format, out);
            return false;
        };
        let piece: String = self.pending.drain(..at + closer.len()).collect();
        body.text.push_str(&piece[..at]);
        let State::Call(body) = std::mem::replace(&mut self.state, State::Text) else {
            unreachable!()
        };
        let was_call = self.end_call(body, out, false);
        if self.format == ToolCallFormat::Llama3Json {
            self.state = if was_call {
                State::BetweenCalls
            } else {
                State::Content
            };
        }
        true
    }

    /// A call's body is complete (or the output ended inside it); false
    /// when it was not a call after all and went back to content.
    fn end_call(&mut self, mut body: CallBody, out: &mut ParsedDelta, cut_off: bool) -> bool {
        body.stream(self.format, out);
        if body.header.is_some() {
            body.finish_arguments(out);
            return true;
        }
        let key = self.format.arguments_key();
        match whole_call(&body.text, key) {
            Some((name, arguments)) if !cut_off => {
                out.calls.push(CallDelta {
                    index: body.index,
                    id: Some(new_call_id()),
                    name: Some(name),
                    arguments,
                });
                true
            }
            _ => {
                // Not a call after all: give the text back.
                self.calls -= 1;
                let text = match self.format {
                    ToolCallFormat::Hermes if cut_off => format!("{HERMES_OPEN}{}", body.text),
                    ToolCallFormat::Hermes => format!("{HERMES_OPEN}{}{HERMES_CLOSE}", body.text),
                    ToolCallFormat::Llama3Json => body.text,
                };
                out.content.push_str(&text);
                false
            }
        }
    }
}

/// Parses a whole choice (non-streamed responses).
pub fn parse_output(format: ToolCallFormat, text: &str) -> ParsedOutput {
    let mut parser = ToolCallParser::new(format);
    let mut first = parser.push(text);
    let last = parser.finish();
    first.content.push_str(&last.content);
    first.calls.extend(last.calls);
    let mut calls: Vec<ToolCall> = Vec::new();
    for d in first.calls {
        match calls.get_mut(d.index) {
            Some(c) => c.arguments.push_str(&d.arguments),
            None => calls.push(ToolCall {
                id: d.id.unwrap_or_else(new_call_id),
                name: d.name.unwrap_or_default(),
                arguments: d.arguments,
            }),
        }
    }
    let content = if calls.is_empty() || !first.content.trim().is_empty() {
        Some(first.content)
    } else {
        None
    };
    ParsedOutput { content, calls }
}

/// A fresh id in OpenAI's shape (`call_` and 24 alphanumerics).
pub fn new_call_id() -> String {
    format!("call_{:024x}", rand::random::<u128>() >> 32)
}

/// The length of the longest suffix of `text` that is a proper prefix of
/// `tag`.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && text.ends_with(&tag[..n]))
        .unwrap_or(0)
}

/// `{"name": "...", "arguments": ` recognised at the start of a body.
#[derive(Clone, Debug)]
struct Header {
    name: String,
    /// Where the arguments value starts in the body text.
    args_start: usize,
}

/// One call's body as it arrives.
struct CallBody {
    index: usize,
    text: String,
    header: Option<Header>,
    /// The header cannot match: the body is parsed whole at its end.
    unstreamable: bool,
    /// Bytes of the arguments value already sent.
    sent: usize,
    args_done: bool,
}

impl CallBody {
    fn new(index: usize) -> Self {
        CallBody {
            index,
            text: String::new(),
            header: None,
            unstreamable: false,
            sent: 0,
            args_done: false,
        }
    }

    /// Sends what can be sent: the name once known, then arguments text.
    fn stream(&mut self, format: ToolCallFormat, out: &mut ParsedDelta) {
        if self.header.is_none() && !self.unstreamable {
            match match_header(&self.text, format.arguments_key()) {
                HeaderMatch::Matched(h) => {
                    out.calls.push(CallDelta {
                        index: self.index,
                        id: Some(new_call_id()),
                        name: Some(h.name.clone()),
                        arguments: String::new(),
                    });
                    self.header = Some(h);
                }
                HeaderMatch::NeedMore => {}
                HeaderMatch::NoMatch => self.unstreamable = true,
            }
        }
        let Some(h) = &self.header else { return };
        let value = &self.text[h.args_start..];
        // Strings and bare scalars are sent whole at the end.
        if self.args_done || !value.starts_with(['{', '[']) {
            return;
        }
        let end = DepthScan::default().end_of_value(value, 0);
        let upto = end.unwrap_or(value.len());
        if upto > self.sent {
            self.push_args(&value[self.sent..upto], out);
            self.sent = upto;
        }
        self.args_done = end.is_some();
    }

    /// The body ended: sends the rest of the arguments.
    fn finish_arguments(&mut self, out: &mut ParsedDelta) {
        let Some(h) = &self.header else { return };
        if self.args_done {
            return;
        }
        let value = self.text[h.args_start..].trim_end();
        let value = value.strip_suffix('}').unwrap_or(value).trim_end();
        if value.starts_with(['{', '[']) {
            // Cut off mid-object: what was written stands.
            if value.len() > self.sent {
                self.push_args(&value[self.sent..], out);
            }
        } else {
            let whole = match serde_json::from_str::<Value>(value) {
                Ok(Value::String(s)) => s,
                Ok(v) => v.to_string(),
                Err(_) => value.to_string(),
            };
            self.push_args(&whole, out);
        }
        self.args_done = true;
    }

    fn push_args(&self, piece: &str, out: &mut ParsedDelta) {
        if piece.is_empty() {
            return;
        }
        out.calls.push(CallDelta {
            index: self.index,
            id: None,
            name: None,
            arguments: piece.to_string(),
        });
    }
}

enum HeaderMatch {
    Matched(Header),
    NeedMore,
    NoMatch,
}

/// Matches `{ "name" : "<string>" , "<args_key>" : ` (any whitespace).
fn match_header(text: &str, args_key: &str) -> HeaderMatch {
    let mut cur = Cursor { text, pos: 0 };
    let args_key = format!("\"{args_key}\"");
    let mut name = None;
    for i in 0..7 {
        let step = match i {
            0 => cur.literal("{"),
            1 => cur.literal("\"name\""),
            2 | 6 => cur.literal(":"),
            3 => cur.string(),
            4 => cur.literal(","),
            _ => cur.literal(&args_key),
        };
        match step {
            Step::Ok(s) if i == 3 => name = s,
            Step::Ok(_) => {}
            Step::More => return HeaderMatch::NeedMore,
            Step::No => return HeaderMatch::NoMatch,
        }
    }
    cur.skip_ws();
    if cur.pos == text.len() {
        return HeaderMatch::NeedMore;
    }
    HeaderMatch::Matched(Header {
        name: name.unwrap_or_default(),
        args_start: cur.pos,
    })
}

enum Step {
    Ok(Option<String>),
    More,
    No,
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn literal(&mut self, lit: &str) -> Step {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        if rest.starts_with(lit) {
            self.pos += lit.len();
            Step::Ok(None)
        } else if lit.starts_with(rest) {
            Step::More
        } else {
            Step::No
        }
    }

    /// A JSON string literal, decoded.
    fn string(&mut self) -> Step {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        if rest.is_empty() {
            return Step::More;
        }
        if !rest.starts_with('"') {
            return Step::No;
        }
        let Some(len) = DepthScan::default().end_of_value(rest, 0) else {
            return Step::More;
        };
        match serde_json::from_str::<String>(&rest[..len]) {
            Ok(s) => {
                self.pos += len;
                Step::Ok(Some(s))
            }
            Err(_) => Step::No,
        }
    }
}

/// Finds where one JSON value (object, array or string) that starts at
/// `from` ends, without parsing it.
#[derive(Default)]
struct DepthScan {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl DepthScan {
    /// The byte offset just past the value, if it is complete in `text`.
    fn end_of_value(&mut self, text: &str, from: usize) -> Option<usize> {
        for (i, b) in text.bytes().enumerate().skip(from) {
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => {
                        self.in_string = false;
                        if self.depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// A whole body parsed: the name and the arguments as JSON text.
fn whole_call(body: &str, args_key: &str) -> Option<(String, String)> {
    let Value::Object(map) = serde_json::from_str::<Value>(body.trim()).ok()? else {
        return None;
    };
    let name = map.get("name")?.as_str()?.to_string();
    let args = map
        .get(args_key)
        .or_else(|| map.get("arguments"))
        .or_else(|| map.get("parameters"));
    let arguments = match args {
        None | Some(Value::Null) => "{}".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    Some((name, arguments))
}

#[cfg(test)]
#[path = "tool_parser_tests.rs"]
mod tests;
