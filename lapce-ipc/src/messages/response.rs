//! The response side: a whole answer, a streamed chunk, a tool's result and an error body.
//!
//! The TypeScript originals have a `complete(request) -> response` handler and streamed tokens but
//! no types for them; these follow the request side's conventions (camelCase, optional
//! fields left out when absent).

use std::fmt;

use super::{Message, MessageRole, RawJson, ToolCall};

/// The whole answer to an [`AIRequest`](super::AIRequest) (`MessageType::Response`): what the
/// assistant said, the tools it wants called, and why it stopped.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct CompletionResponse {
    /// The generated text.
    pub content: String,
    /// Tools the model asks to call (`toolCalls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The model that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Why generation stopped (`finishReason`), e.g. `"stop"`, `"length"`, `"toolCalls"`,
    /// `"cancelled"`. A string, so a newer peer's reasons decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl CompletionResponse {
    /// The answer as an assistant [`Message`], to append to the conversation.
    pub fn into_message(self) -> Message {
        Message { role: MessageRole::Assistant, content: self.content, tool_calls: self.tool_calls }
    }
}

/// Token counts of a completion.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct Usage {
    /// Tokens in the request (`promptTokens`).
    pub prompt_tokens: u32,
    /// Tokens generated (`completionTokens`).
    pub completion_tokens: u32,
}

/// One piece of a streamed answer (`MessageType::StreamChunk`, with the request's message id).
/// The stream ends with `MessageType::StreamEnd`.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct StreamChunk {
    /// Text generated since the previous chunk (may be empty).
    pub delta: String,
    /// Tool calls completed in this chunk (`toolCalls`): each is whole, its `parameters` valid
    /// JSON; a sender that receives arguments in pieces assembles them first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Set on the last chunk: why generation stopped (`finishReason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

/// The outcome of running a tool the model called, answering the [`ToolCall`] with the same id.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
#[rkyv(derive(Debug), compare(PartialEq))]
pub struct ToolResult {
    /// The [`ToolCall::id`] this answers (`toolCallId`).
    pub tool_call_id: String,
    /// The tool's output, as text.
    pub content: String,
    /// `true` when the tool failed and `content` describes the failure (`isError`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
}

/// The payload of a `MessageType::Error` frame: a code a program can match, a message for
/// people, and optional free-form details.
///
/// ```
/// use lapce_ipc::messages::{Codec, ErrorBody, ErrorCode};
///
/// let body = ErrorBody::new(ErrorCode::UNKNOWN_TYPE, "no handler for type 0x777");
/// assert_eq!(body.to_json()?, br#"{"code":404,"message":"no handler for type 0x777"}"#);
/// let theirs = ErrorBody::from_json(br#"{"code":"rate_limited","message":"slow down"}"#)?;
/// assert_eq!(theirs.code, ErrorCode::Text("rate_limited".into()));
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
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
pub struct ErrorBody {
    /// What kind of error.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
    /// Anything else, as JSON. Present but `null` is `Some(RawJson::null())`; absent is `None`.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "super::json::present")]
    pub details: Option<RawJson>,
}

impl ErrorBody {
    /// An error body without details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody { code, message: message.into(), details: None }
    }
}

/// An error code: a JSON number or a JSON string, whichever the peer uses.
///
/// The numeric codes this crate uses are the associated constants (HTTP-like numbers, familiar
/// on both sides); providers' own codes pass through unchanged.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(untagged)]
#[rkyv(derive(Debug), compare(PartialEq))]
pub enum ErrorCode {
    /// A numeric code (a JSON integer).
    Number(i64),
    /// A string code, e.g. `"rate_limited"`.
    Text(String),
}

impl ErrorCode {
    /// The request could not be decoded or is invalid.
    pub const BAD_REQUEST: ErrorCode = ErrorCode::Number(400);
    /// No handler for the message type.
    pub const UNKNOWN_TYPE: ErrorCode = ErrorCode::Number(404);
    /// The request took longer than its deadline.
    pub const TIMEOUT: ErrorCode = ErrorCode::Number(408);
    /// The message is larger than the receiver accepts.
    pub const TOO_LARGE: ErrorCode = ErrorCode::Number(413);
    /// The request was cancelled (`MessageType::Cancel`).
    pub const CANCELLED: ErrorCode = ErrorCode::Number(499);
    /// The handler failed (or panicked).
    pub const INTERNAL: ErrorCode = ErrorCode::Number(500);
    /// The service behind the handler is unavailable (e.g. the model provider), or the server
    /// is shutting down or at its connection limit.
    pub const UNAVAILABLE: ErrorCode = ErrorCode::Number(503);
    /// The handler panicked (the server logged the panic and goes on serving).
    pub const HANDLER_PANICKED: ErrorCode = ErrorCode::Number(520);
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Number(n) => write!(f, "{n}"),
            ErrorCode::Text(s) => f.write_str(s),
        }
    }
}
