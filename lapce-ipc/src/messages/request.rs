//! The request side: [`AIRequest`] and what it is made of. The field names in JSON are those of
//! the TypeScript originals.

use super::RawJson;

/// A chat or completion request (`MessageType::Chat` / `MessageType::Complete`).
///
/// TypeScript original:
/// ```text
/// interface AIRequest {
///     messages: Message[];  model: string;  temperature?: number;  maxTokens?: number;
///     tools?: Tool[];  systemPrompt?: string;  stream?: boolean;
/// }
/// ```
#[derive(
    Debug,
    Clone,
    PartialEq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct AIRequest {
    /// The conversation so far, oldest first.
    pub messages: Vec<Message>,
    /// The model to use.
    pub model: String,
    /// Sampling temperature. A non-finite value cannot be written in JSON: it is written as
    /// `null` and reads back as `None` (as `JSON.stringify` does with `NaN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Upper bound on generated tokens (`maxTokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// System prompt (`systemPrompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Whether the answer is streamed as `StreamChunk` frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

/// One message of a conversation.
///
/// TypeScript original:
/// `interface Message { role: "system" | "user" | "assistant"; content: string; toolCalls?: ToolCall[] }`
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Message {
    /// Who wrote it.
    pub role: MessageRole,
    /// The text.
    pub content: String,
    /// Tools the assistant asked to call (`toolCalls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

impl Message {
    /// A message with `role` and `content` and no tool calls.
    pub fn new(role: MessageRole, content: impl Into<String>) -> Message {
        Message { role, content: content.into(), tool_calls: None }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Message {
        Message::new(MessageRole::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Message {
        Message::new(MessageRole::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(MessageRole::Assistant, content)
    }
}

/// Who wrote a [`Message`]; lower case in JSON (`"system"`, `"user"`, `"assistant"`).
///
/// These are the three roles of the TypeScript original. There is no `"tool"` role: a tool's
/// answer travels as a [`ToolResult`](super::ToolResult). Any other string is refused on decode.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq), compare(PartialEq))]
pub enum MessageRole {
    /// Instructions to the model.
    System,
    /// The person at the editor.
    User,
    /// The model.
    Assistant,
}

/// A call of a [`Tool`] the model asks for.
///
/// TypeScript original: `interface ToolCall { name: string; parameters: any; id: string }`.
/// `parameters` is free-form JSON ([`RawJson`]); when a TypeScript client leaves it `undefined`
/// (so `JSON.stringify` drops the field) it decodes as `null`.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct ToolCall {
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON.
    #[serde(default)]
    pub parameters: RawJson,
    /// Identifies this call; a [`ToolResult`](super::ToolResult) answers it by this id.
    pub id: String,
}

/// A tool the model may call.
///
/// The TypeScript originals use `Tool` without defining it; this is the common shape: a name, an
/// optional description, and the JSON Schema of its parameters (free-form JSON, `null` when
/// absent).
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Tool {
    /// The name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the parameters.
    #[serde(default)]
    pub parameters: RawJson,
}
