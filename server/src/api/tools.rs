//! Tool calling, request side: `tools` / `tool_choice` /
//! `parallel_tool_calls` (and the legacy `functions` / `function_call`,
//! mapped onto the same path) read into one [`ToolRequest`]; the grammar
//! that makes `required` and a named function certain; and, for chat
//! templates that know nothing of tools, the tools written into the system
//! message in the served model's call format.

use serde_json::{json, Value};
use tandem_engine::guided::GuidedDecoding;

use super::chat_template::TemplateMessage;
use super::errors::ApiError;
use super::tool_parser::ToolCallFormat;
use super::{blocking, AppState};

/// Most tools one request may declare (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// One declared function.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionDef {
    pub name: String,
    pub description: Option<String>,
    /// A JSON schema for the arguments (an object with no properties when
    /// omitted: a function that takes nothing).
    pub parameters: Value,
}

/// What the model may or must do with the tools.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolChoice {
    /// No call: the tools are not shown to the model.
    None,
    /// The model decides; its output is parsed for calls.
    Auto,
    /// At least one call (exactly one without `parallel_tool_calls`).
    Required,
    /// One call of this function.
    Named(String),
}

/// The request's tools, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolRequest {
    pub functions: Vec<FunctionDef>,
    pub choice: ToolChoice,
    /// More than one call per answer (`parallel_tool_calls`, default true).
    pub parallel: bool,
    /// Sent as `functions`: answered with `function_call`.
    pub legacy: bool,
}

/// The request fields tool calling reads, as sent.
pub struct ToolFields<'a> {
    pub tools: Option<&'a Value>,
    pub tool_choice: Option<&'a Value>,
    pub parallel_tool_calls: Option<bool>,
    pub functions: Option<&'a Value>,
    pub function_call: Option<&'a Value>,
}

impl ToolFields<'_> {
    /// The tools of a request, or `None` when it declares none.
    pub fn read(&self) -> Result<Option<ToolRequest>, ApiError> {
        let present = |v: Option<&Value>| v.is_some_and(|v| !v.is_null());
        if present(self.tools) && present(self.functions) {
            return Err(ApiError::invalid(
                "functions",
                "send tools or the legacy functions, not both",
            ));
        }
        let legacy = present(self.functions);
        let (list, list_param, choice, choice_param) = if legacy {
            (
                self.functions,
                "functions",
                self.function_call,
                "function_call",
            )
        } else {
            (self.tools, "tools", self.tool_choice, "tool_choice")
        };
        let functions = match list.filter(|v| !v.is_null()) {
            Some(v) => read_functions(v, list_param, legacy)?,
            None => Vec::new(),
        };
        let choice = read_choice(choice, choice_param, &functions)?;
        if functions.is_empty() {
            return Ok(None);
        }
        Ok(Some(ToolRequest {
            functions,
            choice,
            parallel: !legacy && self.parallel_tool_calls.unwrap_or(true),
            legacy,
        }))
    }
}

fn read_functions(v: &Value, param: &str, legacy: bool) -> Result<Vec<FunctionDef>, ApiError> {
    let items = v.as_array().ok_or_else(|| {
        ApiError::invalid(
            param,
            format!("{param} must be a list of function definitions"),
        )
    })?;
    if items.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            param,
            format!(
                "{param} lists {} functions; at most {MAX_TOOLS} are allowed",
                items.len()
            ),
        ));
    }
    let mut out: Vec<FunctionDef> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let (f, at) = if legacy {
            (item, format!("{param}[{i}]"))
        } else {
            let kind = item.get("type").and_then(Value::as_str);
            if kind != Some("function") {
                return Err(ApiError::invalid(
                    format!("{param}[{i}].type"),
                    format!("{param}[{i}].type must be \"function\", the only kind of tool"),
                ));
            }
            let f = item.get("function").ok_or_else(|| {
                ApiError::invalid(
                    format!("{param}[{i}].function"),
                    format!("{param}[{i}] needs a \"function\" object"),
                )
            })?;
            (f, format!("{param}[{i}].function"))
        };
        let def = read_function(f, &at)?;
        if out.iter().any(|d| d.name == def.name) {
            return Err(ApiError::invalid(
                format!("{at}.name"),
                format!(
                    "{at}.name {:?} is declared twice; names must be unique",
                    def.name
                ),
            ));
        }
        out.push(def);
    }
    Ok(out)
}

fn read_function(f: &Value, at: &str) -> Result<FunctionDef, ApiError> {
    let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !valid {
        return Err(ApiError::invalid(
            format!("{at}.name"),
            format!(
                "{at}.name must be 1 to 64 characters of a-z, A-Z, 0-9, _, - and ., got {:?}",
                f.get("name")
            ),
        ));
    }
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => {
            json!({"type": "object", "properties": {}, "additionalProperties": false})
        }
        Some(p @ Value::Object(_)) => p.clone(),
        Some(other) => {
            return Err(ApiError::invalid(
                format!("{at}.parameters"),
                format!("{at}.parameters must be a JSON schema object, got {other}"),
            ))
        }
    };
    Ok(FunctionDef {
        name: name.to_string(),
        description: f
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        parameters,
    })
}

/// `"none" | "auto" | "required" | {"type": "function", "function":
/// {"name"}}` (legacy: `"none" | "auto" | {"name"}`).
fn read_choice(
    v: Option<&Value>,
    param: &str,
    functions: &[FunctionDef],
) -> Result<ToolChoice, ApiError> {
    let choice = match v {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" if param == "tool_choice" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid(
                    param,
                    format!("{param} {other:?} is not one of \"none\", \"auto\", \"required\" or a named function"),
                ))
            }
        },
        Some(obj) => {
            let name = obj
                .get("function")
                .unwrap_or(obj)
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid(
                        param,
                        format!("{param} as an object names a function: {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"),
                    )
                })?;
            ToolChoice::Named(name.to_string())
        }
    };
    match &choice {
        ToolChoice::Required if functions.is_empty() => Err(ApiError::invalid(
            param,
            format!("{param} \"required\" needs tools to call; the request declares none"),
        )),
        ToolChoice::Named(name) if !functions.iter().any(|f| &f.name == name) => {
            Err(ApiError::invalid(
                param,
                format!("{param} names the function {name:?}, which the request does not declare"),
            ))
        }
        _ => Ok(choice),
    }
}

impl ToolRequest {
    /// Whether the output is read for calls.
    pub fn parses_output(&self) -> bool {
        self.choice != ToolChoice::None
    }

    /// The tools in OpenAI's shape, as chat templates expect them
    /// (transformers passes the same); none when the model may not call.
    pub fn template_tools(&self) -> Option<Vec<Value>> {
        self.parses_output().then(|| {
            self.functions
                .iter()
                .map(|f| {
                    let mut function = json!({"name": f.name, "parameters": f.parameters});
                    if let Some(d) = &f.description {
                        function["description"] = json!(d);
                    }
                    json!({"type": "function", "function": function})
                })
                .collect()
        })
    }

    /// For `required` and a named function: a grammar that only lets the
    /// model write calls of declared functions with valid arguments, in
    /// the served model's format.
    pub fn constraint(&self, format: ToolCallFormat) -> Option<GuidedDecoding> {
        let allowed: Vec<&FunctionDef> = match &self.choice {
            ToolChoice::None | ToolChoice::Auto => return None,
            ToolChoice::Required => self.functions.iter().collect(),
            ToolChoice::Named(n) => self.functions.iter().filter(|f| &f.name == n).collect(),
        };
        let several = self.parallel && self.choice == ToolChoice::Required;
        let key = format.arguments_key();
        let mut variants: Vec<Value> = allowed
            .iter()
            .map(|f| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": f.name}, key: f.parameters},
                    "required": ["name", key],
                    "additionalProperties": false,
                })
            })
            .collect();
        let mut body = if variants.len() == 1 {
            variants.pop().expect("one variant")
        } else {
            json!({"anyOf": variants})
        };
        body["x-guidance"] = tandem_engine::guided::json_layout();
        let (call, separator) = match format {
            ToolCallFormat::Hermes => ("\"<tool_call>\\n\" body \"\\n</tool_call>\"", "\"\\n\""),
            ToolCallFormat::Llama3Json => ("body", "\"; \""),
        };
        let start = if several {
            format!("start: call ({separator} call)*")
        } else {
            "start: call".to_string()
        };
        Some(GuidedDecoding::Lark(format!(
            "{start}\ncall: {call}\nbody: %json {body}\n"
        )))
    }

    /// Checks every function's schema, then the call grammar, on the
    /// blocking pool; the error names the tool whose schema is wrong.
    pub async fn check(&self, state: &AppState) -> Result<Option<GuidedDecoding>, ApiError> {
        let compiler = state.model.guidance.clone();
        let constraint = self.constraint(state.model.tool_call_format);
        let functions = self.functions.clone();
        let (list, legacy) = (if self.legacy { "functions" } else { "tools" }, self.legacy);
        blocking::run(move || {
            for (i, f) in functions.iter().enumerate() {
                let spec = GuidedDecoding::JsonSchema(f.parameters.clone());
                if let Err(e) = compiler.compile(&spec) {
                    let at = if legacy {
                        format!("{list}[{i}].parameters")
                    } else {
                        format!("{list}[{i}].function.parameters")
                    };
                    let message = e.to_string().replacen(e.param(), &at, 1);
                    return Err(ApiError::invalid(at, message));
                }
            }
            if let Some(spec) = &constraint {
                compiler
                    .compile(spec)
                    .map_err(|e| ApiError::invalid(list, e.to_string()))?;
            }
            Ok(constraint)
        })
        .await
    }
}

/// For templates that ignore `tools`: the tools described in the system
/// message, earlier calls written into the assistant turns and results
/// given as user turns, all in the model's own call format.
pub fn inline_tools(
    messages: Vec<TemplateMessage>,
    tools: Option<&[Value]>,
    format: ToolCallFormat,
) -> Vec<TemplateMessage> {
    let instructions = tools.map(|tools| tool_instructions(tools, format));
    let mut out: Vec<TemplateMessage> = Vec::with_capacity(messages.len() + 1);
    for mut m in messages {
        match m.role.as_str() {
            "system" if out.is_empty() => {
                if let Some(i) = &instructions {
                    m.content = format!("{}\n\n{i}", m.content);
                }
            }
            "assistant" if !m.tool_calls.is_empty() => {
                let calls: Vec<String> = m
                    .tool_calls
                    .drain(..)
                    .map(|c| {
                        let body = json!({"name": c.function.name, format.arguments_key(): c.function.arguments});
                        match format {
                            ToolCallFormat::Hermes => format!("<tool_call>\n{body}\n</tool_call>"),
                            ToolCallFormat::Llama3Json => body.to_string(),
                        }
                    })
                    .collect();
                let joined = calls.join(if format == ToolCallFormat::Hermes {
                    "\n"
                } else {
                    "; "
                });
                m.content = [m.content.trim(), &joined]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            "tool" => {
                let result = format!("<tool_response>\n{}\n</tool_response>", m.content);
                // Consecutive results share one user turn.
                match out.last_mut() {
                    Some(prev)
                        if prev.role == "user" && prev.content.starts_with("<tool_response>") =>
                    {
                        prev.content = format!("{}\n{result}", prev.content);
                    }
                    _ => out.push(TemplateMessage::text("user", result)),
                }
                continue;
            }
            _ => {}
        }
        if let Some(i) = instructions
            .as_ref()
            .filter(|_| out.is_empty() && m.role != "system")
        {
            out.push(TemplateMessage::text("system", i.clone()));
        }
        out.push(m);
    }
    out
}

/// The system-message text that describes `tools` in `format`.
fn tool_instructions(tools: &[Value], format: ToolCallFormat) -> String {
    let listing: Vec<String> = tools.iter().map(|t| t["function"].to_string()).collect();
    match format {
        ToolCallFormat::Hermes => format!(
            "You may call one or more functions to help with the user's request. The \
             functions, as JSON schemas, are listed inside <tools></tools>:\n<tools>\n{}\n\
             </tools>\nTo call a function, write a JSON object with its name and arguments \
             between <tool_call></tool_call> tags:\n<tool_call>\n{{\"name\": <function name>, \
             \"arguments\": <arguments object>}}\n</tool_call>",
            listing.join("\n")
        ),
        ToolCallFormat::Llama3Json => format!(
            "You may call functions to help with the user's request. To call one, answer \
             only with a JSON object {{\"name\": <function name>, \"parameters\": <arguments \
             object>}}; separate several calls with \"; \". The functions, as JSON schemas:\n{}",
            listing.join("\n")
        ),
    }
}

#[cfg(test)]
#[path = "tools_tests.rs"]
mod tests;
