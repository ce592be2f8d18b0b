//! The model's own chat template (Jinja, from `tokenizer_config.json` or
//! `chat_template.jinja`) rendered with minijinja the way transformers'
//! `apply_chat_template` does: `trim_blocks` and `lstrip_blocks` on,
//! Python string methods (`.strip()`, `.startswith()`, ...) through
//! minijinja-contrib's pycompat, and `raise_exception` for templates that
//! refuse a conversation. Also how OpenAI chat messages become template
//! input.

use std::sync::Arc;

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::tools::inline_tools;
use super::{blocking, ModelInfo};

/// Most messages one chat request may hold.
pub const MAX_MESSAGES: usize = 4096;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    /// A tool's result (`tool_call_id` says which call).
    Tool,
    /// The legacy spelling of a tool result (`name` says which function).
    Function,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Clone, Debug, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: Option<Content>,
    pub name: Option<String>,
    pub tool_call_id: Option<String>,
    /// An assistant turn's calls, as a response gave them.
    pub tool_calls: Option<Vec<MessageToolCall>>,
    /// The legacy spelling of one call.
    pub function_call: Option<MessageFunction>,
}

impl ChatMessage {
    pub fn text(role: Role, text: String) -> Self {
        ChatMessage {
            role,
            content: Some(Content::Text(text)),
            name: None,
            tool_call_id: None,
            tool_calls: None,
            function_call: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct MessageToolCall {
    pub id: Option<String>,
    pub function: MessageFunction,
}

#[derive(Clone, Debug, Deserialize)]
pub struct MessageFunction {
    pub name: String,
    /// JSON text, as OpenAI sends it (an object is taken as is).
    pub arguments: Option<serde_json::Value>,
}

/// One message as the template sees it: content flattened to text, calls
/// with their arguments as objects (as transformers hands them over).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TemplateMessage {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<TemplateToolCall>,
}

impl TemplateMessage {
    pub fn text(role: &str, content: String) -> Self {
        TemplateMessage {
            role: role.to_string(),
            content,
            name: None,
            tool_call_id: None,
            tool_calls: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TemplateToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: TemplateFunction,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TemplateFunction {
    pub name: String,
    pub arguments: serde_json::Value,
}

impl From<&MessageFunction> for TemplateFunction {
    /// Arguments sent as JSON text become the object they spell; text that
    /// is not JSON is passed on as a string.
    fn from(f: &MessageFunction) -> Self {
        let arguments = match &f.arguments {
            None => serde_json::json!({}),
            Some(serde_json::Value::String(s)) => {
                serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.clone()))
            }
            Some(other) => other.clone(),
        };
        TemplateFunction {
            name: f.name.clone(),
            arguments,
        }
    }
}

pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template reads `tools` (else tandem writes them into the
    /// system message itself, see [`inline_tools`]).
    handles_tools: bool,
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    /// Compiles `source`; a template that does not parse fails at start-up.
    pub fn new(source: String) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        let handles_tools = source.contains("tools");
        env.add_template_owned("chat", source)?;
        Ok(ChatTemplate { env, handles_tools })
    }

    /// The prompt text for `messages`. Errors (including a template's own
    /// `raise_exception`, e.g. "roles must alternate") are the client's: 400.
    pub fn render(
        &self,
        conversation: &Conversation,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<String, ApiError> {
        let template = self.env.get_template("chat").map_err(ApiError::internal)?;
        let ctx = minijinja::context! {
            messages => &conversation.messages,
            tools => &conversation.tools,
            add_generation_prompt => conversation.add_generation_prompt,
            bos_token => bos_token.unwrap_or(""),
            eos_token => eos_token.unwrap_or(""),
        };
        template.render(ctx).map_err(|e| {
            let detail = match e.kind() {
                ErrorKind::InvalidOperation => e.detail().unwrap_or("").to_string(),
                _ => e.to_string(),
            };
            ApiError::invalid(
                "messages",
                format!("the model's chat template could not render these messages: {detail}"),
            )
        })
    }
}

/// What a chat template renders.
#[derive(Clone, Debug, Default)]
pub struct Conversation {
    pub messages: Vec<TemplateMessage>,
    /// OpenAI-shaped tool definitions, when the model may call them.
    pub tools: Option<Vec<serde_json::Value>>,
    pub add_generation_prompt: bool,
}

/// Messages as the template sees them: text parts joined with newlines (as
/// vLLM does for string-content templates), `developer` as `system` (most
/// templates only know the latter), `function` as `tool`, missing content
/// as "".
pub fn template_messages(messages: &[ChatMessage]) -> Result<Vec<TemplateMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    if messages.len() > MAX_MESSAGES {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "messages has {} entries; at most {MAX_MESSAGES} are allowed",
                messages.len()
            ),
        ));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut texts = Vec::with_capacity(parts.len());
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => texts.push(t.as_str()),
                            ("text", None) => {
                                return Err(ApiError::invalid(
                                    format!("messages[{i}].content[{j}].text"),
                                    format!("messages[{i}].content[{j}] has no text"),
                                ))
                            }
                            (other, _) => {
                                return Err(ApiError::invalid(
                                    format!("messages[{i}].content[{j}].type"),
                                    format!(
                                        "messages[{i}].content[{j}] is of type {other:?}; \
                                         only \"text\" parts are supported"
                                    ),
                                ))
                            }
                        }
                    }
                    texts.join("\n")
                }
            };
            let role = match m.role {
                Role::System | Role::Developer => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool | Role::Function => "tool",
            };
            let mut calls: Vec<TemplateToolCall> = m
                .tool_calls
                .iter()
                .flatten()
                .enumerate()
                .map(|(j, c)| TemplateToolCall {
                    id: c.id.clone().unwrap_or_else(|| format!("call_{i}_{j}")),
                    kind: "function",
                    function: (&c.function).into(),
                })
                .collect();
            if let Some(f) = &m.function_call {
                calls.push(TemplateToolCall {
                    id: format!("call_{i}"),
                    kind: "function",
                    function: f.into(),
                });
            }
            if m.role == Role::Tool && m.tool_call_id.is_none() {
                return Err(ApiError::invalid(
                    format!("messages[{i}].tool_call_id"),
                    format!(
                        "messages[{i}] is a tool result without a tool_call_id naming its call"
                    ),
                ));
            }
            Ok(TemplateMessage {
                role: role.into(),
                content,
                name: m.name.clone(),
                tool_call_id: m.tool_call_id.clone(),
                tool_calls: calls,
            })
        })
        .collect()
}

/// A chat request's input to the template.
pub struct ChatInput {
    pub messages: Vec<ChatMessage>,
    pub tools: Option<Vec<serde_json::Value>>,
    pub add_generation_prompt: bool,
}

/// Renders `input` with the model's template. The text already holds
/// the special tokens, so it is tokenized without adding any (as vLLM does).
fn render_prompt(model: &ModelInfo, input: &ChatInput) -> Result<String, ApiError> {
    let template = model.chat_template.as_ref().ok_or_else(|| {
        ApiError::invalid(
            "messages",
            "this model has no chat template (tokenizer_config.json has none); \
             use /v1/completions or start the server with --chat-template FILE",
        )
    })?;
    let mut conversation = Conversation {
        messages: template_messages(&input.messages)?,
        tools: input.tools.clone(),
        add_generation_prompt: input.add_generation_prompt,
    };
    let uses_tools = conversation.tools.is_some()
        || conversation
            .messages
            .iter()
            .any(|m| m.role == "tool" || !m.tool_calls.is_empty());
    if uses_tools && !template.handles_tools {
        let tools = conversation.tools.take();
        conversation.messages = inline_tools(
            conversation.messages,
            tools.as_deref(),
            model.tool_call_format,
        );
    }
    let tok = &model.tokenizer;
    template.render(
        &conversation,
        tok.bos_token.as_deref(),
        tok.eos_token.as_deref(),
    )
}

/// The prompt's token ids for `messages`: rendered and tokenized on the
/// blocking pool. `add_special_tokens` is false for chat (the template
/// already wrote them).
pub async fn tokenize_chat(
    model: &Arc<ModelInfo>,
    input: ChatInput,
    add_special_tokens: bool,
) -> Result<Vec<u32>, ApiError> {
    let model = model.clone();
    blocking::run(move || {
        let text = render_prompt(&model, &input)?;
        model
            .tokenizer
            .encode(&text, add_special_tokens)
            .map_err(ApiError::internal)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_engine::demo::{BOS, CHAT_TEMPLATE};

    fn msg(role: &str, content: &str) -> TemplateMessage {
        TemplateMessage::text(role, content.into())
    }

    fn conv(messages: &[TemplateMessage], add_generation_prompt: bool) -> Conversation {
        Conversation {
            messages: messages.to_vec(),
            tools: None,
            add_generation_prompt,
        }
    }

    #[test]
    fn renders_the_demo_chatml_template() {
        let t = ChatTemplate::new(CHAT_TEMPLATE.to_string()).unwrap();
        let out = t
            .render(
                &conv(&[msg("system", "Be terse."), msg("user", "Hi")], true),
                Some(BOS),
                None,
            )
            .unwrap();
        assert_eq!(
            out,
            format!(
                "{BOS}<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
                 <|im_start|>assistant\n"
            )
        );
        let out = t
            .render(&conv(&[msg("user", "Hi")], false), Some(BOS), None)
            .unwrap();
        assert!(out.ends_with("Hi<|im_end|>\n"), "{out}");
    }

    /// A Llama-3-style template: Python string methods, `raise_exception`,
    /// and block tags whose newlines `trim_blocks` removes.
    const PY_TEMPLATE: &str = "{{ bos_token }}\n\
        {% for message in messages %}\n\
        {% if message['role'] == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}\n\
        {{ '<|' + message['role'] + '|>' + message['content'].strip() + eos_token }}\n\
        {% endfor %}\n\
        {% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

    #[test]
    fn python_string_methods_and_trimmed_blocks() {
        let t = ChatTemplate::new(PY_TEMPLATE.to_string()).unwrap();
        let out = t
            .render(
                &conv(&[msg("user", "  padded  \n")], true),
                Some("<s>"),
                Some("</s>"),
            )
            .unwrap();
        assert_eq!(out, "<s>\n<|user|>padded</s>\n<|assistant|>");
        let e = t
            .render(&conv(&[msg("tool", "x")], true), None, None)
            .unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.param.as_deref(), Some("messages"));
        assert!(e.message.contains("no tools here"), "{}", e.message);
    }

    #[test]
    fn a_broken_template_fails_at_start_up() {
        assert!(ChatTemplate::new("{% for %}".to_string()).is_err());
    }

    /// A template that reads `tools` and the messages' calls, as Qwen2.5's
    /// does: tools arrive in OpenAI's shape, call arguments sent as JSON
    /// text arrive as objects, tool results keep their call id.
    const TOOLS_TEMPLATE: &str = "{% if tools %}[tools]{% for t in tools %}{{ t.function.name }}:{{ t.function.parameters | tojson }};{% endfor %}\n{% endif %}\
        {% for m in messages %}\
        {% if m.tool_calls is defined %}[{{ m.role }}]{% for c in m.tool_calls %}{{ c.id }} {{ c.function.name }} {{ c.function.arguments.city }};{% endfor %}\n\
        {% elif m.role == 'tool' %}[result {{ m.tool_call_id }}]{{ m.content }}\n\
        {% else %}[{{ m.role }}]{{ m.content }}\n{% endif %}{% endfor %}";

    #[test]
    fn tools_and_calls_reach_a_template_that_reads_them() {
        let t = ChatTemplate::new(TOOLS_TEMPLATE.to_string()).unwrap();
        assert!(t.handles_tools);
        let messages: Vec<ChatMessage> = serde_json::from_value(serde_json::json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_9", "content": "rain"},
            {"role": "function", "name": "get_weather", "content": "snow"}
        ]))
        .unwrap();
        let conversation = Conversation {
            messages: template_messages(&messages).unwrap(),
            tools: Some(vec![serde_json::json!({"type": "function", "function":
                {"name": "get_weather", "parameters": {"type": "object"}}})]),
            add_generation_prompt: false,
        };
        let out = t.render(&conversation, None, None).unwrap();
        assert_eq!(
            out,
            "[tools]get_weather:{\"type\":\"object\"};[user]weather?\n\
             [assistant]call_9 get_weather Oslo;[result call_9]rain\n[result ]snow\n"
        );
        // A tool result must say which call it answers.
        let orphan: Vec<ChatMessage> =
            serde_json::from_value(serde_json::json!([{"role": "tool", "content": "x"}])).unwrap();
        let e = template_messages(&orphan).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].tool_call_id"));
    }
}
