//! [`Codec`]: JSON and validated rkyv for every protocol type, and [`AlignedBytes`] for rkyv
//! input that arrives at an arbitrary address.

use std::ops::Deref;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Portable};

use super::json::CheckJson;
use crate::{IpcError, Result};

/// The alignment rkyv input must have for zero-copy access, in bytes: the alignment of the
/// buffers [`Codec::to_rkyv`] returns ([`AlignedVec`]'s default). The archived protocol types
/// need at most 8; 16 leaves room for fields added later without changing this contract.
pub const RKYV_ALIGN: usize = AlignedVec::<16>::ALIGNMENT;

/// Encoding and decoding of a protocol type, in JSON (field names as in the TypeScript
/// originals) and rkyv (zero-copy, validated: bytes from a peer are never trusted).
///
/// Every method reports failure as [`IpcError::Decode`] or [`IpcError::Encode`], naming the
/// format and the type. Decoding never panics, whatever the bytes.
///
/// rkyv archives must start at an address that is a multiple of [`RKYV_ALIGN`] to be read in
/// place. [`Codec::from_rkyv`] copies misaligned input into an aligned buffer first;
/// [`Codec::access_rkyv`] cannot (it returns a reference into the input) and refuses it with an
/// error that says so: wrap such input in [`AlignedBytes::new`], which copies only when needed.
///
/// The typed calls take an [`Encoding`](super::Encoding) instead, the open side:
/// [`Rkyv`](super::Rkyv) encodes every type that implements this trait, [`Json`](super::Json) every
/// serde type, and an application adds its own formats by implementing `Encoding`.
pub trait Codec: Archive + Sized {
    /// The type's name, as used in error messages.
    const NAME: &'static str;

    /// Compact JSON (UTF-8), absent optional fields left out.
    fn to_json(&self) -> Result<Vec<u8>>;

    /// Decodes JSON as a TypeScript peer writes it: unknown fields are ignored, absent or `null`
    /// optional fields are `None`.
    fn from_json(bytes: &[u8]) -> Result<Self>;

    /// An rkyv archive (little-endian, 32-bit relative pointers: rkyv 0.8's default format),
    /// in a buffer aligned to [`RKYV_ALIGN`].
    fn to_rkyv(&self) -> Result<AlignedVec>;

    /// Validates an rkyv archive (as [`Codec::access_rkyv`] does) and deserializes it.
    /// Misaligned input is copied first.
    fn from_rkyv(bytes: &[u8]) -> Result<Self>;

    /// Validates an rkyv archive and returns a view into it, without copying. The input must be
    /// aligned to [`RKYV_ALIGN`] (see [`AlignedBytes`]). Accepts exactly what
    /// [`Codec::from_rkyv`] accepts: the structure is checked by rkyv (bounds, alignment, UTF-8,
    /// enum tags) and free-form JSON fields ([`RawJson`](super::RawJson)) are checked to hold
    /// JSON.
    fn access_rkyv(bytes: &[u8]) -> Result<&Self::Archived>;
}

/// rkyv input at an address fit for zero-copy access: the caller's bytes when they are aligned
/// to [`RKYV_ALIGN`], otherwise an aligned copy. Dereferences to `[u8]`.
///
/// ```
/// use lapce_ipc::messages::{AlignedBytes, Codec, ToolResult};
///
/// let result = ToolResult { tool_call_id: "call-1".into(), content: "ok".into(), is_error: None };
/// let archive = result.to_rkyv()?;
/// // The same bytes one byte further on, as they might sit inside a larger buffer.
/// let mut shifted = vec![0u8; archive.len() + 1];
/// let start = if shifted.as_ptr().addr().is_multiple_of(2) { 1 } else { 0 };
/// shifted[start..start + archive.len()].copy_from_slice(&archive);
/// let misaligned = &shifted[start..start + archive.len()];
///
/// assert!(ToolResult::access_rkyv(misaligned).is_err());
/// let aligned = AlignedBytes::new(misaligned);
/// assert!(aligned.is_copy());
/// assert_eq!(ToolResult::access_rkyv(&aligned)?.content.as_str(), "ok");
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
pub struct AlignedBytes<'a>(Inner<'a>);

enum Inner<'a> {
    Borrowed(&'a [u8]),
    Copied(AlignedVec),
}

/// The length and whether the bytes were copied, never the bytes.
impl std::fmt::Debug for AlignedBytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBytes").field("len", &self.len()).field("copied", &self.is_copy()).finish()
    }
}

impl<'a> AlignedBytes<'a> {
    /// Borrows `bytes` if they are aligned to [`RKYV_ALIGN`], copies them otherwise.
    pub fn new(bytes: &'a [u8]) -> AlignedBytes<'a> {
        if is_aligned(bytes) {
            AlignedBytes(Inner::Borrowed(bytes))
        } else {
            let mut copy = AlignedVec::with_capacity(bytes.len());
            copy.extend_from_slice(bytes);
            AlignedBytes(Inner::Copied(copy))
        }
    }

    /// Whether the input had to be copied.
    pub fn is_copy(&self) -> bool {
        matches!(self.0, Inner::Copied(_))
    }
}

impl Deref for AlignedBytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Inner::Borrowed(b) => b,
            Inner::Copied(v) => v.as_slice(),
        }
    }
}

fn is_aligned(bytes: &[u8]) -> bool {
    bytes.as_ptr().addr().is_multiple_of(RKYV_ALIGN)
}

pub(crate) fn decode_error(format: &'static str, what: &'static str, e: impl std::fmt::Display) -> IpcError {
    IpcError::Decode { format, what, reason: e.to_string() }
}

pub(crate) fn encode_error(format: &'static str, what: &'static str, e: impl std::fmt::Display) -> IpcError {
    IpcError::Encode { format, what, reason: e.to_string() }
}

// The generic bodies of the `Codec` methods. Each type's impl (macro below) calls them with a
// concrete type, so `T: Codec` is all a generic caller needs to name.

pub(crate) fn to_json<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| encode_error("json", what, e))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| decode_error("json", what, e))
}

pub(crate) fn to_rkyv<T>(what: &'static str, value: &T) -> Result<AlignedVec>
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    rkyv::to_bytes::<rancor::Error>(value).map_err(|e| encode_error("rkyv", what, e))
}

pub(crate) fn from_rkyv<T>(what: &'static str, bytes: &[u8]) -> Result<T>
where
    T: Archive,
    T::Archived: CheckJson
        + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    let bytes = AlignedBytes::new(bytes);
    let archived = access_rkyv::<T::Archived>(what, &bytes)?;
    rkyv::deserialize::<T, rancor::Error>(archived).map_err(|e| decode_error("rkyv", what, e))
}

pub(crate) fn access_rkyv<'b, A>(what: &'static str, bytes: &'b [u8]) -> Result<&'b A>
where
    A: Portable + CheckJson + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    if !is_aligned(bytes) {
        return Err(decode_error(
            "rkyv",
            what,
            format_args!(
                "zero-copy access needs input aligned to {RKYV_ALIGN} bytes, this {}-byte input is not \
                 (copy it with AlignedBytes::new, or use from_rkyv)",
                bytes.len()
            ),
        ));
    }
    let archived = rkyv::access::<A, rancor::Error>(bytes).map_err(|e| decode_error("rkyv", what, e))?;
    archived.check_json().map_err(|e| decode_error("rkyv", what, e))?;
    Ok(archived)
}

/// Implements [`Codec`] for protocol types by calling the generic functions above.
macro_rules! impl_codec {
    ($($ty:ident),* $(,)?) => {$(
        impl $crate::messages::Codec for $ty {
            const NAME: &'static str = stringify!($ty);

            fn to_json(&self) -> $crate::Result<Vec<u8>> {
                $crate::messages::codec::to_json(Self::NAME, self)
            }

            fn from_json(bytes: &[u8]) -> $crate::Result<Self> {
                $crate::messages::codec::from_json(Self::NAME, bytes)
            }

            fn to_rkyv(&self) -> $crate::Result<rkyv::util::AlignedVec> {
                $crate::messages::codec::to_rkyv(Self::NAME, self)
            }

            fn from_rkyv(bytes: &[u8]) -> $crate::Result<Self> {
                $crate::messages::codec::from_rkyv(Self::NAME, bytes)
            }

            fn access_rkyv(bytes: &[u8]) -> $crate::Result<&<Self as rkyv::Archive>::Archived> {
                $crate::messages::codec::access_rkyv(Self::NAME, bytes)
            }
        }
    )*};
}

pub(crate) use impl_codec;
