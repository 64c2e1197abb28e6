//! [`SharedMemoryBuffer`]: one ring in its own segment, the low-level building block.

#[cfg(unix)]
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crate::error::{IpcError, Result};
use crate::platform::Segment;
use crate::ring::{check_capacity, init_ring, ring_footprint, Consumer, Producer, RingPlace, SharedRegion};

#[cfg(unix)]
const SHARE_MAGIC: u64 = u64::from_le_bytes(*b"LAPCBUF1");

/// A single-producer / single-consumer ring of byte messages in a shared-memory segment.
///
/// This is the low-level piece: non-blocking `write`/`read` and their zero-copy forms, and no
/// wake-ups. One process writes and one reads (the type cannot enforce which across processes;
/// two writers or two readers break the ring for both: reads then fail with
/// [`IpcError::Corrupted`] or return garbage bytes, never out of bounds). For a
/// connection with waiting, backpressure and liveness use
/// [`BlockingSharedMemoryStream`](crate::BlockingSharedMemoryStream).
///
/// The segment has no name anywhere (on Linux an anonymous memfd sealed against resizing) and is
/// handed to the other process as a file descriptor, e.g. with `share` / `receive` over a Unix
/// socket. Those four descriptor methods (`open`, `share`, `receive`, `fd`) exist on Unix only;
/// on Windows, processes connect through [`BlockingSharedMemoryStream`](crate::BlockingSharedMemoryStream).
///
/// ```
/// use lapce_ipc::SharedMemoryBuffer;
///
/// let mut ring = SharedMemoryBuffer::create("example", 64 * 1024)?;
/// ring.write(b"first")?;
/// // Zero-copy: write in place, then publish.
/// ring.write_with(6, |buf| { buf.copy_from_slice(b"second"); 6 })?;
/// assert_eq!(ring.read()?.as_deref(), Some(&b"first"[..]));
/// assert_eq!(ring.read_with(|bytes| bytes.len())?, Some(6));
/// assert_eq!(ring.read()?, None);
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
pub struct SharedMemoryBuffer {
    /// The segment's descriptor, for [`share`](Self::share) and [`fd`](Self::fd); the rings keep
    /// the mapping alive themselves.
    #[cfg(unix)]
    fd: OwnedFd,
    producer: Producer,
    consumer: Consumer,
    capacity: usize,
}

/// The capacity, never the ring's bytes.
impl std::fmt::Debug for SharedMemoryBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemoryBuffer").field("capacity", &self.capacity).finish()
    }
}

impl SharedMemoryBuffer {
    /// Creates a ring with a data area of `capacity` bytes (a power of two, 4 KiB to 1 GiB).
    /// `name` labels the memfd (visible as `memfd:<name>` in `/proc/<pid>/fd`), nothing more.
    pub fn create(name: &str, capacity: usize) -> Result<SharedMemoryBuffer> {
        check_capacity(capacity)?;
        let (segment, handle) = Segment::create(name, ring_footprint(capacity))?;
        let region: Arc<dyn SharedRegion> = Arc::new(segment);
        init_ring(&region, RingPlace::alone(0), capacity)?;
        Self::attach(region, handle, capacity)
    }

    #[cfg(unix)]
    /// Opens a ring from a segment file descriptor received from its creator. The seals, the
    /// size and the ring header are all checked.
    pub fn open(fd: OwnedFd) -> Result<SharedMemoryBuffer> {
        let len = Segment::size_of(fd.as_fd())?;
        let capacity = len.saturating_sub(crate::ring::RING_HEADER_SPAN);
        check_capacity(capacity)
            .map_err(|_| IpcError::Corrupted(format!("segment of {len} bytes holds no ring")))?;
        Self::attach(Arc::new(Segment::open(fd.as_fd(), len)?), fd, capacity)
    }

    fn attach(
        region: Arc<dyn SharedRegion>,
        #[cfg_attr(not(unix), allow(unused_variables))] handle: crate::platform::OsHandle,
        capacity: usize,
    ) -> Result<SharedMemoryBuffer> {
        let producer = Producer::attach(region.clone(), RingPlace::alone(0), capacity)?;
        let consumer = Consumer::attach(region, RingPlace::alone(0), capacity)?;
        Ok(SharedMemoryBuffer {
            #[cfg(unix)]
            fd: handle,
            producer,
            consumer,
            capacity,
        })
    }

    #[cfg(unix)]
    /// Sends the segment's file descriptor over a connected Unix socket.
    pub fn share(&self, sock: &UnixStream) -> Result<()> {
        let mut msg = [0u8; 16];
        msg[..8].copy_from_slice(&SHARE_MAGIC.to_le_bytes());
        msg[8..].copy_from_slice(&(self.capacity as u64).to_le_bytes());
        crate::platform::send_with_fds(sock, &msg, &[self.fd.as_fd()])?;
        Ok(())
    }

    #[cfg(unix)]
    /// Receives a ring sent with [`share`](Self::share) and opens it.
    pub fn receive(sock: &UnixStream) -> Result<SharedMemoryBuffer> {
        let mut msg = [0u8; 16];
        let (n, fds) = crate::platform::recv_with_fds(sock, &mut msg)?;
        if n != 16 || msg[..8] != SHARE_MAGIC.to_le_bytes() {
            return Err(IpcError::Handshake("not a shared ring message".into()));
        }
        let [fd]: [OwnedFd; 1] =
            fds.try_into().map_err(|_| IpcError::Handshake("expected exactly one descriptor".into()))?;
        let ring = Self::open(fd)?;
        if ring.capacity as u64 != u64::from_le_bytes(msg[8..].try_into().expect("8 bytes")) {
            return Err(IpcError::Handshake("announced capacity does not match the segment".into()));
        }
        Ok(ring)
    }

    #[cfg(unix)]
    /// The segment's file descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Capacity of the data area in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Largest message: half the capacity minus the 8-byte record header.
    pub fn max_message_size(&self) -> usize {
        self.producer.max_payload()
    }

    /// Appends one message. [`IpcError::WouldBlock`] when the ring is full (nothing written),
    /// [`IpcError::MessageTooLarge`] above [`max_message_size`](Self::max_message_size).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.write_with(data.len(), |buf| {
            buf.copy_from_slice(data);
            data.len()
        })
        .map(|_| ())
    }

    /// Zero-copy append: reserves `len` bytes, lets `fill` write them in place and return the
    /// final length (at most `len`), then publishes. [`IpcError::WouldBlock`] when full.
    pub fn write_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<usize> {
        let buf = self.producer.try_reserve(len)?.ok_or(IpcError::WouldBlock)?;
        let n = fill(buf).min(len);
        self.producer.commit(n);
        Ok(n)
    }

    /// Takes the next message as an owned vector; `Ok(None)` when the ring is empty.
    pub fn read(&mut self) -> Result<Option<Vec<u8>>> {
        self.read_with(|bytes| bytes.to_vec())
    }

    /// Zero-copy take: calls `f` with the next message in place, then frees its space.
    /// `Ok(None)` when the ring is empty.
    pub fn read_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        let Some(bytes) = self.consumer.try_peek()? else {
            return Ok(None);
        };
        let r = f(bytes);
        self.consumer.release();
        Ok(Some(r))
    }
}
