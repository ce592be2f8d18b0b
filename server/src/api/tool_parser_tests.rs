use super::*;

/// Feeds `text` in pieces of `step` bytes (on char boundaries) and gathers
/// the deltas as a client would.
fn streamed(
    format: ToolCallFormat,
    text: &str,
    step: usize,
) -> (String, Vec<(String, String)>, usize) {
    let mut parser = ToolCallParser::new(format);
    let mut deltas = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + step).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        deltas.push(parser.push(&text[start..end]));
        start = end;
    }
    deltas.push(parser.finish());
    let mut content = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut pieces = 0;
    for d in deltas {
        content.push_str(&d.content);
        for c in d.calls {
            if let Some(name) = c.name {
                assert_eq!(c.index, calls.len(), "calls are numbered in order");
                assert!(c.id.unwrap().starts_with("call_"));
                calls.push((name, String::new()));
            }
            if !c.arguments.is_empty() {
                pieces += 1;
            }
            calls[c.index].1.push_str(&c.arguments);
        }
    }
    (content, calls, pieces)
}

fn whole(format: ToolCallFormat, text: &str) -> (Option<String>, Vec<(String, String)>) {
    let out = parse_output(format, text);
    let calls = out
        .calls
        .into_iter()
        .map(|c| (c.name, c.arguments))
        .collect();
    (out.content, calls)
}

fn call(name: &str, args: &str) -> (String, String) {
    (name.to_string(), args.to_string())
}

const HERMES_TWO: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>";

#[test]
fn hermes_calls_stream_name_first_then_arguments_in_pieces() {
    for step in [1, 2, 3, 7, 1000] {
        let (content, calls, pieces) = streamed(ToolCallFormat::Hermes, HERMES_TWO, step);
        assert_eq!(content, "", "step {step}");
        assert_eq!(
            calls,
            vec![
                call("get_weather", "{\"city\": \"Paris\", \"days\": 3}"),
                call("time", "{}")
            ],
            "step {step}"
        );
        if step == 1 {
            assert!(
                pieces > 10,
                "arguments arrive as they are written: {pieces}"
            );
        }
    }
    let (content, calls) = whole(ToolCallFormat::Hermes, HERMES_TWO);
    assert_eq!(content, None);
    assert_eq!(calls.len(), 2);
}

#[test]
fn hermes_text_around_calls_is_content_and_lookalikes_are_kept() {
    let text = "Let me check. <tool_call>{\"name\": \"f\", \"arguments\": {\"a\": \"}<\\\"\"}}</tool_call>";
    for step in [1, 4, 100] {
        let (content, calls, _) = streamed(ToolCallFormat::Hermes, text, step);
        assert_eq!(content, "Let me check. ");
        assert_eq!(calls, vec![call("f", "{\"a\": \"}<\\\"\"}")]);
    }
    // No call at all: every byte comes back, including a partial tag.
    let plain = "a < b and <tool_ca";
    assert_eq!(streamed(ToolCallFormat::Hermes, plain, 1).0, plain);
    assert_eq!(
        whole(ToolCallFormat::Hermes, plain),
        (Some(plain.into()), vec![])
    );
}

#[test]
fn hermes_bodies_that_are_not_calls_go_back_to_content() {
    let text = "<tool_call>not json</tool_call> done";
    assert_eq!(streamed(ToolCallFormat::Hermes, text, 1).0, text);
    assert_eq!(whole(ToolCallFormat::Hermes, text).1, vec![]);
    // Keys in another order: parsed whole at the end of the call.
    let text = "<tool_call>{\"arguments\": {\"x\": 1}, \"name\": \"g\"}</tool_call>";
    let (content, calls, _) = streamed(ToolCallFormat::Hermes, text, 1);
    assert_eq!(
        (content.as_str(), calls),
        ("", vec![call("g", "{\"x\":1}")])
    );
    // Arguments written as a JSON string are that string.
    let text = "<tool_call>{\"name\": \"g\", \"arguments\": \"{\\\"x\\\": 1}\"}</tool_call>";
    assert_eq!(
        whole(ToolCallFormat::Hermes, text).1,
        vec![call("g", "{\"x\": 1}")]
    );
}

#[test]
fn a_call_cut_off_by_max_tokens_keeps_what_was_written() {
    let text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, 2";
    let (content, calls, _) = streamed(ToolCallFormat::Hermes, text, 3);
    assert_eq!(content, "");
    assert_eq!(calls, vec![call("f", "{\"a\": [1, 2")]);
    // Cut before the name was complete: not a call.
    let text = "<tool_call>\n{\"name\": \"f";
    assert_eq!(streamed(ToolCallFormat::Hermes, text, 3).0, text);
}

#[test]
fn llama3_calls_at_the_start_separated_by_semicolons() {
    let text = "<|python_tag|>{\"name\": \"a\", \"parameters\": {\"q\": \"x;y\"}}; {\"name\": \"b\", \"parameters\": {}}";
    for step in [1, 5, 1000] {
        let (content, calls, _) = streamed(ToolCallFormat::Llama3Json, text, step);
        assert_eq!(content, "", "step {step}");
        assert_eq!(calls, vec![call("a", "{\"q\": \"x;y\"}"), call("b", "{}")]);
    }
    let prose = "The answer is {1, 2}.";
    assert_eq!(
        whole(ToolCallFormat::Llama3Json, prose),
        (Some(prose.into()), vec![])
    );
    // A JSON object that is not a call is content.
    let object = "{\"answer\": 42}";
    assert_eq!(streamed(ToolCallFormat::Llama3Json, object, 2).0, object);
}

#[test]
fn streamed_and_whole_agree_on_every_split() {
    let text = "I will call two tools.\n<tool_call>\n{\"name\": \"s\", \"arguments\": {\"t\": \"héllo ✓\", \"n\": [1, {\"k\": null}]}}\n</tool_call>\n";
    let (content, calls) = whole(ToolCallFormat::Hermes, text);
    for step in 1..12 {
        let (c, cs, _) = streamed(ToolCallFormat::Hermes, text, step);
        assert_eq!(Some(c), content, "step {step}");
        assert_eq!(cs, calls, "step {step}");
    }
    assert_eq!(content.as_deref(), Some("I will call two tools.\n"));
}
