//! The ring layer: a lock-free single-producer / single-consumer queue of variable-length byte
//! records in memory shared with another process.
//!
//! [`protocol`] holds the rules both sides follow (header layout, record format, validation,
//! wake-up handshake) over abstract memory; this module binds them to a raw shared mapping and
//! offers the producer and consumer halves. It knows nothing of processes or sockets: sleeping
//! and waking are left to the caller, who gets told when the peer must be woken.
//!
//! All `unsafe` code of the ring lives in this file.

pub(crate) mod protocol;

pub(crate) use std::sync::atomic;

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

use crate::error::{IpcError, Result};
use protocol::{ConsumerCore, Corruption, DataArea, ProducerCore, RingHeader};

pub(crate) use protocol::{announce_sleep, cancel_sleep, AWAKE, SLEEPS_DOORBELL, SLEEPS_FUTEX};

/// Bytes reserved for the header of a ring alone in its segment ([`RingPlace::alone`]): one
/// page, so the data area is page aligned. (A connection segment puts both headers in one page.)
pub(crate) const RING_HEADER_SPAN: usize = 4096;
/// Data areas start on a boundary of this many bytes (a page: the idle trim gives whole pages
/// back).
pub(crate) const DATA_ALIGN: usize = 4096;
/// Smallest ring capacity accepted.
pub const MIN_CAPACITY: usize = 4096;
/// Largest ring capacity accepted.
pub const MAX_CAPACITY: usize = 1 << 30;

const _: () = assert!(std::mem::size_of::<RingHeader>() <= RING_HEADER_SPAN);
const _: () = assert!(std::mem::align_of::<RingHeader>() <= RING_HEADER_SPAN);
// `RingPlace::alone` puts the data area one header span after a page-aligned offset.
const _: () = assert!(RING_HEADER_SPAN.is_multiple_of(DATA_ALIGN));

/// Bytes a ring of `capacity` occupies alone in a segment (header page + data area).
pub(crate) fn ring_footprint(capacity: usize) -> usize {
    RING_HEADER_SPAN + capacity
}

/// Where a ring lies in a region: the offsets of its header and of its data area. A ring alone
/// ([`RingPlace::alone`]) has its header page right before its data; a connection's two rings
/// share one header page (see the connection layer's segment layout).
///
/// Rings placed in one region must not overlap one another (neither header nor data area):
/// [`init_ring`] and `attach` check a ring's own header and data area against the region and
/// each other, but see one ring at a time. The callers guarantee it: a buffer holds one ring,
/// and a connection segment's fixed layout (`connection::handshake`, tested against
/// docs/PROTOCOL.md) places two apart for every accepted capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingPlace {
    /// Offset of the [`RingHeader`]: a multiple of its alignment (128).
    pub(crate) header: usize,
    /// Offset of the data area: a multiple of [`DATA_ALIGN`].
    pub(crate) data: usize,
}

impl RingPlace {
    /// A ring alone at `offset`: its header page, then its data area.
    pub(crate) fn alone(offset: usize) -> RingPlace {
        RingPlace { header: offset, data: offset + RING_HEADER_SPAN }
    }
}

/// Checks a requested ring capacity: a power of two in `MIN_CAPACITY..=MAX_CAPACITY`.
pub(crate) fn check_capacity(capacity: usize) -> Result<()> {
    if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(IpcError::InvalidArgument(format!(
            "ring capacity {capacity} must be a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}"
        )));
    }
    Ok(())
}

/// Largest message (record payload) a ring of `capacity` bytes carries.
pub(crate) fn max_message(capacity: usize) -> usize {
    protocol::max_payload(capacity as u64) as usize
}

/// Memory that can hold rings: a mapping shared with another process.
///
/// # Safety
/// `base()` must point to `len()` bytes that stay mapped, readable and writable for as long as
/// the value lives, with `base()` aligned to at least 4096 bytes. The memory may be written
/// concurrently by another process; it must not be accessed through Rust references elsewhere.
pub(crate) unsafe trait SharedRegion: Send + Sync + 'static {
    fn base(&self) -> *mut u8;
    fn len(&self) -> usize;
    /// Gives the pages wholly inside `offset..offset + len` back to the operating system where
    /// it can: their contents are lost (they read as zeros afterwards, in every process that
    /// maps them) and they stop counting towards anyone's memory until written again. Only
    /// called on bytes this side owns and no longer needs. The default does nothing.
    fn discard(&self, _offset: usize, _len: usize) {}
}

impl From<Corruption> for IpcError {
    fn from(c: Corruption) -> IpcError {
        IpcError::Corrupted(c.0)
    }
}

/// One ring located in a region: header and data-area pointers, checked once at creation.
struct RingMemory {
    /// Keeps the mapping alive as long as the pointers below are used.
    region: Arc<dyn SharedRegion>,
    header: NonNull<RingHeader>,
    data: NonNull<u8>,
    capacity: usize,
}

// SAFETY: the pointers target a shared mapping kept alive by `region` (itself Send + Sync). All
// accesses through them are atomic (header, record headers) or confined by the ring protocol to
// bytes that the owning side of the ring currently owns, so moving the value to another thread
// or sharing it is no different from sharing the mapping.
unsafe impl Send for RingMemory {}
// SAFETY: see `Send`; `&RingMemory` only exposes atomics and raw pointers.
unsafe impl Sync for RingMemory {}

impl RingMemory {
    /// Locates the ring at `place` and checks that its header and its data area lie within the
    /// region, aligned, and apart from each other.
    fn locate(region: Arc<dyn SharedRegion>, place: RingPlace, capacity: usize) -> Result<RingMemory> {
        check_capacity(capacity)?;
        let header_size = std::mem::size_of::<RingHeader>();
        let header_end = place.header.checked_add(header_size);
        let data_end = place.data.checked_add(capacity);
        let fits = |end: Option<usize>| end.is_some_and(|end| end <= region.len());
        let apart =
            header_end.is_some_and(|h| h <= place.data) || data_end.is_some_and(|d| d <= place.header);
        if !place.header.is_multiple_of(std::mem::align_of::<RingHeader>())
            || !place.data.is_multiple_of(DATA_ALIGN)
            || !fits(header_end)
            || !fits(data_end)
            || !apart
        {
            return Err(IpcError::InvalidArgument(format!(
                "ring of {capacity} bytes with its header at offset {} and its data at offset {} is \
                 misaligned, overlapping itself or outside a {}-byte region",
                place.header,
                place.data,
                region.len()
            )));
        }
        let base = region.base();
        if base.is_null() || !(base as usize).is_multiple_of(DATA_ALIGN) {
            return Err(IpcError::InvalidArgument("region base is not page aligned".into()));
        }
        // SAFETY: `header + size_of::<RingHeader>()` and `data + capacity` are at most
        // `region.len()` (checked above), so both pointers and the ranges behind them stay
        // inside the mapping; they are non-null because `base` is.
        let (header, data) = unsafe {
            (
                NonNull::new_unchecked(base.add(place.header).cast::<RingHeader>()),
                NonNull::new_unchecked(base.add(place.data)),
            )
        };
        Ok(RingMemory { region, header, data, capacity })
    }

    fn header(&self) -> &RingHeader {
        // SAFETY: `header` is in bounds, aligned for `RingHeader` and apart from the data area
        // (checked in `locate`), the mapping
        // outlives `&self` (held by `region`), and `RingHeader` consists only of atomics, for
        // which every bit pattern is valid and concurrent access from another process is
        // defined (atomics on shared mappings are coherent).
        unsafe { self.header.as_ref() }
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= self.capacity, "record header offset {off} out of range");
        // SAFETY: in bounds and 4-aligned (asserted; the data area is page aligned), inside the
        // live mapping, and accessed only atomically.
        unsafe { &*self.data.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// Raw pointer to `len` bytes at `off` of the data area, bounds-checked.
    fn bytes(&self, off: usize, len: usize) -> *mut u8 {
        assert!(off.checked_add(len).is_some_and(|end| end <= self.capacity), "range out of the data area");
        // SAFETY: `off + len <= capacity` was just asserted, so the pointer stays in the area.
        unsafe { self.data.as_ptr().add(off) }
    }
}

impl DataArea for RingMemory {
    fn write_header(&self, off: usize, len: u32, kind: u32) {
        self.word(off).store(len, atomic::Ordering::Relaxed);
        self.word(off + 4).store(kind, atomic::Ordering::Relaxed);
    }

    fn read_header(&self, off: usize) -> (u32, u32) {
        (self.word(off).load(atomic::Ordering::Relaxed), self.word(off + 4).load(atomic::Ordering::Relaxed))
    }
}

/// A waiter word of a ring header, kept alive with its mapping, so that another thread (the
/// hang-up watcher) can wake whoever sleeps on it.
pub(crate) struct WaiterWord {
    _region: Arc<dyn SharedRegion>,
    word: NonNull<AtomicU32>,
}

// SAFETY: the pointer targets an atomic in a mapping that `_region` keeps alive; atomics may be
// used from any thread.
unsafe impl Send for WaiterWord {}
// SAFETY: see `Send`; only `&AtomicU32` is handed out.
unsafe impl Sync for WaiterWord {}

impl WaiterWord {
    fn new(mem: &RingMemory, word: &AtomicU32) -> WaiterWord {
        WaiterWord { _region: mem.region.clone(), word: NonNull::from(word) }
    }

    pub(crate) fn get(&self) -> &AtomicU32 {
        // SAFETY: the word lies in a header validated by `RingMemory::locate`, in a mapping
        // `_region` keeps alive; it is only accessed atomically.
        unsafe { self.word.as_ref() }
    }
}

/// A read-only view of one ring for metrics: its positions, loaded from the shared header and
/// validated (a peer may have written anything there), and the records this side moved through
/// it. Kept alive with its mapping, so a scraper on another thread may hold it. Read only by
/// the metrics (feature `metrics`).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct RingGauge {
    _region: Arc<dyn SharedRegion>,
    header: NonNull<RingHeader>,
    capacity: u64,
    records: Arc<AtomicU64>,
}

// SAFETY: the pointer targets a header of atomics in a mapping that `_region` keeps alive;
// atomics may be loaded from any thread, and nothing is written through it.
unsafe impl Send for RingGauge {}
// SAFETY: see `Send`.
unsafe impl Sync for RingGauge {}

/// What a [`RingGauge`] read: both positions (bytes that went through the ring since it was
/// made, record headers and padding included), the capacity, and this side's record count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct RingLevels {
    pub(crate) written: u64,
    pub(crate) read: u64,
    pub(crate) capacity: u64,
    pub(crate) records: u64,
}

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl RingLevels {
    /// The share of the data area in use (written, not yet released), 0.0 to 1.0.
    pub(crate) fn occupancy(&self) -> f64 {
        (self.written - self.read) as f64 / self.capacity as f64
    }
}

impl RingGauge {
    fn new(mem: &RingMemory, records: Arc<AtomicU64>) -> RingGauge {
        RingGauge { _region: mem.region.clone(), header: mem.header, capacity: mem.capacity as u64, records }
    }

    /// The ring's levels now, or `None` when the header holds positions no honest pair of
    /// peers could have written (the ring's own ends would fail on them too).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn levels(&self) -> Option<RingLevels> {
        // SAFETY: the header was validated by `RingMemory::locate` (in bounds, aligned) and
        // lies in a mapping `_region` keeps alive; it consists of atomics only, loaded here.
        let header = unsafe { self.header.as_ref() };
        // The two positions move on their own: a consistent pair is one whose read position did
        // not change while the write position was loaded.
        for _ in 0..4 {
            let before = header.read_pos.0.load(atomic::Ordering::Acquire);
            let written = header.write_pos.0.load(atomic::Ordering::Acquire);
            let read = header.read_pos.0.load(atomic::Ordering::Acquire);
            if read < before {
                return None;
            }
            if read == before {
                protocol::check_positions(read, written, self.capacity).ok()?;
                let records = self.records.load(atomic::Ordering::Relaxed);
                return Some(RingLevels { written, read, capacity: self.capacity, records });
            }
        }
        None
    }
}

/// Writes a fresh ring header at `place` (the creator's side, before the region is shared).
pub(crate) fn init_ring(region: &Arc<dyn SharedRegion>, place: RingPlace, capacity: usize) -> Result<()> {
    let mem = RingMemory::locate(region.clone(), place, capacity)?;
    let h = mem.header();
    for field in [&h.write_pos.0, &h.read_pos.0] {
        field.store(0, atomic::Ordering::Relaxed);
    }
    h.data_waiter.0.store(AWAKE, atomic::Ordering::Relaxed);
    h.space_waiter.0.store(AWAKE, atomic::Ordering::Relaxed);
    h.capacity.0.store(capacity as u64, atomic::Ordering::Relaxed);
    h.magic.0.store(protocol::RING_MAGIC, atomic::Ordering::Release);
    Ok(())
}

/// Who must be woken after a publish: the peer's waiter word value (see [`protocol`]).
pub(crate) type Wake = u32;

/// The writing half of a ring.
pub(crate) struct Producer {
    mem: RingMemory,
    core: ProducerCore,
    broken: bool,
    /// The write position at which the data area was last given back to the OS (nothing was
    /// written since when it still equals the current one).
    discarded_at: Option<u64>,
    /// Records published, mirrored into `records_seen` for [`RingGauge`]s.
    records: u64,
    records_seen: Arc<AtomicU64>,
}

impl Producer {
    /// Attaches to an initialised ring at `place`, validating its header.
    pub(crate) fn attach(
        region: Arc<dyn SharedRegion>,
        place: RingPlace,
        capacity: usize,
    ) -> Result<Producer> {
        let mem = RingMemory::locate(region, place, capacity)?;
        let (read, write) = protocol::validate_header(mem.header(), capacity as u64)?;
        let core = ProducerCore::new(capacity as u64, read, write)?;
        Ok(Producer {
            mem,
            core,
            broken: false,
            discarded_at: None,
            records: 0,
            records_seen: Arc::default(),
        })
    }

    /// Largest payload of one record.
    pub(crate) fn max_payload(&self) -> usize {
        self.core.max_payload()
    }

    fn check(&self, len: usize) -> Result<()> {
        if self.broken {
            return Err(IpcError::Corrupted("ring already found corrupted".into()));
        }
        if len > self.max_payload() {
            return Err(IpcError::MessageTooLarge { len, max: self.max_payload() });
        }
        Ok(())
    }

    /// Reserves `len` bytes and returns them for writing, or `None` when the ring is full.
    /// Nothing is visible to the consumer until [`Producer::commit`].
    pub(crate) fn try_reserve(&mut self, len: usize) -> Result<Option<&mut [u8]>> {
        self.check(len)?;
        match self.core.reserve(self.mem.header(), len) {
            Ok(Some(r)) => {
                let ptr = self.mem.bytes(r.payload_off, r.max_len);
                // SAFETY: the reservation lies in the free part of the ring, which only the
                // producer may touch until it publishes; the bytes are in bounds (checked by
                // `bytes`) and `&mut self` keeps the slice unique on this side.
                Ok(Some(unsafe { std::slice::from_raw_parts_mut(ptr, r.max_len) }))
            }
            Ok(None) => Ok(None),
            Err(c) => {
                self.broken = true;
                Err(c.into())
            }
        }
    }

    /// Publishes the reserved record with its first `len` bytes. Returns whom to wake.
    pub(crate) fn commit(&mut self, len: usize) -> Wake {
        self.records += 1;
        // Only this side writes it: a plain store, no read-modify-write.
        self.records_seen.store(self.records, atomic::Ordering::Relaxed);
        self.core.commit(self.mem.header(), &self.mem, len)
    }

    /// A gauge of this ring (its record count is the records this producer published).
    pub(crate) fn gauge(&self) -> RingGauge {
        RingGauge::new(&self.mem, self.records_seen.clone())
    }

    /// Forgets a reservation without publishing it.
    pub(crate) fn abort(&mut self) {
        self.core.abort();
    }

    /// The consumer's waiter word (to wake it after a publish).
    pub(crate) fn peer_waiter(&self) -> &AtomicU32 {
        &self.mem.header().data_waiter.0
    }

    /// Gives the data area's pages back to the OS when the ring is empty (idle trim). Returns
    /// whether the data area is given back now, by this call or by an earlier one with nothing
    /// written since (then nothing is done again). The ring works as before afterwards: the
    /// next record is written to fresh zero pages.
    ///
    /// Sound because, with the ring empty, the whole data area belongs to the producer: the
    /// consumer released every record (its `read_pos` store, which this side loaded with
    /// Acquire, comes after its last read of them) and reads nothing until the next publish,
    /// which happens after the discard on this thread.
    pub(crate) fn discard_if_empty(&mut self) -> Result<bool> {
        if self.broken || self.core.has_reservation() {
            return Ok(false);
        }
        let (read, write) = match self.core.positions(self.mem.header()) {
            Ok(p) => p,
            Err(c) => {
                self.broken = true;
                return Err(c.into());
            }
        };
        if read != write {
            return Ok(false);
        }
        if self.discarded_at == Some(write) {
            return Ok(true);
        }
        let offset = self.mem.data.as_ptr() as usize - self.mem.region.base() as usize;
        self.mem.region.discard(offset, self.mem.capacity);
        self.discarded_at = Some(write);
        Ok(true)
    }

    /// The word the producer sleeps on while the ring is full.
    pub(crate) fn space_waiter(&self) -> &AtomicU32 {
        &self.mem.header().space_waiter.0
    }

    /// A handle on [`Producer::space_waiter`] that other threads can keep.
    pub(crate) fn space_waiter_handle(&self) -> WaiterWord {
        WaiterWord::new(&self.mem, self.space_waiter())
    }
}

/// The reading half of a ring.
pub(crate) struct Consumer {
    mem: RingMemory,
    core: ConsumerCore,
    broken: bool,
    /// Records released, mirrored into `records_seen` for [`RingGauge`]s.
    records: u64,
    records_seen: Arc<AtomicU64>,
}

impl Consumer {
    /// Attaches to an initialised ring at `place`, validating its header.
    pub(crate) fn attach(
        region: Arc<dyn SharedRegion>,
        place: RingPlace,
        capacity: usize,
    ) -> Result<Consumer> {
        let mem = RingMemory::locate(region, place, capacity)?;
        let (read, write) = protocol::validate_header(mem.header(), capacity as u64)?;
        let core = ConsumerCore::new(capacity as u64, read, write)?;
        Ok(Consumer { mem, core, broken: false, records: 0, records_seen: Arc::default() })
    }

    /// Largest payload of one record.
    pub(crate) fn max_payload(&self) -> usize {
        max_message(self.mem.capacity)
    }

    /// The next record's bytes, or `None` when the ring is empty. The record stays in the ring
    /// (and is returned again) until [`Consumer::release`].
    pub(crate) fn try_peek(&mut self) -> Result<Option<&[u8]>> {
        if self.broken {
            return Err(IpcError::Corrupted("ring already found corrupted".into()));
        }
        match self.core.peek(self.mem.header(), &self.mem) {
            Ok(Some((off, len))) => {
                let ptr = self.mem.bytes(off, len);
                // SAFETY: the record lies between the released and the published position, a
                // range the producer must not touch until we release it; it is in bounds
                // (checked by `bytes` and by `peek` against the published bytes). A hostile
                // producer writing there anyway can only change byte values, and every bit
                // pattern is a valid `u8`.
                Ok(Some(unsafe { std::slice::from_raw_parts(ptr, len) }))
            }
            Ok(None) => Ok(None),
            Err(c) => {
                self.broken = true;
                Err(c.into())
            }
        }
    }

    /// Gives the peeked record's space back to the producer. Returns whom to wake.
    pub(crate) fn release(&mut self) -> Wake {
        self.records += 1;
        // Only this side writes it: a plain store, no read-modify-write.
        self.records_seen.store(self.records, atomic::Ordering::Relaxed);
        self.core.release(self.mem.header())
    }

    /// A gauge of this ring (its record count is the records this consumer released).
    pub(crate) fn gauge(&self) -> RingGauge {
        RingGauge::new(&self.mem, self.records_seen.clone())
    }

    /// The producer's waiter word (to wake it after a release).
    pub(crate) fn peer_waiter(&self) -> &AtomicU32 {
        &self.mem.header().space_waiter.0
    }

    /// The word the consumer sleeps on while the ring is empty.
    pub(crate) fn data_waiter(&self) -> &AtomicU32 {
        &self.mem.header().data_waiter.0
    }

    /// A handle on [`Consumer::data_waiter`] that other threads can keep.
    pub(crate) fn data_waiter_handle(&self) -> WaiterWord {
        WaiterWord::new(&self.mem, self.data_waiter())
    }
}

#[cfg(test)]
mod tests;
