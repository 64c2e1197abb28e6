//! [`RawJson`]: free-form JSON (TypeScript `any`), kept as the exact text the peer wrote.

use std::fmt;

use rkyv::rancor::{Fallible, Source};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::{Archive, Place, SerializeUnsized};
use serde_json::value::RawValue;

use super::codec::{decode_error, encode_error};
use super::{
    ArchivedAIRequest, ArchivedCompletionResponse, ArchivedErrorBody, ArchivedErrorCode, ArchivedMessage,
    ArchivedMessageRole, ArchivedStreamChunk, ArchivedTool, ArchivedToolCall, ArchivedToolResult,
    ArchivedUsage,
};
use crate::Result;

/// A free-form JSON value (`parameters: any` in the TypeScript originals), held as JSON text.
///
/// The text is always one valid JSON value with no surrounding whitespace: every way in
/// ([`RawJson::new`], [`RawJson::from_value`], JSON decoding, rkyv access and decoding) checks
/// it. It is kept exactly as written: key order, number precision (integers beyond 2^53, long
/// decimals) and formatting inside survive a trip through Rust untouched, and decoding does not
/// build a tree.
///
/// - In JSON it is the value itself, not a string: `"parameters": {"path": "a.rs"}`.
/// - In rkyv it is archived as an [`ArchivedString`] holding the JSON text, so a zero-copy
///   reader gets `&str` at once (`archived.parameters.as_str()`).
///   [`Codec::access_rkyv`](super::Codec::access_rkyv) and
///   [`Codec::from_rkyv`](super::Codec::from_rkyv) both check that the text is JSON.
/// - Equality compares the text: `{"a":1}` and `{ "a": 1 }` differ.
///
/// Use [`RawJson::parse`] to get a typed value or a `serde_json::Value`.
///
/// ```
/// use lapce_ipc::messages::RawJson;
///
/// let args = RawJson::new(r#" {"path": "src/main.rs", "line": 12} "#)?;
/// assert_eq!(args.as_str(), r#"{"path": "src/main.rs", "line": 12}"#);
/// let value: serde_json::Value = args.parse()?;
/// assert_eq!(value["line"], 12);
/// assert!(RawJson::new("{not json").is_err());
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawJson(String);

impl RawJson {
    /// JSON `null`: what a TypeScript client's `undefined` becomes (the field is left out).
    pub fn null() -> RawJson {
        RawJson("null".to_owned())
    }

    /// Checks that `text` is one JSON value and keeps it (without surrounding whitespace).
    pub fn new(text: impl Into<String>) -> Result<RawJson> {
        let text = text.into();
        let trimmed = check(&text).map_err(|e| decode_error("json", "RawJson", e))?;
        if trimmed.len() == text.len() {
            Ok(RawJson(text))
        } else {
            Ok(RawJson(trimmed.to_owned()))
        }
    }

    /// Serializes any serde value (for example a `serde_json::Value`) to compact JSON text.
    pub fn from_value<T: serde::Serialize + ?Sized>(value: &T) -> Result<RawJson> {
        serde_json::to_string(value).map(RawJson).map_err(|e| encode_error("json", "RawJson", e))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the value is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.0 == "null"
    }

    /// Decodes the text as `T` (a `serde_json::Value`, or a struct of your own).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.0).map_err(|e| decode_error("json", super::encoding::short_name::<T>(), e))
    }
}

/// Parses `text` as one JSON value without building it; returns it without surrounding
/// whitespace.
fn check(text: &str) -> std::result::Result<&str, serde_json::Error> {
    serde_json::from_str::<&RawValue>(text).map(RawValue::get)
}

/// Checks archived JSON text: one JSON value, no surrounding whitespace (what our encoder
/// writes; anything else came from a broken or hostile peer).
pub(crate) fn check_archived(text: &ArchivedString) -> std::result::Result<(), String> {
    match check(text.as_str()) {
        Ok(t) if t.len() == text.len() => Ok(()),
        Ok(_) => Err("free-form JSON with surrounding whitespace".to_owned()),
        Err(e) => Err(format!("free-form JSON field is not JSON: {e}")),
    }
}

impl Default for RawJson {
    /// JSON `null`.
    fn default() -> RawJson {
        RawJson::null()
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawJson({})", self.0)
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Written as the JSON value itself (with `serde_json`; other serde formats see serde_json's
/// raw-value wrapper).
impl serde::Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        // Re-checks the text (a scan, no allocation): the invariant holds by construction, but
        // what we write must be valid JSON whatever happened.
        let raw = serde_json::from_str::<&RawValue>(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Captures the value's text without building a tree. Works with `serde_json::from_slice` /
/// `from_str` (not through `serde_json::Value` or untagged enums).
impl<'de> serde::Deserialize<'de> for RawJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<RawJson, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(|raw| RawJson(Box::<str>::from(raw).into_string()))
    }
}

/// For an `Option<RawJson>` field: a field that is present is `Some`, even when it is `null`
/// (JSON `null` is a value like any other here), so `Some(RawJson::null())` and `None` (field left
/// out) survive a round trip. Use with `#[serde(default, deserialize_with = ...)]`.
pub(crate) fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<RawJson>, D::Error> {
    serde::Deserialize::deserialize(deserializer).map(Some)
}

/// Archived as the JSON text, an [`ArchivedString`].
impl Archive for RawJson {
    type Archived = ArchivedString;
    type Resolver = StringResolver;

    fn resolve(&self, resolver: StringResolver, out: Place<ArchivedString>) {
        ArchivedString::resolve_from_str(&self.0, resolver, out);
    }
}

impl<S: Fallible + ?Sized> rkyv::Serialize<S> for RawJson
where
    S::Error: Source,
    str: SerializeUnsized<S>,
{
    fn serialize(&self, serializer: &mut S) -> std::result::Result<StringResolver, S::Error> {
        ArchivedString::serialize_from_str(&self.0, serializer)
    }
}

/// Infallible on purpose: the text was checked before (`CheckJson`, run by `access_rkyv` and
/// `from_rkyv`). A failing element deserializer inside a `Vec` makes
/// rkyv 0.8.18 leak the elements built so far and the vector's allocation (found by the
/// `protocol_decode` fuzz target), so nothing fails here; and if unchecked text ever got through
/// (a caller deserializing an unchecked view itself), serializing it to JSON fails instead of
/// writing invalid JSON.
impl<D: Fallible + ?Sized> rkyv::Deserialize<RawJson, D> for ArchivedString {
    fn deserialize(&self, _: &mut D) -> std::result::Result<RawJson, D::Error> {
        Ok(RawJson(self.as_str().to_owned()))
    }
}

impl PartialEq<RawJson> for ArchivedString {
    fn eq(&self, other: &RawJson) -> bool {
        self.as_str() == other.as_str()
    }
}

/// Checks the free-form JSON ([`RawJson`] fields) inside an archived value: rkyv's validation
/// covers structure and UTF-8, this covers the rest of what a [`RawJson`] promises.
pub(crate) trait CheckJson {
    /// `Err` names the first field that is not one JSON value without surrounding whitespace.
    fn check_json(&self) -> std::result::Result<(), String>;
}

fn check_all<'a, T: CheckJson + 'a>(
    items: Option<impl IntoIterator<Item = &'a T>>,
) -> std::result::Result<(), String> {
    items.into_iter().flatten().try_for_each(CheckJson::check_json)
}

impl CheckJson for ArchivedAIRequest {
    fn check_json(&self) -> std::result::Result<(), String> {
        check_all(Some(self.messages.iter()))?;
        check_all(self.tools.as_ref().map(|t| t.iter()))
    }
}

impl CheckJson for ArchivedMessage {
    fn check_json(&self) -> std::result::Result<(), String> {
        check_all(self.tool_calls.as_ref().map(|t| t.iter()))
    }
}

impl CheckJson for ArchivedToolCall {
    fn check_json(&self) -> std::result::Result<(), String> {
        check_archived(&self.parameters).map_err(|e| format!("ToolCall.parameters: {e}"))
    }
}

impl CheckJson for ArchivedTool {
    fn check_json(&self) -> std::result::Result<(), String> {
        check_archived(&self.parameters).map_err(|e| format!("Tool.parameters: {e}"))
    }
}

impl CheckJson for ArchivedCompletionResponse {
    fn check_json(&self) -> std::result::Result<(), String> {
        check_all(self.tool_calls.as_ref().map(|t| t.iter()))
    }
}

impl CheckJson for ArchivedStreamChunk {
    fn check_json(&self) -> std::result::Result<(), String> {
        check_all(self.tool_calls.as_ref().map(|t| t.iter()))
    }
}

impl CheckJson for ArchivedErrorBody {
    fn check_json(&self) -> std::result::Result<(), String> {
        match self.details.as_ref() {
            Some(details) => check_archived(details).map_err(|e| format!("ErrorBody.details: {e}")),
            None => Ok(()),
        }
    }
}

/// Types without free-form JSON.
macro_rules! no_json {
    ($($ty:ty),*) => {$(
        impl CheckJson for $ty {
            fn check_json(&self) -> std::result::Result<(), String> {
                Ok(())
            }
        }
    )*};
}

no_json!(ArchivedMessageRole, ArchivedUsage, ArchivedToolResult, ArchivedErrorCode);
