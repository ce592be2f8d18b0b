use serde_json::json;
use tandem_engine::guided::GuidanceCompiler;

use super::*;
use crate::api::tool_parser::parse_output;

fn read(body: Value) -> Result<Option<ToolRequest>, ApiError> {
    ToolFields {
        tools: body.get("tools"),
        tool_choice: body.get("tool_choice"),
        parallel_tool_calls: body.get("parallel_tool_calls").and_then(Value::as_bool),
        functions: body.get("functions"),
        function_call: body.get("function_call"),
    }
    .read()
}

fn weather() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 12},
            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city", "days"], "additionalProperties": false}}})
}

fn clock() -> Value {
    json!({"type": "function", "function": {"name": "now"}})
}

fn param_of(e: ApiError) -> String {
    e.param.unwrap_or_default()
}

#[test]
fn choices_and_their_errors_name_the_field() {
    let t = read(json!({"tools": [weather(), clock()]}))
        .unwrap()
        .unwrap();
    assert_eq!(t.choice, ToolChoice::Auto);
    assert!(t.parallel && !t.legacy);
    assert_eq!(
        t.functions[1].parameters,
        json!({"type": "object", "properties": {}, "additionalProperties": false})
    );
    let named = json!({"type": "function", "function": {"name": "now"}});
    let t = read(json!({"tools": [clock()], "tool_choice": named}))
        .unwrap()
        .unwrap();
    assert_eq!(t.choice, ToolChoice::Named("now".into()));
    assert_eq!(read(json!({"tool_choice": "none"})).unwrap(), None);

    let cases = [
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"tools": [clock()], "tool_choice": {"type": "function", "function": {"name": "x"}}}),
            "tool_choice",
        ),
        (
            json!({"tools": [clock()], "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (json!({"tools": [{"type": "retrieval"}]}), "tools[0].type"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "a b"}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"tools": [clock(), clock()]}),
            "tools[1].function.name",
        ),
        (
            json!({"tools": [clock()], "functions": [{"name": "f"}]}),
            "functions",
        ),
        (
            json!({"functions": [{"name": "f"}], "function_call": "required"}),
            "function_call",
        ),
        (json!({"tools": {"a": 1}}), "tools"),
    ];
    for (body, param) in cases {
        let e = read(body.clone()).unwrap_err();
        assert_eq!(e.status, 400, "{body}");
        assert_eq!(param_of(e), param, "{body}");
    }
}

#[test]
fn legacy_functions_take_the_same_path_with_one_call() {
    let body = json!({"functions": [{"name": "f", "parameters": {"type": "object"}}],
                      "function_call": {"name": "f"}});
    let t = read(body).unwrap().unwrap();
    assert!(t.legacy && !t.parallel);
    assert_eq!(t.choice, ToolChoice::Named("f".into()));
    assert_eq!(t.template_tools().unwrap()[0]["function"]["name"], "f");
}

#[test]
fn the_call_grammar_has_the_format_and_count_asked_for() {
    let mut t = read(json!({"tools": [weather(), clock()], "tool_choice": "required"}))
        .unwrap()
        .unwrap();
    let Some(GuidedDecoding::Lark(g)) = t.constraint(ToolCallFormat::Hermes) else {
        panic!("a Lark grammar")
    };
    assert!(g.starts_with("start: call (\"\\n\" call)*"), "{g}");
    assert!(g.contains("<tool_call>") && g.contains("anyOf"), "{g}");
    t.parallel = false;
    let Some(GuidedDecoding::Lark(g)) = t.constraint(ToolCallFormat::Llama3Json) else {
        panic!("a Lark grammar")
    };
    assert!(
        g.starts_with("start: call\n") && g.contains("\"parameters\""),
        "{g}"
    );
    t.choice = ToolChoice::Auto;
    assert_eq!(t.constraint(ToolCallFormat::Hermes), None);
    t.choice = ToolChoice::None;
    assert_eq!(t.template_tools(), None);
}

/// The grammar only admits calls the parser reads back as valid calls:
/// every string it accepts (walked with the demo vocabulary) parses.
#[test]
fn forced_calls_compile_and_parse_back() {
    let tok = crate::api::testing::tokenizer();
    let vocab = tok.vocab_size();
    let compiler = GuidanceCompiler::new(tok.clone(), vocab, &[0]);
    let allows = |guide: &mut tandem_engine::guided::Guide, id: u32| {
        let mut logits = vec![0.0f32; vocab];
        guide.apply(&mut logits);
        logits[id as usize] == 0.0
    };
    for format in [ToolCallFormat::Hermes, ToolCallFormat::Llama3Json] {
        let t = read(json!({"tools": [weather()], "tool_choice":
            {"type": "function", "function": {"name": "get_weather"}}}))
        .unwrap()
        .unwrap();
        let spec = t.constraint(format).unwrap();
        let mut guide = compiler.compile(&spec).unwrap();
        // A valid call, token by token, is accepted to the end.
        let call = format!(
            "{{\"name\": \"get_weather\", \"{}\": {{\"city\": \"Oslo\", \"days\": 2}}}}",
            format.arguments_key()
        );
        let text = match format {
            ToolCallFormat::Hermes => format!("<tool_call>\n{call}\n</tool_call>"),
            ToolCallFormat::Llama3Json => call,
        };
        let ids = tok.encode(&text, false).unwrap();
        for (i, id) in ids.iter().enumerate() {
            assert!(
                allows(&mut guide, *id),
                "{format:?}: token {i} of {text:?} refused"
            );
            guide.consume(*id);
        }
        assert!(
            guide.is_finished() || allows(&mut guide, 0),
            "{format:?}: the call can end"
        );
        let parsed = parse_output(format, &text);
        assert_eq!(parsed.calls.len(), 1);
        assert_eq!(
            parsed.calls[0].arguments,
            "{\"city\": \"Oslo\", \"days\": 2}"
        );
    }
}

#[test]
fn inline_tools_writes_the_tools_calls_and_results_in_the_model_format() {
    let tools = vec![weather()];
    let mut assistant = TemplateMessage::text("assistant", String::new());
    assistant
        .tool_calls
        .push(crate::api::chat_template::TemplateToolCall {
            id: "call_1".into(),
            kind: "function",
            function: crate::api::chat_template::TemplateFunction {
                name: "get_weather".into(),
                arguments: json!({"city": "Oslo", "days": 1}),
            },
        });
    let mut result = TemplateMessage::text("tool", "rain".into());
    result.tool_call_id = Some("call_1".into());
    let messages = vec![
        TemplateMessage::text("user", "weather?".into()),
        assistant,
        result.clone(),
        result,
    ];
    let out = inline_tools(messages, Some(&tools), ToolCallFormat::Hermes);
    let roles: Vec<&str> = out.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert!(
        out[0]
            .content
            .contains("<tools>\n{\"name\":\"get_weather\""),
        "{}",
        out[0].content
    );
    assert_eq!(
        out[2].content,
        "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\",\"days\":1}}\n</tool_call>"
    );
    assert_eq!(
        out[3].content,
        "<tool_response>\nrain\n</tool_response>\n<tool_response>\nrain\n</tool_response>"
    );
    // Without tools (tool_choice none) the history is still rewritten.
    let out = inline_tools(
        vec![TemplateMessage::text("system", "s".into())],
        None,
        ToolCallFormat::Hermes,
    );
    assert_eq!(out[0].content, "s");
}
