//! The AI message protocol: typed payloads for frames (requests, answers, streamed chunks, tool
//! calls and results, errors), each encodable as JSON or as an rkyv archive.
//!
//! - **JSON** is what a TypeScript peer speaks: field names are those of the TypeScript
//!   originals (`maxTokens`, `toolCalls`, `systemPrompt`), roles are lower-case strings,
//!   optional fields are left out when absent and accepted as absent or `null`, and unknown
//!   fields are ignored, so a newer peer's messages still decode.
//! - **rkyv** (0.8) is the zero-copy form for Rust peers. Bytes from a peer are only ever read
//!   through validation ([`Codec::access_rkyv`], [`Codec::from_rkyv`]): a malformed or hostile
//!   archive is an [`IpcError::Decode`](crate::IpcError::Decode), never a panic or an
//!   out-of-bounds read. Zero-copy access needs input aligned to [`RKYV_ALIGN`] bytes
//!   ([`AlignedBytes`] copies input that is not).
//! - Free-form JSON (`parameters: any` in TypeScript) is a [`RawJson`]: the exact JSON text, a
//!   JSON value in JSON and a string in rkyv.
//!
//! Which payload goes with which frame type ([`MessageType`](crate::frame::MessageType)):
//!
//! | frame type | payload |
//! |---|---|
//! | `Chat`, `Complete` | [`AIRequest`] |
//! | `Response` | [`CompletionResponse`] |
//! | `StreamChunk` | [`StreamChunk`], one per piece, with the request's message id; then `StreamEnd` |
//! | `Error` | [`ErrorBody`] |
//! | `Cancel` | empty: the frame's message id names the request |
//!
//! The typed calls of the server and client layer take an [`Encoding`] to name the format:
//! [`Json`] (any serde type) or [`Rkyv`] (the types here), or one of your own.
//!
//! A [`ToolResult`] answers a [`ToolCall`]; the frame type that carries it is the server layer's
//! to define (the protocol names none). The frame header does not say which encoding a
//! payload uses: the two ends agree on it (JSON for a TypeScript peer).
//!
//! ```
//! use lapce_ipc::messages::{AIRequest, Codec, Message, MessageRole};
//!
//! let request = AIRequest {
//!     messages: vec![Message::user("Explain this function")],
//!     model: "claude".into(),
//!     max_tokens: Some(256),
//!     stream: Some(true),
//!     ..AIRequest::default()
//! };
//!
//! // JSON, as a TypeScript peer writes and reads it.
//! let json = request.to_json()?;
//! assert_eq!(
//!     std::str::from_utf8(&json).unwrap(),
//!     r#"{"messages":[{"role":"user","content":"Explain this function"}],"model":"claude","maxTokens":256,"stream":true}"#
//! );
//! assert_eq!(AIRequest::from_json(&json)?, request);
//!
//! // rkyv: a validated view without copying, or a whole value back.
//! let archive = request.to_rkyv()?;
//! let view = AIRequest::access_rkyv(&archive)?;
//! assert_eq!(view.messages[0].role, MessageRole::User);
//! assert_eq!(view.messages[0].content.as_str(), "Explain this function");
//! assert_eq!(AIRequest::from_rkyv(&archive)?, request);
//!
//! // Garbage is an error, not a crash.
//! assert!(AIRequest::from_rkyv(&[0xFF; 64]).is_err());
//! # Ok::<(), lapce_ipc::IpcError>(())
//! ```

mod codec;
mod encoding;
mod json;
mod request;
mod response;

pub use codec::{AlignedBytes, Codec, RKYV_ALIGN};
pub use encoding::{Encoding, Json, Rkyv};
pub use json::RawJson;
pub use request::{
    AIRequest, ArchivedAIRequest, ArchivedMessage, ArchivedMessageRole, ArchivedTool, ArchivedToolCall,
    Message, MessageRole, Tool, ToolCall,
};
pub use response::{
    ArchivedCompletionResponse, ArchivedErrorBody, ArchivedErrorCode, ArchivedStreamChunk,
    ArchivedToolResult, ArchivedUsage, CompletionResponse, ErrorBody, ErrorCode, StreamChunk, ToolResult,
    Usage,
};
/// The aligned byte buffer [`Codec::to_rkyv`] returns (re-exported from rkyv).
pub use rkyv::util::AlignedVec;

codec::impl_codec!(
    AIRequest,
    Message,
    MessageRole,
    ToolCall,
    Tool,
    CompletionResponse,
    Usage,
    StreamChunk,
    ToolResult,
    ErrorBody,
    ErrorCode,
);
