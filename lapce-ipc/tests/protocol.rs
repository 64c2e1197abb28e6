//! The AI protocol types: JSON exactly as a TypeScript client writes it, JSON as we write it,
//! round trips through JSON and rkyv for every type (proptest), hostile rkyv bytes, alignment,
//! and a request/stream/response exchange with a child process over a framed stream.

use crate::common;

use std::time::Duration;

use common::{child_role, connect_retry, unique_name, ChildGuard};
use lapce_ipc::frame::{BlockingFramedStream, Frame, MessageType};
use lapce_ipc::messages::{
    AIRequest, AlignedBytes, AlignedVec, Codec, CompletionResponse, ErrorBody, ErrorCode, Message,
    MessageRole, RawJson, StreamChunk, Tool, ToolCall, ToolResult, Usage, RKYV_ALIGN,
};
use lapce_ipc::{BlockingSharedMemoryListener, IpcError};
use proptest::prelude::*;

const HANG: Duration = Duration::from_secs(60);

fn json_str<T: Codec>(value: &T) -> String {
    String::from_utf8(value.to_json().unwrap()).unwrap()
}

/// The keys of a JSON object, in the order they are written.
fn keys(json: &str) -> Vec<String> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(k);
            }
            Ok(keys)
        }
    }
    serde::Deserializer::deserialize_map(&mut serde_json::Deserializer::from_str(json), Keys).unwrap()
}

// ---------------------------------------------------------------------------------------------
// JSON as TypeScript writes it

/// What `JSON.stringify` makes of a TypeScript `AIRequest` literal with every optional field set,
/// plus fields a newer client might add (top level, in a message, in a tool call, in a tool).
const TS_FULL_REQUEST: &str = r#"{
  "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Read src/lib.rs", "timestamp": 1700000000123},
    {"role": "assistant", "content": "",
     "toolCalls": [{"name": "read_file", "parameters": {"path": "src/lib.rs", "range": [1, 20]},
                    "id": "call_1", "index": 0}]}
  ],
  "model": "claude-sonnet",
  "temperature": 0.7,
  "maxTokens": 1024,
  "tools": [{"name": "read_file", "description": "Reads a file",
             "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
             "strict": true}],
  "systemPrompt": "Answer in English.",
  "stream": true,
  "requestId": "9b1c",
  "metadata": {"editor": "lapce", "nested": [1, {"deep": null}]}
}"#;

#[test]
fn typescript_request_with_every_field_and_unknown_extras_decodes() {
    let r = AIRequest::from_json(TS_FULL_REQUEST.as_bytes()).unwrap();
    assert_eq!(r.model, "claude-sonnet");
    assert_eq!(r.temperature, Some(0.7));
    assert_eq!(r.max_tokens, Some(1024));
    assert_eq!(r.system_prompt.as_deref(), Some("Answer in English."));
    assert_eq!(r.stream, Some(true));
    assert_eq!(r.messages.len(), 3);
    assert_eq!(r.messages[0], Message::system("You are terse."));
    assert_eq!(r.messages[1], Message::user("Read src/lib.rs"));
    let assistant = &r.messages[2];
    assert_eq!((assistant.role, assistant.content.as_str()), (MessageRole::Assistant, ""));
    let calls = assistant.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].name.as_str(), calls[0].id.as_str()), ("read_file", "call_1"));
    // Free-form JSON is kept as written (whitespace inside included).
    assert_eq!(calls[0].parameters.as_str(), r#"{"path": "src/lib.rs", "range": [1, 20]}"#);
    let args: serde_json::Value = calls[0].parameters.parse().unwrap();
    assert_eq!(args["range"][1], 20);
    let tools = r.tools.as_ref().unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].name, "read_file");
    assert_eq!(tools[0].description.as_deref(), Some("Reads a file"));
    let schema: serde_json::Value = tools[0].parameters.parse().unwrap();
    assert_eq!(schema["properties"]["path"]["type"], "string");
}

#[test]
fn typescript_request_with_only_required_fields_decodes() {
    let r = AIRequest::from_json(br#"{"messages":[{"role":"user","content":"hi"}],"model":"m"}"#).unwrap();
    assert_eq!(r, AIRequest { messages: vec![Message::user("hi")], model: "m".into(), ..Default::default() });
    assert_eq!(r.messages[0].tool_calls, None);
    // `null` is absent too (a client that writes `x ?? null`).
    let r = AIRequest::from_json(
        br#"{"messages":[],"model":"m","temperature":null,"maxTokens":null,"tools":null,
             "systemPrompt":null,"stream":null}"#,
    )
    .unwrap();
    assert_eq!(r, AIRequest { model: "m".into(), ..Default::default() });
}

#[test]
fn undefined_tool_parameters_decode_as_null() {
    // `JSON.stringify({name: "now", parameters: undefined, id: "c"})` drops the field.
    let call = ToolCall::from_json(br#"{"name":"now","id":"c"}"#).unwrap();
    assert!(call.parameters.is_null());
    assert_eq!(json_str(&call), r#"{"name":"now","parameters":null,"id":"c"}"#);
    let tool = Tool::from_json(br#"{"name":"now"}"#).unwrap();
    assert_eq!((tool.description, tool.parameters), (None, RawJson::null()));
}

#[test]
fn roles_are_lower_case_strings_and_others_are_refused() {
    for (role, text) in
        [(MessageRole::System, "system"), (MessageRole::User, "user"), (MessageRole::Assistant, "assistant")]
    {
        assert_eq!(json_str(&role), format!("\"{text}\""));
        assert_eq!(MessageRole::from_json(format!("\"{text}\"").as_bytes()).unwrap(), role);
    }
    for bad in [r#""tool""#, r#""User""#, r#""""#, "1", "null"] {
        let err = MessageRole::from_json(bad.as_bytes()).unwrap_err();
        assert!(matches!(err, IpcError::Decode { format: "json", what: "MessageRole", .. }), "{bad}: {err}");
    }
}

#[test]
fn malformed_json_is_a_decode_error_naming_type_and_reason() {
    let cases: [&[u8]; 7] = [
        br#"{"messages":[]}"#,                                         // no model
        br#"{"messages":[],"model":"m","maxTokens":-1}"#,              // not a u32
        br#"{"messages":[],"model":"m","maxTokens":1.5}"#,             // not an integer
        br#"{"messages":[{"role":"tool","content":""}],"model":"m"}"#, // no such role
        br#"{"messages":[],"model":"m","stream":"yes"}"#,              // not a bool
        br#"{"messages":[],"model":"m"} trailing"#,
        b"\xff\xfe",
    ];
    for bytes in cases {
        let err = AIRequest::from_json(bytes).unwrap_err();
        let IpcError::Decode { format, what, reason } = &err else { panic!("{err:?}") };
        assert_eq!((*format, *what), ("json", "AIRequest"));
        assert!(!reason.is_empty());
        assert!(err.to_string().starts_with("cannot decode AIRequest from json: "), "{err}");
    }
}

#[test]
fn every_response_type_decodes_from_typescript_json() {
    let r = CompletionResponse::from_json(
        br#"{"content":"Done.","toolCalls":[{"name":"write","parameters":{"ok":true},"id":"c2"}],
             "model":"m","finishReason":"toolCalls","usage":{"promptTokens":12,"completionTokens":3,
             "cachedTokens":0},"latencyMs":5}"#,
    )
    .unwrap();
    assert_eq!(r.content, "Done.");
    assert_eq!(r.tool_calls.as_ref().unwrap()[0].parameters.as_str(), r#"{"ok":true}"#);
    assert_eq!(r.finish_reason.as_deref(), Some("toolCalls"));
    assert_eq!(r.usage, Some(Usage { prompt_tokens: 12, completion_tokens: 3 }));
    let message = r.into_message();
    assert_eq!(message.role, MessageRole::Assistant);

    assert_eq!(
        StreamChunk::from_json(br#"{"delta":"Hel","seq":4}"#).unwrap(),
        StreamChunk { delta: "Hel".into(), ..Default::default() }
    );
    assert_eq!(
        ToolResult::from_json(br#"{"toolCallId":"c2","content":"wrote 3 bytes","isError":false}"#).unwrap(),
        ToolResult { tool_call_id: "c2".into(), content: "wrote 3 bytes".into(), is_error: Some(false) }
    );
    let e = ErrorBody::from_json(br#"{"code":429,"message":"slow down","details":{"retryAfterMs":250}}"#)
        .unwrap();
    assert_eq!(e.code, ErrorCode::Number(429));
    assert_eq!(e.details.unwrap().as_str(), r#"{"retryAfterMs":250}"#);
    // Free-form `details: null` is a value (kept), unlike `null` for a typed optional field.
    let e = ErrorBody::from_json(br#"{"code":1,"message":"","details":null}"#).unwrap();
    assert_eq!(e.details, Some(RawJson::null()));
    let e = ErrorBody::from_json(br#"{"code":"rate_limited","message":""}"#).unwrap();
    assert_eq!(e.code, ErrorCode::Text("rate_limited".into()));
    assert!(ErrorBody::from_json(br#"{"code":1.5,"message":""}"#).is_err());
    assert!(ErrorBody::from_json(br#"{"message":"no code"}"#).is_err());
}

// ---------------------------------------------------------------------------------------------
// JSON as we write it

#[test]
fn serialized_json_omits_absent_optionals() {
    let minimal = AIRequest { messages: vec![Message::user("hi")], model: "m".into(), ..Default::default() };
    assert_eq!(json_str(&minimal), r#"{"messages":[{"role":"user","content":"hi"}],"model":"m"}"#);
    assert_eq!(json_str(&CompletionResponse::default()), r#"{"content":""}"#);
    assert_eq!(json_str(&StreamChunk::default()), r#"{"delta":""}"#);
    assert_eq!(json_str(&ToolResult::default()), r#"{"toolCallId":"","content":""}"#);
    assert_eq!(json_str(&ErrorBody::new(ErrorCode::INTERNAL, "boom")), r#"{"code":500,"message":"boom"}"#);
    assert_eq!(
        json_str(&Tool { name: "t".into(), description: None, parameters: RawJson::null() }),
        r#"{"name":"t","parameters":null}"#
    );
}

#[test]
fn serialized_json_uses_the_typescript_names() {
    let call =
        ToolCall { name: "f".into(), parameters: RawJson::new(r#"{"a": [1, 2]}"#).unwrap(), id: "1".into() };
    let full = AIRequest {
        messages: vec![Message {
            role: MessageRole::Assistant,
            content: "c".into(),
            tool_calls: Some(vec![call.clone()]),
        }],
        model: "m".into(),
        temperature: Some(0.5),
        max_tokens: Some(10),
        tools: Some(vec![Tool {
            name: "f".into(),
            description: Some("d".into()),
            parameters: RawJson::new(r#"{"type":"object"}"#).unwrap(),
        }]),
        system_prompt: Some("s".into()),
        stream: Some(false),
    };
    let json = json_str(&full);
    assert_eq!(
        json,
        r#"{"messages":[{"role":"assistant","content":"c","toolCalls":[{"name":"f","parameters":{"a": [1, 2]},"id":"1"}]}],"model":"m","temperature":0.5,"maxTokens":10,"tools":[{"name":"f","description":"d","parameters":{"type":"object"}}],"systemPrompt":"s","stream":false}"#
    );
    let response = CompletionResponse {
        content: "c".into(),
        tool_calls: Some(vec![call]),
        model: Some("m".into()),
        finish_reason: Some("stop".into()),
        usage: Some(Usage { prompt_tokens: 1, completion_tokens: 2 }),
    };
    let json = json_str(&response);
    assert_eq!(keys(&json), ["content", "toolCalls", "model", "finishReason", "usage"]);
    assert!(json.contains(r#""usage":{"promptTokens":1,"completionTokens":2}"#), "{json}");
    let chunk =
        StreamChunk { delta: "d".into(), tool_calls: Some(vec![]), finish_reason: Some("stop".into()) };
    assert_eq!(keys(&json_str(&chunk)), ["delta", "toolCalls", "finishReason"]);
    let result = ToolResult { tool_call_id: "1".into(), content: "x".into(), is_error: Some(true) };
    assert_eq!(keys(&json_str(&result)), ["toolCallId", "content", "isError"]);
    let error =
        ErrorBody { details: Some(RawJson::new("[1]").unwrap()), ..ErrorBody::new(ErrorCode::TIMEOUT, "t") };
    assert_eq!(json_str(&error), r#"{"code":408,"message":"t","details":[1]}"#);
}

#[test]
fn non_finite_temperature_is_written_as_null_and_reads_back_absent() {
    let r = AIRequest { model: "m".into(), temperature: Some(f32::NAN), ..Default::default() };
    assert_eq!(json_str(&r), r#"{"messages":[],"model":"m","temperature":null}"#);
    assert_eq!(AIRequest::from_json(&r.to_json().unwrap()).unwrap().temperature, None);
    // rkyv keeps it.
    assert!(AIRequest::from_rkyv(&r.to_rkyv().unwrap()).unwrap().temperature.unwrap().is_nan());
}

#[test]
fn raw_json_keeps_precision_order_and_text_through_both_encodings() {
    let text =
        r#"{"z": 12345678901234567890123, "a": 0.1000000000000000055511151231257827, "s": "\u00e9\n"}"#;
    let call = ToolCall { name: "n".into(), parameters: RawJson::new(text).unwrap(), id: "i".into() };
    let json = call.to_json().unwrap();
    assert_eq!(ToolCall::from_json(&json).unwrap().parameters.as_str(), text);
    let archive = call.to_rkyv().unwrap();
    assert_eq!(ToolCall::access_rkyv(&archive).unwrap().parameters.as_str(), text);
    assert_eq!(ToolCall::from_rkyv(&archive).unwrap(), call);
    // Surrounding whitespace is not part of the value; invalid JSON is refused.
    assert_eq!(RawJson::new(" \n[1, 2]\t").unwrap().as_str(), "[1, 2]");
    for bad in ["", "{", "[1,]", "1 2", "nul", "'x'"] {
        assert!(matches!(RawJson::new(bad), Err(IpcError::Decode { format: "json", .. })), "{bad:?}");
    }
    let v = serde_json::json!({"b": [true, null], "a": "x"});
    assert_eq!(RawJson::from_value(&v).unwrap().parse::<serde_json::Value>().unwrap(), v);
}

// ---------------------------------------------------------------------------------------------
// rkyv: alignment and validation

fn sample_request() -> AIRequest {
    AIRequest::from_json(TS_FULL_REQUEST.as_bytes()).unwrap()
}

/// `archive`'s bytes at an address that is not a multiple of [`RKYV_ALIGN`].
fn misaligned_copy(archive: &[u8]) -> (AlignedVec, usize) {
    let mut buf = AlignedVec::new();
    buf.push(0);
    buf.extend_from_slice(archive);
    (buf, 1)
}

#[test]
fn misaligned_rkyv_input_is_copied_by_from_rkyv_and_refused_by_access() {
    let request = sample_request();
    let archive = request.to_rkyv().unwrap();
    assert_eq!(archive.as_ptr().addr() % RKYV_ALIGN, 0);
    let (buf, at) = misaligned_copy(&archive);
    let misaligned = &buf[at..];
    assert_ne!(misaligned.as_ptr().addr() % RKYV_ALIGN, 0);

    assert_eq!(AIRequest::from_rkyv(misaligned).unwrap(), request);
    let err = AIRequest::access_rkyv(misaligned).unwrap_err();
    assert!(matches!(err, IpcError::Decode { format: "rkyv", what: "AIRequest", .. }), "{err}");
    assert!(err.to_string().contains("aligned to 16 bytes"), "{err}");

    let aligned = AlignedBytes::new(misaligned);
    assert!(aligned.is_copy());
    assert_eq!(*AIRequest::access_rkyv(&aligned).unwrap(), request);
    // Aligned input is borrowed, not copied: a Vec<u8> from the frame layer normally is.
    assert!(!AlignedBytes::new(&archive).is_copy());
    assert_eq!(AlignedBytes::new(&archive).as_ptr(), archive.as_ptr());
}

/// `text` (long enough to be stored out of line, so it appears verbatim) in an archived
/// `ToolCall`, with its first byte replaced by `first`.
fn archived_call_with_patched_parameters(text: &str, first: u8) -> AlignedVec {
    let call = ToolCall { name: "n".into(), parameters: RawJson::new(text).unwrap(), id: "i".into() };
    let mut archive = call.to_rkyv().unwrap();
    let at = archive.windows(text.len()).position(|w| w == text.as_bytes()).unwrap();
    archive[at] = first;
    archive
}

#[test]
fn every_archived_type_fits_the_documented_alignment() {
    use lapce_ipc::messages::*;
    use std::mem::align_of;
    let aligns = [
        align_of::<ArchivedAIRequest>(),
        align_of::<ArchivedMessage>(),
        align_of::<ArchivedMessageRole>(),
        align_of::<ArchivedToolCall>(),
        align_of::<ArchivedTool>(),
        align_of::<ArchivedCompletionResponse>(),
        align_of::<ArchivedUsage>(),
        align_of::<ArchivedStreamChunk>(),
        align_of::<ArchivedToolResult>(),
        align_of::<ArchivedErrorBody>(),
        align_of::<ArchivedErrorCode>(),
    ];
    assert!(aligns.iter().all(|&a| a <= 8 && RKYV_ALIGN.is_multiple_of(a)), "{aligns:?}");
}

#[test]
fn rkyv_tool_parameters_that_are_not_json_are_refused() {
    // Valid UTF-8 (rkyv's validation passes) but not JSON.
    let archive = archived_call_with_patched_parameters(r#""0123456789abcdefghijklmnopqrstuvwxyz""#, b'{');
    for err in [ToolCall::access_rkyv(&archive).unwrap_err(), ToolCall::from_rkyv(&archive).unwrap_err()] {
        assert!(matches!(err, IpcError::Decode { format: "rkyv", what: "ToolCall", .. }), "{err}");
        assert!(err.to_string().contains("ToolCall.parameters: free-form JSON field is not JSON"), "{err}");
    }
    // JSON, but with surrounding whitespace, which our encoder never writes.
    let archive = archived_call_with_patched_parameters("1234567890123456789012345678901234567890", b' ');
    let err = ToolCall::from_rkyv(&archive).unwrap_err();
    assert!(err.to_string().contains("surrounding whitespace"), "{err}");
    assert!(ToolCall::access_rkyv(&archive).is_err());
    // The same bad call inside an AIRequest's second message (a Vec element after a good one).
    let mut request = sample_request();
    let text = r#""0123456789abcdefghijklmnopqrstuvwxyz""#;
    let call = ToolCall { name: "n".into(), parameters: RawJson::new(text).unwrap(), id: "i".into() };
    request.messages.push(Message { tool_calls: Some(vec![call]), ..Message::assistant("") });
    let mut archive = request.to_rkyv().unwrap();
    let at = archive.windows(text.len()).position(|w| w == text.as_bytes()).unwrap();
    archive[at] = b'{';
    assert!(AIRequest::access_rkyv(&archive).is_err());
    assert!(AIRequest::from_rkyv(&archive).is_err());
}

#[test]
fn truncated_or_empty_archives_are_errors() {
    let archive = sample_request().to_rkyv().unwrap();
    for len in 0..archive.len() {
        // Keep the tail (rkyv's root is at the end) and the head, at aligned addresses.
        let head = aligned(&archive[..len]);
        assert!(AIRequest::from_rkyv(&head).is_err(), "prefix of {len} bytes accepted");
        let _ = AIRequest::access_rkyv(&head);
    }
    assert!(matches!(AIRequest::from_rkyv(&[]), Err(IpcError::Decode { format: "rkyv", .. })));
    assert!(matches!(AIRequest::access_rkyv(&[]), Err(IpcError::Decode { .. })));
}

// ---------------------------------------------------------------------------------------------
// proptest: round trips of every type, hostile bytes

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9 _.-]{0,12}",
        1 => any::<String>(),                // any Unicode, control characters included
        1 => "[\"\\\\\n\t\u{0}\u{7f}é😀]{0,40}", // what JSON must escape, long enough to go out of line
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn raw_json() -> impl Strategy<Value = RawJson> {
    (json_value(), any::<bool>()).prop_map(|(v, pretty)| {
        let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) };
        RawJson::new(text.unwrap()).unwrap()
    })
}

fn role() -> impl Strategy<Value = MessageRole> {
    prop_oneof![Just(MessageRole::System), Just(MessageRole::User), Just(MessageRole::Assistant)]
}

fn tool_call() -> impl Strategy<Value = ToolCall> {
    (text(), raw_json(), text()).prop_map(|(name, parameters, id)| ToolCall { name, parameters, id })
}

fn tool_calls() -> impl Strategy<Value = Option<Vec<ToolCall>>> {
    prop::option::of(prop::collection::vec(tool_call(), 0..3))
}

fn tool() -> impl Strategy<Value = Tool> {
    (text(), prop::option::of(text()), raw_json()).prop_map(|(name, description, parameters)| Tool {
        name,
        description,
        parameters,
    })
}

fn message() -> impl Strategy<Value = Message> {
    (role(), text(), tool_calls()).prop_map(|(role, content, tool_calls)| Message {
        role,
        content,
        tool_calls,
    })
}

fn ai_request() -> impl Strategy<Value = AIRequest> {
    (
        prop::collection::vec(message(), 0..4),
        text(),
        prop::option::of(any::<f32>().prop_filter("finite", |f| f.is_finite())),
        prop::option::of(any::<u32>()),
        prop::option::of(prop::collection::vec(tool(), 0..3)),
        prop::option::of(text()),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(messages, model, temperature, max_tokens, tools, system_prompt, stream)| AIRequest {
            messages,
            model,
            temperature,
            max_tokens,
            tools,
            system_prompt,
            stream,
        })
}

fn usage() -> impl Strategy<Value = Usage> {
    (any::<u32>(), any::<u32>())
        .prop_map(|(prompt_tokens, completion_tokens)| Usage { prompt_tokens, completion_tokens })
}

fn completion_response() -> impl Strategy<Value = CompletionResponse> {
    (text(), tool_calls(), prop::option::of(text()), prop::option::of(text()), prop::option::of(usage()))
        .prop_map(|(content, tool_calls, model, finish_reason, usage)| CompletionResponse {
            content,
            tool_calls,
            model,
            finish_reason,
            usage,
        })
}

fn stream_chunk() -> impl Strategy<Value = StreamChunk> {
    (text(), tool_calls(), prop::option::of(text()))
        .prop_map(|(delta, tool_calls, finish_reason)| StreamChunk { delta, tool_calls, finish_reason })
}

fn tool_result() -> impl Strategy<Value = ToolResult> {
    (text(), text(), prop::option::of(any::<bool>()))
        .prop_map(|(tool_call_id, content, is_error)| ToolResult { tool_call_id, content, is_error })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![any::<i64>().prop_map(ErrorCode::Number), text().prop_map(ErrorCode::Text)]
}

fn error_body() -> impl Strategy<Value = ErrorBody> {
    (error_code(), text(), prop::option::of(raw_json())).prop_map(|(code, message, details)| ErrorBody {
        code,
        message,
        details,
    })
}

/// JSON and rkyv (deserialized, and the validated view) give back exactly `value`.
fn round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Codec + PartialEq + std::fmt::Debug,
    T::Archived: PartialEq<T> + std::fmt::Debug,
{
    let json = value.to_json().unwrap();
    prop_assert_eq!(&T::from_json(&json).unwrap(), value, "json {}", String::from_utf8_lossy(&json));
    let archive = value.to_rkyv().unwrap();
    prop_assert_eq!(&T::from_rkyv(&archive).unwrap(), value);
    let view = T::access_rkyv(&archive).unwrap();
    prop_assert!(view == value, "archived view {:?} != {:?}", view, value);
    // The same archive at a misaligned address.
    let (buf, at) = misaligned_copy(&archive);
    prop_assert_eq!(&T::from_rkyv(&buf[at..]).unwrap(), value);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_ai_request(v in ai_request()) { round_trip(&v)?; }
    #[test]
    fn round_trip_message(v in message()) { round_trip(&v)?; }
    #[test]
    fn round_trip_message_role(v in role()) { round_trip(&v)?; }
    #[test]
    fn round_trip_tool_call(v in tool_call()) { round_trip(&v)?; }
    #[test]
    fn round_trip_tool(v in tool()) { round_trip(&v)?; }
    #[test]
    fn round_trip_completion_response(v in completion_response()) { round_trip(&v)?; }
    #[test]
    fn round_trip_usage(v in usage()) { round_trip(&v)?; }
    #[test]
    fn round_trip_stream_chunk(v in stream_chunk()) { round_trip(&v)?; }
    #[test]
    fn round_trip_tool_result(v in tool_result()) { round_trip(&v)?; }
    #[test]
    fn round_trip_error_body(v in error_body()) { round_trip(&v)?; }
    #[test]
    fn round_trip_error_code(v in error_code()) { round_trip(&v)?; }
}

/// Every decoder of every type on `bytes`: each returns, whatever it returns.
fn decode_everything(bytes: &[u8]) {
    fn one<T: Codec>(bytes: &[u8]) {
        let viewed = T::access_rkyv(bytes).is_ok();
        let decoded = T::from_rkyv(bytes);
        assert_eq!(viewed, decoded.is_ok(), "access_rkyv and from_rkyv disagree on {bytes:?}");
        if let Ok(v) = decoded {
            // Whatever was accepted encodes again (RawJson inside is valid JSON).
            v.to_rkyv().unwrap();
            T::from_json(&v.to_json().unwrap()).unwrap();
        }
        let _ = T::from_json(bytes);
    }
    one::<AIRequest>(bytes);
    one::<Message>(bytes);
    one::<MessageRole>(bytes);
    one::<ToolCall>(bytes);
    one::<Tool>(bytes);
    one::<CompletionResponse>(bytes);
    one::<Usage>(bytes);
    one::<StreamChunk>(bytes);
    one::<ToolResult>(bytes);
    one::<ErrorBody>(bytes);
    one::<ErrorCode>(bytes);
}

fn aligned(bytes: &[u8]) -> AlignedVec {
    let mut v = AlignedVec::new();
    v.extend_from_slice(bytes);
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_any_decoder(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_everything(&aligned(&bytes));
    }

    /// Flipped bits and overwritten bytes in valid archives: validation either refuses them or
    /// yields a value that is itself well formed (re-encodes, re-decodes to the same value).
    #[test]
    fn corrupted_archives_are_refused_or_decode_to_a_valid_value(
        request in ai_request(),
        response in error_body(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
        overwrite in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
    ) {
        for archive in [request.to_rkyv().unwrap(), response.to_rkyv().unwrap()] {
            let mut bad = aligned(&archive);
            for (at, bit) in &flips {
                let i = at.index(bad.len());
                bad[i] ^= 1 << bit;
            }
            if let Some((at, byte)) = overwrite {
                let i = at.index(bad.len());
                bad[i] = byte;
            }
            decode_everything(&bad);
            if let Ok(v) = AIRequest::from_rkyv(&bad) {
                let again = v.to_rkyv().unwrap();
                let back = AIRequest::from_rkyv(&again).unwrap();
                // NaN temperatures compare unequal; compare the archives instead.
                let back = back.to_rkyv().unwrap();
                prop_assert_eq!(back.as_slice(), again.as_slice());
                prop_assert!(AIRequest::access_rkyv(&bad).is_ok());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Across a process boundary

/// What the child answers to a streamed chat: one chunk per word of the last message, upper-cased.
fn expected_chunks(request: &AIRequest) -> Vec<StreamChunk> {
    let last = &request.messages.last().unwrap().content;
    let mut chunks: Vec<StreamChunk> =
        last.split(' ').map(|w| StreamChunk { delta: w.to_uppercase(), ..Default::default() }).collect();
    let calls = request.tools.iter().flatten().enumerate().map(|(i, t)| ToolCall {
        name: t.name.clone(),
        parameters: t.parameters.clone(),
        id: format!("call-{i}"),
    });
    chunks.push(StreamChunk {
        delta: String::new(),
        tool_calls: Some(calls.collect()),
        finish_reason: Some("stop".into()),
    });
    chunks
}

/// What the child answers to a completion: a summary of what it decoded.
fn expected_completion(request: &AIRequest) -> CompletionResponse {
    CompletionResponse {
        content: format!(
            "{} messages, last {} bytes, system prompt {:?}",
            request.messages.len(),
            request.messages.last().map_or(0, |m| m.content.len()),
            request.system_prompt
        ),
        tool_calls: request.messages.iter().flat_map(|m| m.tool_calls.clone()).next(),
        model: Some(request.model.clone()),
        finish_reason: Some("stop".into()),
        usage: Some(Usage {
            prompt_tokens: request.messages.iter().map(|m| m.content.len() as u32).sum(),
            completion_tokens: request.max_tokens.unwrap_or(0),
        }),
    }
}

/// The child: an AI engine that takes rkyv chats (streamed answer, rkyv chunks) and JSON
/// completions (JSON answer), answers anything else with a JSON error body, and a cancel with
/// a CANCELLED error.
fn ai_server(name: &str) {
    let mut framed = BlockingFramedStream::new(connect_retry(name));
    loop {
        let Frame { kind, id, payload } = framed.recv().unwrap();
        match kind {
            MessageType::Chat => {
                let bytes = AlignedBytes::new(&payload);
                let view = AIRequest::access_rkyv(&bytes).unwrap();
                let request = AIRequest::from_rkyv(&payload).unwrap();
                assert!(*view == request);
                assert_eq!(view.stream.as_ref(), Some(&true));
                for chunk in expected_chunks(&request) {
                    framed.send_with_id(MessageType::StreamChunk, id, &chunk.to_rkyv().unwrap()).unwrap();
                }
                framed.send_with_id(MessageType::StreamEnd, id, b"").unwrap();
            }
            MessageType::Complete => {
                let request = AIRequest::from_json(&payload).unwrap();
                let answer = expected_completion(&request).to_json().unwrap();
                framed.send_with_id(MessageType::Response, id, &answer).unwrap();
            }
            MessageType::Cancel => {
                let body = ErrorBody::new(ErrorCode::CANCELLED, "cancelled");
                framed.send_with_id(MessageType::Error, id, &body.to_json().unwrap()).unwrap();
                break;
            }
            other => {
                let err = AIRequest::from_json(&payload).unwrap_err();
                let body = ErrorBody {
                    details: Some(
                        RawJson::from_value(&serde_json::json!({ "type": other.to_u16() })).unwrap(),
                    ),
                    ..ErrorBody::new(ErrorCode::BAD_REQUEST, err.to_string())
                };
                framed.send_with_id(MessageType::Error, id, &body.to_json().unwrap()).unwrap();
            }
        }
    }
    // Wait for the parent to finish reading.
    let _ = framed.get_mut().recv_timeout(&mut [0u8; 4], HANG);
}

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    assert_eq!(role, "ai-server");
    ai_server(&name);
}

#[test]
fn child_process_answers_rkyv_chat_with_chunks_and_json_completion_with_a_response() {
    let name = unique_name("protocol");
    let listener = BlockingSharedMemoryListener::bind(&name).unwrap();
    let mut child = ChildGuard::spawn("ai-server", &name);
    let mut framed = BlockingFramedStream::new(listener.accept().unwrap());

    // 1. A chat request in rkyv, answered by a stream of rkyv chunks.
    let mut chat = sample_request();
    chat.messages.push(Message::user("explain the ring buffer please"));
    let id = framed.send(MessageType::Chat, &chat.to_rkyv().unwrap()).unwrap();
    let mut chunks = Vec::new();
    loop {
        let Frame { kind, id: got, payload } = framed.recv().unwrap();
        assert_eq!(got, id);
        match kind {
            MessageType::StreamChunk => {
                // Check the view before deserializing, as a zero-copy reader would.
                let view =
                    StreamChunk::access_rkyv(&AlignedBytes::new(&payload)).map(|v| v.delta.len()).unwrap();
                let chunk = StreamChunk::from_rkyv(&payload).unwrap();
                assert_eq!(view, chunk.delta.len());
                chunks.push(chunk);
            }
            MessageType::StreamEnd => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(chunks, expected_chunks(&chat));
    assert_eq!(
        chunks.iter().map(|c| c.delta.as_str()).collect::<Vec<_>>()[..4],
        ["EXPLAIN", "THE", "RING", "BUFFER"]
    );
    assert_eq!(chunks.last().unwrap().tool_calls.as_ref().unwrap()[0].name, "read_file");

    // 2. A completion request in JSON as TypeScript writes it, larger than a ring record (so it is
    //    fragmented), answered in JSON.
    let big = "x".repeat(300 << 10);
    let ts = TS_FULL_REQUEST.replacen("Read src/lib.rs", &big, 1);
    let id = framed.send(MessageType::Complete, ts.as_bytes()).unwrap();
    let Frame { kind, id: got, payload } = framed.recv().unwrap();
    assert_eq!((kind, got), (MessageType::Response, id));
    let response = CompletionResponse::from_json(&payload).unwrap();
    let request = AIRequest::from_json(ts.as_bytes()).unwrap();
    assert_eq!(response, expected_completion(&request));
    assert_eq!(response.usage.unwrap().completion_tokens, 1024);
    assert!(response.content.starts_with("3 messages, last 0 bytes"), "{}", response.content);

    // 3. Garbage under an unexpected type: a JSON error body naming the problem.
    let id = framed.send(MessageType::Data, b"\x00not json").unwrap();
    let Frame { kind, id: got, payload } = framed.recv().unwrap();
    assert_eq!((kind, got), (MessageType::Error, id));
    let error = ErrorBody::from_json(&payload).unwrap();
    assert_eq!(error.code, ErrorCode::BAD_REQUEST);
    assert!(error.message.starts_with("cannot decode AIRequest from json"), "{}", error.message);
    assert_eq!(error.details.unwrap().as_str(), r#"{"type":2}"#);

    // 4. Cancel.
    let id = framed.send(MessageType::Cancel, b"").unwrap();
    let Frame { kind, id: got, payload } = framed.recv().unwrap();
    assert_eq!((kind, got), (MessageType::Error, id));
    assert_eq!(ErrorBody::from_json(&payload).unwrap().code, ErrorCode::CANCELLED);

    framed.get_mut().send(b"done").unwrap();
    child.wait_success(HANG);
}
