//! The connection handshake over the control channel (normative description: docs/PROTOCOL.md).
//!
//! 1. The client sends a 24-byte `ClientHello` (magic, protocol version, pid).
//! 2. The server checks the peer's user (as the OS reports it: ours, or on Unix one of
//!    `StreamConfig::allowed_peer_uids`) and the hello, then answers with
//!    a 48-byte `ServerHello` (magic, version, status, pid, ring capacity, segment length)
//!    carrying the segment and the client's ends of the two doorbells, one per ring (three
//!    descriptors over `SCM_RIGHTS` on Unix; five handles duplicated into the client on Windows,
//!    where a doorbell end is two events). On a refusal the status says why and no handles are
//!    sent.
//! 3. The client checks everything it received: magic, version, status, sizes, the segment
//!    (seals and length where the backend has them) and both ring headers.
//!
//! This module only encodes, decodes and assembles; the blocking and tokio drivers do the I/O
//! through the platform's control channel.

use std::sync::Arc;

use super::pool::{Prepared, Slot};
use crate::channel::{Link, RecvHalf, SendHalf, Sleeper, WaitStrategy};
use crate::error::{IpcError, Result};
use crate::platform::{
    borrow_handle, current_pid, BorrowedOsHandle, ControlStream, Doorbell, OsHandle, Segment,
    DOORBELL_HANDLES,
};
use crate::ring::{check_capacity, init_ring, Consumer, Producer, RingPlace, SharedRegion, DATA_ALIGN};

/// The connection protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 3;

const CLIENT_MAGIC: u64 = u64::from_le_bytes(*b"LAPCHELO");
const SERVER_MAGIC: u64 = u64::from_le_bytes(*b"LAPCSRVR");
pub(crate) const CLIENT_HELLO_LEN: usize = 24;
pub(crate) const SERVER_HELLO_LEN: usize = 48;

const STATUS_OK: u32 = 0;
const STATUS_VERSION_MISMATCH: u32 = 1;
const STATUS_REFUSED: u32 = 2;
const STATUS_NO_SLOT: u32 = 3;
/// The server lacks a resource to set the connection up; the hello's detail field says which
/// (`RESOURCE_*`).
const STATUS_NO_RESOURCES: u32 = 4;
const RESOURCE_DESCRIPTORS: u32 = 1;
const RESOURCE_MEMORY: u32 = 2;

/// Why a server out of descriptors refuses a client (the client's error says the same).
const NO_DESCRIPTORS: &str =
    "the server is out of file descriptors (its open-file limit, RLIMIT_NOFILE, is reached)";
/// Why a server out of memory refuses a client.
const NO_MEMORY: &str = "the server is out of memory for a new connection's shared memory";

/// Handles a successful `ServerHello` carries: the segment, then the client's ends of the
/// client→server and server→client rings' doorbells.
const OFFER_HANDLES: usize = 1 + 2 * DOORBELL_HANDLES;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The client's opening message.
pub(crate) fn client_hello(version: u32) -> [u8; CLIENT_HELLO_LEN] {
    let mut b = [0u8; CLIENT_HELLO_LEN];
    b[0..8].copy_from_slice(&CLIENT_MAGIC.to_le_bytes());
    b[8..12].copy_from_slice(&version.to_le_bytes());
    b[12..16].copy_from_slice(&current_pid().to_le_bytes());
    b
}

/// Checks a `ClientHello`; returns the pid it announces (informational: the kernel's is used).
pub(crate) fn check_client_hello(b: &[u8; CLIENT_HELLO_LEN]) -> Result<u32> {
    if u64_at(b, 0) != CLIENT_MAGIC {
        return Err(IpcError::Handshake("client hello has a bad magic".into()));
    }
    let version = u32_at(b, 8);
    if version != PROTOCOL_VERSION {
        return Err(IpcError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: version });
    }
    Ok(u32_at(b, 12))
}

fn server_hello(status: u32, capacity: u64, segment_len: u64) -> [u8; SERVER_HELLO_LEN] {
    let mut b = [0u8; SERVER_HELLO_LEN];
    b[0..8].copy_from_slice(&SERVER_MAGIC.to_le_bytes());
    b[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&status.to_le_bytes());
    b[16..20].copy_from_slice(&current_pid().to_le_bytes());
    b[24..32].copy_from_slice(&capacity.to_le_bytes());
    b[32..40].copy_from_slice(&segment_len.to_le_bytes());
    b
}

/// The `ServerHello` refusing a client; `err` says why.
pub(crate) fn refusal(err: &IpcError) -> [u8; SERVER_HELLO_LEN] {
    let (status, detail) = match err {
        IpcError::VersionMismatch { .. } => (STATUS_VERSION_MISMATCH, 0),
        IpcError::ServerRefused(why) if why == NO_DESCRIPTORS => (STATUS_NO_RESOURCES, RESOURCE_DESCRIPTORS),
        IpcError::ServerRefused(why) if why == NO_MEMORY => (STATUS_NO_RESOURCES, RESOURCE_MEMORY),
        IpcError::ServerRefused(_) => (STATUS_NO_SLOT, 0),
        _ => (STATUS_REFUSED, 0),
    };
    let mut hello = server_hello(status, 0, 0);
    hello[20..24].copy_from_slice(&detail.to_le_bytes());
    hello
}

/// The refusal of a client this process has no descriptor for.
pub(crate) fn out_of_descriptors() -> IpcError {
    IpcError::ServerRefused(NO_DESCRIPTORS.into())
}

/// A failure to set up a connection as the client should hear it: the listener's slots all taken
/// (already a [`IpcError::ServerRefused`]), or the server out of descriptors or memory (made
/// one, naming the resource); `Err` with the error itself for anything else (the listener's
/// own failure).
pub(crate) fn as_refusal(err: IpcError) -> std::result::Result<IpcError, IpcError> {
    match err {
        IpcError::ServerRefused(_) => Ok(err),
        IpcError::Io(io) if crate::platform::is_out_of_handles(&io) => Ok(out_of_descriptors()),
        IpcError::Io(io) if io.kind() == std::io::ErrorKind::OutOfMemory => {
            Ok(IpcError::ServerRefused(NO_MEMORY.into()))
        }
        other => Err(other),
    }
}

/// Bytes of the segment of a connection whose rings hold `capacity` bytes each.
pub(crate) fn segment_len(capacity: usize) -> usize {
    layout(capacity).2
}

/// Where the two rings of a connection segment lie (client→server first), and the segment's
/// length: both ring headers in the first page (at 0 and at [`S2C_HEADER`]), then the two data
/// areas. One shared header page instead of one per ring: an idle connection whose data pages
/// were trimmed keeps 4 KiB of shared memory instead of 8 (docs/PROTOCOL.md §3).
fn layout(capacity: usize) -> (RingPlace, RingPlace, usize) {
    let c2s = RingPlace { header: 0, data: DATA_ALIGN };
    let s2c = RingPlace { header: S2C_HEADER, data: DATA_ALIGN + capacity };
    (c2s, s2c, DATA_ALIGN + 2 * capacity)
}

/// Offset of the server→client ring's header in a connection segment: half a page after the
/// client→server ring's, so that no cache line (nor its prefetch pair) holds fields of both.
const S2C_HEADER: usize = DATA_ALIGN / 2;
// The client→server ring's header (at 0) ends before the other one begins.
const _: () = assert!(std::mem::size_of::<crate::ring::protocol::RingHeader>() <= S2C_HEADER);

/// What the server hands to one client: a fresh segment with both rings and the client's ends
/// of the two doorbells.
pub(crate) struct Offer {
    pub(crate) hello: [u8; SERVER_HELLO_LEN],
    segment: Arc<Segment>,
    /// The segment's handle, kept until the offer is sent (the mapping does not need it).
    segment_handle: OsHandle,
    /// The connection's claim on the listener's pool: goes with the connection, given back
    /// when both halves are dropped.
    slot: Slot,
    /// The server's ends of the doorbells: client→server ring, server→client ring.
    ours: [Doorbell; 2],
    /// The client's ends, same order.
    theirs: [Doorbell; 2],
    capacity: usize,
}

impl Offer {
    /// The offer of a segment claimed from the pool (made for rings of `capacity` bytes): its
    /// rings are initialised here, just before it is sent.
    pub(crate) fn new(prepared: Prepared, slot: Slot, capacity: usize) -> Result<Offer> {
        check_capacity(capacity)?;
        let (c2s, s2c, len) = layout(capacity);
        let Prepared { segment, handle, bells } = prepared;
        if segment.len() != len {
            return Err(IpcError::InvalidArgument(format!(
                "a pooled segment of {} bytes cannot hold two rings of {capacity} bytes",
                segment.len()
            )));
        }
        let segment = Arc::new(segment);
        let region: Arc<dyn SharedRegion> = segment.clone();
        init_ring(&region, c2s, capacity)?;
        init_ring(&region, s2c, capacity)?;
        let [(c2s_ours, c2s_theirs), (s2c_ours, s2c_theirs)] = bells;
        let hello = server_hello(STATUS_OK, capacity as u64, len as u64);
        Ok(Offer {
            hello,
            segment,
            segment_handle: handle,
            slot,
            ours: [c2s_ours, s2c_ours],
            theirs: [c2s_theirs, s2c_theirs],
            capacity,
        })
    }

    /// The handles to send with the hello.
    pub(crate) fn handles(&self) -> Vec<BorrowedOsHandle<'_>> {
        let bells = self.theirs.iter().flat_map(Doorbell::handles);
        std::iter::once(borrow_handle(&self.segment_handle)).chain(bells).collect()
    }

    /// The server's halves, once the offer has been sent (the segment's handle and the
    /// client's ends are closed here).
    pub(crate) fn into_halves(
        self,
        control: ControlStream,
        client_pid: u32,
        wait: WaitStrategy,
    ) -> Result<(SendHalf, RecvHalf)> {
        let (c2s, s2c, _) = layout(self.capacity);
        let region: Arc<dyn SharedRegion> = self.segment;
        let [c2s_bell, s2c_bell] = self.ours;
        let tx = Producer::attach(region.clone(), s2c, self.capacity)?;
        let rx = Consumer::attach(region, c2s, self.capacity)?;
        let link = Arc::new(
            Link::new(control, client_pid, [tx.space_waiter_handle(), rx.data_waiter_handle()])?
                .holding(Box::new(self.slot)),
        );
        Ok((
            SendHalf::new(tx, Sleeper::new(s2c_bell, link.clone(), wait)),
            RecvHalf::new(rx, Sleeper::new(c2s_bell, link, wait)),
        ))
    }
}

/// Checks a `ServerHello`: magic, version, status (a refusal becomes the error it names) and
/// sizes; returns the ring capacity it offers.
fn check_server_hello(hello: &[u8; SERVER_HELLO_LEN]) -> Result<usize> {
    if u64_at(hello, 0) != SERVER_MAGIC {
        return Err(IpcError::Handshake("server hello has a bad magic".into()));
    }
    let version = u32_at(hello, 8);
    let status = u32_at(hello, 12);
    if version != PROTOCOL_VERSION || status == STATUS_VERSION_MISMATCH {
        return Err(IpcError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: version });
    }
    if status == STATUS_NO_SLOT {
        return Err(IpcError::ServerRefused("the listener has no free connection slot (max_slots)".into()));
    }
    if status == STATUS_NO_RESOURCES {
        let why = match u32_at(hello, 20) {
            RESOURCE_DESCRIPTORS => NO_DESCRIPTORS.to_string(),
            RESOURCE_MEMORY => NO_MEMORY.to_string(),
            other => format!("the server lacks a resource to set the connection up (code {other})"),
        };
        return Err(IpcError::ServerRefused(why));
    }
    if status != STATUS_OK {
        return Err(IpcError::Handshake(format!("server refused the connection (status {status})")));
    }
    let capacity = usize::try_from(u64_at(hello, 24))
        .map_err(|_| IpcError::Handshake("ring capacity out of range".into()))?;
    check_capacity(capacity).map_err(|e| IpcError::Handshake(e.to_string()))?;
    if u64_at(hello, 32) != segment_len(capacity) as u64 {
        return Err(IpcError::Handshake(format!(
            "segment length {} does not match ring capacity {capacity}",
            u64_at(hello, 32)
        )));
    }
    Ok(capacity)
}

/// Checks the server's answer and assembles the client's halves.
/// `server_pid` comes from the socket's credentials, not from the hello.
pub(crate) fn client_halves(
    hello: &[u8; SERVER_HELLO_LEN],
    fds: Vec<OsHandle>,
    control: ControlStream,
    server_pid: u32,
    wait: WaitStrategy,
) -> Result<(SendHalf, RecvHalf)> {
    let capacity = check_server_hello(hello)?;
    let (c2s, s2c, len) = layout(capacity);
    if fds.len() != OFFER_HANDLES {
        return Err(IpcError::Handshake(format!("expected {OFFER_HANDLES} handles, got {}", fds.len())));
    }
    let mut fds = fds.into_iter();
    let mut next = || fds.next().expect("the count was checked");
    let segment_handle = next();
    let c2s_bell = Doorbell::from_handles(std::array::from_fn(|_| next()))?;
    let s2c_bell = Doorbell::from_handles(std::array::from_fn(|_| next()))?;
    // The mapping is all this side needs: the segment's handle is closed on return.
    let region: Arc<dyn SharedRegion> = Arc::new(Segment::open(borrow_handle(&segment_handle), len)?);
    let tx = Producer::attach(region.clone(), c2s, capacity)?;
    let rx = Consumer::attach(region, s2c, capacity)?;
    let link = Arc::new(Link::new(control, server_pid, [tx.space_waiter_handle(), rx.data_waiter_handle()])?);
    Ok((
        SendHalf::new(tx, Sleeper::new(c2s_bell, link.clone(), wait)),
        RecvHalf::new(rx, Sleeper::new(s2c_bell, link, wait)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte layouts docs/PROTOCOL.md §2 promises.
    #[test]
    fn hellos_match_protocol_md() {
        let c = client_hello(PROTOCOL_VERSION);
        assert_eq!(&c[0..8], b"LAPCHELO");
        assert_eq!(u32_at(&c, 8), 3);
        assert_eq!(u32_at(&c, 12), current_pid());
        assert_eq!(check_client_hello(&c).unwrap(), current_pid());

        let s = server_hello(STATUS_OK, 1 << 16, 4096 + 2 * (1 << 16));
        assert_eq!(&s[0..8], b"LAPCSRVR");
        assert_eq!((u32_at(&s, 8), u32_at(&s, 12), u32_at(&s, 16)), (3, 0, current_pid()));
        assert_eq!((u64_at(&s, 24), u64_at(&s, 32)), (1 << 16, 4096 + 2 * (1 << 16)));
    }

    /// The segment layout of docs/PROTOCOL.md §3: both headers in the first page, apart by half
    /// a page; the data areas after it, page aligned, back to back; nothing overlaps.
    #[test]
    fn segment_layout_matches_protocol_md() {
        for capacity in [4096, 1 << 16, 1 << 30] {
            let (c2s, s2c, len) = layout(capacity);
            assert_eq!(c2s, RingPlace { header: 0, data: 4096 });
            assert_eq!(s2c, RingPlace { header: 2048, data: 4096 + capacity });
            assert_eq!(len, 4096 + 2 * capacity);
            assert_eq!(segment_len(capacity), len);
            let header = std::mem::size_of::<crate::ring::protocol::RingHeader>();
            let spans = [(0, header), (2048, 2048 + header), (4096, 4096 + capacity), (4096 + capacity, len)];
            for (i, a) in spans.iter().enumerate() {
                for b in &spans[i + 1..] {
                    assert!(a.1 <= b.0, "{a:?} and {b:?} overlap");
                }
            }
        }
    }

    /// A server out of descriptors or memory says which to the client; other failures stay the
    /// listener's own.
    #[test]
    fn resource_refusals_name_the_resource() {
        let fds = std::io::Error::from_raw_os_error(if cfg!(windows) { 4 } else { 24 });
        for (err, says) in [
            (IpcError::Io(fds), "file descriptors"),
            (IpcError::Io(std::io::ErrorKind::OutOfMemory.into()), "memory"),
        ] {
            let refused = as_refusal(err).unwrap();
            let hello = refusal(&refused);
            assert_eq!(u32_at(&hello, 12), STATUS_NO_RESOURCES);
            let heard = check_server_hello(&hello).unwrap_err();
            assert!(matches!(&heard, IpcError::ServerRefused(why) if why.contains(says)), "{heard}");
            assert_eq!(heard.to_string(), refused.to_string());
        }
        assert!(as_refusal(IpcError::Io(std::io::ErrorKind::PermissionDenied.into())).is_err());
    }

    proptest::proptest! {
        /// Hellos are peer-written bytes: any 24 or 48 of them are checked without a panic, and
        /// a server hello that passes offers a capacity the ring accepts with the segment length
        /// that goes with it.
        #[test]
        fn arbitrary_hellos_never_panic(
            client in proptest::array::uniform24(proptest::num::u8::ANY),
            server in proptest::collection::vec(proptest::num::u8::ANY, SERVER_HELLO_LEN),
            status in 0u32..6,
            detail in 0u32..4,
        ) {
            let _ = check_client_hello(&client);
            let mut hello: [u8; SERVER_HELLO_LEN] = server.try_into().unwrap();
            let _ = check_server_hello(&hello);
            // The same with a valid magic and version, so that the status and sizes are reached.
            hello[0..8].copy_from_slice(&SERVER_MAGIC.to_le_bytes());
            hello[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
            hello[12..16].copy_from_slice(&status.to_le_bytes());
            hello[20..24].copy_from_slice(&detail.to_le_bytes());
            if let Ok(capacity) = check_server_hello(&hello) {
                proptest::prop_assert!(check_capacity(capacity).is_ok());
                proptest::prop_assert_eq!(u64_at(&hello, 32), segment_len(capacity) as u64);
            }
        }
    }

    #[test]
    fn client_hello_is_validated() {
        let mut bad = client_hello(PROTOCOL_VERSION);
        bad[0] ^= 1;
        assert!(matches!(check_client_hello(&bad), Err(IpcError::Handshake(_))));
        let newer = client_hello(PROTOCOL_VERSION + 1);
        assert!(matches!(
            check_client_hello(&newer),
            Err(IpcError::VersionMismatch { ours: PROTOCOL_VERSION, theirs }) if theirs == PROTOCOL_VERSION + 1
        ));
        let refused = refusal(&IpcError::VersionMismatch { ours: 1, theirs: 2 });
        assert_eq!(u32_at(&refused, 12), STATUS_VERSION_MISMATCH);
        assert_eq!(
            u32_at(
                &refusal(&IpcError::PeerRefused { peer_user: "uid 1".into(), own_user: "uid 0".into() }),
                12
            ),
            STATUS_REFUSED
        );
    }
}
