//! [`Encoding`]: how a typed request or answer becomes a payload and back; [`Json`] and
//! [`Rkyv`] are provided, and any other format can be added by implementing the trait.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec::{decode_error, encode_error};
use super::Codec;
use crate::Result;

/// A payload format for values of type `T`: what the typed calls use
/// ([`IpcServer::register_typed`](crate::IpcServer::register_typed),
/// [`IpcClient::request_typed`](crate::IpcClient::request_typed) and their kin). The frame
/// header does not say which format a payload uses: both ends name the same one.
///
/// Decoding must never panic, whatever the bytes: it reports
/// [`IpcError::Decode`](crate::IpcError::Decode), which a typed handler answers with a
/// bad-request error ([`ErrorCode::BAD_REQUEST`](super::ErrorCode::BAD_REQUEST)).
///
/// A format of your own, here for plain UTF-8 text:
///
/// ```
/// use bytes::Bytes;
/// use lapce_ipc::messages::Encoding;
/// use lapce_ipc::{IpcError, Result};
///
/// #[derive(Clone, Copy)]
/// struct Utf8;
///
/// impl Encoding<String> for Utf8 {
///     fn encode(&self, value: &String) -> Result<Bytes> {
///         Ok(Bytes::copy_from_slice(value.as_bytes()))
///     }
///
///     fn decode(&self, bytes: &[u8]) -> Result<String> {
///         String::from_utf8(bytes.to_vec()).map_err(|e| IpcError::Decode {
///             format: "utf-8",
///             what: "String",
///             reason: e.to_string(),
///         })
///     }
/// }
///
/// assert_eq!(Utf8.decode(&Utf8.encode(&"hé".to_string())?)?, "hé");
/// assert!(Utf8.decode(&[0xFF]).is_err());
/// # Ok::<(), IpcError>(())
/// ```
pub trait Encoding<T> {
    /// The payload that carries `value`.
    fn encode(&self, value: &T) -> Result<Bytes>;

    /// The value `bytes` carry; [`IpcError::Decode`](crate::IpcError::Decode) when they carry
    /// none.
    fn decode(&self, bytes: &[u8]) -> Result<T>;
}

/// JSON (`serde_json`) for any serde type: what a TypeScript peer speaks. The protocol types'
/// JSON is the one [`Codec::to_json`] writes.
///
/// ```
/// use lapce_ipc::messages::{Encoding, Json, ToolResult};
///
/// let result = ToolResult { tool_call_id: "call-1".into(), content: "ok".into(), is_error: None };
/// let payload = Json.encode(&result)?;
/// assert_eq!(&payload[..], br#"{"toolCallId":"call-1","content":"ok"}"#);
/// let back: ToolResult = Json.decode(&payload)?;
/// assert_eq!(back, result);
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json;

impl<T: Serialize + DeserializeOwned> Encoding<T> for Json {
    fn encode(&self, value: &T) -> Result<Bytes> {
        serde_json::to_vec(value).map(Bytes::from).map_err(|e| encode_error("json", short_name::<T>(), e))
    }

    fn decode(&self, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| decode_error("json", short_name::<T>(), e))
    }
}

/// Validated rkyv archives, for the types that implement [`Codec`] (the protocol types):
/// the zero-copy form for Rust peers. Bytes from a peer are validated before use (see
/// [`Codec::from_rkyv`]); a payload at an address unfit for rkyv is copied first. Encoding
/// copies the archive once into the payload.
///
/// ```
/// use lapce_ipc::messages::{Encoding, Rkyv, ToolResult};
///
/// let result = ToolResult { tool_call_id: "call-1".into(), content: "ok".into(), is_error: None };
/// let back: ToolResult = Rkyv.decode(&Rkyv.encode(&result)?)?;
/// assert_eq!(back, result);
/// assert!(Encoding::<ToolResult>::decode(&Rkyv, &[0xFF; 40]).is_err());
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rkyv;

impl<T: Codec> Encoding<T> for Rkyv {
    fn encode(&self, value: &T) -> Result<Bytes> {
        value.to_rkyv().map(|archive| Bytes::copy_from_slice(&archive))
    }

    fn decode(&self, bytes: &[u8]) -> Result<T> {
        T::from_rkyv(bytes)
    }
}

/// The last segment of a type's path (`AIRequest` for `lapce_ipc::messages::AIRequest`), for
/// error messages.
pub(crate) fn short_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let path = full.split('<').next().unwrap_or(full);
    path.rsplit("::").next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{AIRequest, Message};
    use crate::IpcError;

    #[test]
    fn both_formats_round_trip_and_name_what_failed() {
        let request =
            AIRequest { messages: vec![Message::user("hi")], model: "m".into(), ..AIRequest::default() };
        let json: AIRequest = Json.decode(&Json.encode(&request).unwrap()).unwrap();
        let rkyv: AIRequest = Rkyv.decode(&Rkyv.encode(&request).unwrap()).unwrap();
        assert_eq!((json, rkyv), (request.clone(), request));
        match Encoding::<AIRequest>::decode(&Json, b"{") {
            Err(IpcError::Decode { format: "json", what: "AIRequest", .. }) => {}
            other => panic!("{other:?}"),
        }
        match Encoding::<AIRequest>::decode(&Rkyv, b"\x01\x02") {
            Err(IpcError::Decode { format: "rkyv", what: "AIRequest", .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(short_name::<Vec<u8>>(), "Vec");
    }
}
