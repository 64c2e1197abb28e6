//! Fuzzes the protocol decoders (`lapce_ipc::messages`): every type's validated rkyv access,
//! rkyv deserialization and JSON decoding, on arbitrary bytes and on valid archives with bytes
//! flipped. Nothing may panic or leak (libFuzzer's leak check is on); `access_rkyv` and
//! `from_rkyv` accept exactly the same archives; whatever is accepted is a well-formed value: it
//! encodes again in both formats, and its JSON decodes to the same JSON.
//!
//! The first byte picks the mode:
//! - even: the rest of the input, as is (JSON, or an rkyv archive — copied to an aligned buffer,
//!   and also handed over at whatever address libFuzzer gives, to exercise the copy path);
//! - odd: the rest builds a valid value of one of the types (strings, numbers, free-form JSON
//!   taken from the input), which is archived and then corrupted by (position, xor) pairs from
//!   the remaining input. This takes the fuzzer deep into the validators at once.
#![no_main]

use lapce_ipc::messages::{
    AIRequest, AlignedVec, Codec, CompletionResponse, ErrorBody, ErrorCode, Message, MessageRole, RawJson,
    StreamChunk, Tool, ToolCall, ToolResult, Usage,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        decode_all(&aligned(rest));
        decode_all_from_rkyv_unaligned(rest);
    } else {
        let mut input = Input(rest);
        let mut archive = build(mode >> 1, &mut input);
        if input.0.is_empty() {
            // Nothing to corrupt: every decoder on a valid archive (of this or another type).
            decode_all(&archive);
            return;
        }
        while let Some(pos) = input.u16() {
            let xor = input.byte().unwrap_or(0xFF);
            if archive.is_empty() {
                break;
            }
            let i = usize::from(pos) % archive.len();
            archive[i] ^= xor;
        }
        decode_all(&archive);
    }
});

fn aligned(bytes: &[u8]) -> AlignedVec {
    let mut v = AlignedVec::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}

/// Every decoder of every type. `bytes` is aligned, so `access_rkyv` refuses only bad archives.
fn decode_all(bytes: &[u8]) {
    check::<AIRequest>(bytes);
    check::<Message>(bytes);
    check::<MessageRole>(bytes);
    check::<ToolCall>(bytes);
    check::<Tool>(bytes);
    check::<CompletionResponse>(bytes);
    check::<Usage>(bytes);
    check::<StreamChunk>(bytes);
    check::<ToolResult>(bytes);
    check::<ErrorBody>(bytes);
    check::<ErrorCode>(bytes);
}

/// `from_rkyv` at the address the input has (it copies when misaligned); must agree with the
/// aligned decode.
fn decode_all_from_rkyv_unaligned(bytes: &[u8]) {
    fn one<T: Codec>(bytes: &[u8]) {
        let here = T::from_rkyv(bytes).map(|v| v.to_json().unwrap());
        let aligned = T::from_rkyv(&aligned(bytes)).map(|v| v.to_json().unwrap());
        assert_eq!(here.ok(), aligned.ok(), "{}: the input's address changed the outcome", T::NAME);
    }
    one::<AIRequest>(bytes);
    one::<ErrorBody>(bytes);
    one::<StreamChunk>(bytes);
}

fn check<T: Codec>(bytes: &[u8]) {
    let viewed = T::access_rkyv(bytes).is_ok();
    let decoded = T::from_rkyv(bytes);
    assert_eq!(viewed, decoded.is_ok(), "{}: access_rkyv and from_rkyv disagree", T::NAME);
    match decoded {
        Ok(v) => well_formed(&v),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match T::from_json(bytes) {
        Ok(v) => well_formed(&v),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// An accepted value encodes in both formats; its JSON decodes, and after one normalisation
/// (non-finite floats become absent) JSON is a fixed point; rkyv gives back the same JSON.
fn well_formed<T: Codec>(v: &T) {
    let json = v.to_json().expect("an accepted value encodes as JSON");
    let w = T::from_json(&json).expect("our own JSON decodes");
    let json2 = w.to_json().unwrap();
    let x = T::from_json(&json2).expect("our own JSON decodes");
    assert_eq!(x.to_json().unwrap(), json2, "{}: JSON is not a fixed point", T::NAME);
    let archive = v.to_rkyv().expect("an accepted value encodes as rkyv");
    let back = T::from_rkyv(&archive).expect("our own archive decodes");
    assert_eq!(back.to_json().unwrap(), json, "{}: rkyv round trip changed the value", T::NAME);
    assert!(T::access_rkyv(&archive).is_ok());
}

/// Reads the input front to back.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([0; 4].map(|_| self.byte().unwrap_or(0)))
    }

    /// Up to 40 bytes of the input as text (invalid UTF-8 replaced), long enough to be stored
    /// out of line in the archive.
    fn text(&mut self) -> String {
        let n = (usize::from(self.byte().unwrap_or(0)) % 41).min(self.0.len());
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(s).into_owned()
    }

    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        (self.byte().unwrap_or(0) % 2 == 1).then(|| f(self))
    }

    fn json(&mut self) -> RawJson {
        match self.byte().unwrap_or(0) % 5 {
            0 => RawJson::null(),
            1 => RawJson::from_value(&self.u32()).unwrap(),
            2 => RawJson::from_value(&self.text()).unwrap(),
            3 => RawJson::from_value(&vec![self.text(), self.text()]).unwrap(),
            _ => RawJson::from_value(&std::collections::BTreeMap::from([(self.text(), self.u32())])).unwrap(),
        }
    }

    fn role(&mut self) -> MessageRole {
        [MessageRole::System, MessageRole::User, MessageRole::Assistant]
            [usize::from(self.byte().unwrap_or(0) % 3)]
    }

    fn tool_call(&mut self) -> ToolCall {
        ToolCall { name: self.text(), parameters: self.json(), id: self.text() }
    }

    fn tool_calls(&mut self) -> Option<Vec<ToolCall>> {
        self.opt(|i| (0..i.byte().unwrap_or(0) % 3).map(|_| i.tool_call()).collect())
    }

    fn message(&mut self) -> Message {
        Message { role: self.role(), content: self.text(), tool_calls: self.tool_calls() }
    }

    fn tool(&mut self) -> Tool {
        Tool { name: self.text(), description: self.opt(Self::text), parameters: self.json() }
    }

    fn usage(&mut self) -> Usage {
        Usage { prompt_tokens: self.u32(), completion_tokens: self.u32() }
    }

    fn error_code(&mut self) -> ErrorCode {
        if self.byte().unwrap_or(0).is_multiple_of(2) {
            ErrorCode::Number(i64::from(self.u32() as i32))
        } else {
            ErrorCode::Text(self.text())
        }
    }
}

/// A valid value of the type `kind` picks, archived.
fn build(kind: u8, i: &mut Input) -> AlignedVec {
    match kind % 11 {
        0 => AIRequest {
            messages: (0..i.byte().unwrap_or(0) % 4).map(|_| i.message()).collect(),
            model: i.text(),
            temperature: i.opt(|i| f32::from_bits(i.u32())),
            max_tokens: i.opt(Input::u32),
            tools: i.opt(|i| (0..i.byte().unwrap_or(0) % 3).map(|_| i.tool()).collect()),
            system_prompt: i.opt(Input::text),
            stream: i.opt(|i| i.byte().unwrap_or(0) % 2 == 0),
        }
        .to_rkyv(),
        1 => i.message().to_rkyv(),
        2 => i.role().to_rkyv(),
        3 => i.tool_call().to_rkyv(),
        4 => i.tool().to_rkyv(),
        5 => CompletionResponse {
            content: i.text(),
            tool_calls: i.tool_calls(),
            model: i.opt(Input::text),
            finish_reason: i.opt(Input::text),
            usage: i.opt(Input::usage),
        }
        .to_rkyv(),
        6 => i.usage().to_rkyv(),
        7 => StreamChunk { delta: i.text(), tool_calls: i.tool_calls(), finish_reason: i.opt(Input::text) }
            .to_rkyv(),
        8 => {
            ToolResult { tool_call_id: i.text(), content: i.text(), is_error: i.opt(|i| i.byte() == Some(1)) }
                .to_rkyv()
        }
        9 => ErrorBody { code: i.error_code(), message: i.text(), details: i.opt(Input::json) }.to_rkyv(),
        _ => i.error_code().to_rkyv(),
    }
    .expect("a valid value archives")
}
