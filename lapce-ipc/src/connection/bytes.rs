//! The byte-stream mode, blocking flavour: [`BlockingByteStream`], `std::io::Read + Write` over a
//! [`BlockingSharedMemoryStream`].
//!
//! The rules are on [`BlockingByteStream`].

use std::fmt;
use std::io::{self, Read, Write};

use crate::channel::{RecvHalf, SendHalf};
use crate::error::IpcError;
use crate::BlockingSharedMemoryStream;

/// Largest record a byte-stream write publishes: small enough that a writer refills the ring
/// while the reader drains it (records are freed whole), large enough that a bulk transfer
/// makes few records.
pub const BYTE_RECORD_MAX: usize = 64 * 1024;

/// A [`BlockingSharedMemoryStream`] as a byte stream: `std::io::Read + Write`.
///
/// A connection carries records (messages), not bytes. The byte-stream mode is an adapter that
/// owns the stream, so its message API cannot be mixed with byte reads by mistake:
///
/// - A write publishes one record of up to [`BYTE_RECORD_MAX`] bytes (fewer when the stream's
///   largest message is smaller) and returns how many bytes it took; the peer can read them as
///   soon as the write returns, so `flush` has nothing to do. Once the peer is known to be
///   gone, writes fail with `BrokenPipe` (a message send would still fill the ring).
/// - A read copies from the oldest record, as much as the buffer holds; the rest of the record
///   stays for the next read. Record boundaries are not visible to the reader: bytes arrive
///   whole and in order, in whatever pieces the reads ask for.
/// - An empty record ends the byte stream: the writer sends one when it shuts down (or is
///   dropped), and the reader returns EOF (`Ok(0)`) from then on. A closed connection (the peer
///   dropped everything, or died) also reads as EOF once every byte it wrote has been read: the
///   ring cannot tell a clean close from a crash, so a protocol that must know frames its data
///   (a length-delimited codec ends on a whole frame).
///
/// ```no_run
/// use std::io::{Read, Write};
/// use lapce_ipc::{BlockingByteStream, BlockingSharedMemoryStream};
///
/// let mut bytes = BlockingByteStream::new(BlockingSharedMemoryStream::connect("echo-bytes")?);
/// bytes.write_all(b"hello")?;
/// bytes.shutdown_write()?; // the peer reads EOF after "hello"
/// let mut echoed = Vec::new();
/// bytes.read_to_end(&mut echoed)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BlockingByteStream {
    writer: BlockingByteWriter,
    reader: BlockingByteReader,
}

/// The writing half of a [`BlockingByteStream`]: `std::io::Write`. Dropping it shuts it down.
pub struct BlockingByteWriter {
    half: SendHalf,
    shut: bool,
}

/// The reading half of a [`BlockingByteStream`]: `std::io::Read`.
pub struct BlockingByteReader {
    half: RecvHalf,
    /// Bytes of the oldest record already read.
    offset: usize,
    eof: bool,
}

impl BlockingByteStream {
    /// Turns `stream` into a byte stream. Both sides of a connection must use the byte mode.
    pub fn new(stream: BlockingSharedMemoryStream) -> BlockingByteStream {
        let (tx, rx) = stream.into_halves();
        BlockingByteStream {
            writer: BlockingByteWriter { half: tx, shut: false },
            reader: BlockingByteReader { half: rx, offset: 0, eof: false },
        }
    }

    /// Splits the stream so that one thread writes while another reads.
    pub fn into_split(self) -> (BlockingByteWriter, BlockingByteReader) {
        (self.writer, self.reader)
    }

    /// Ends our direction: the peer reads EOF after the bytes written so far (see
    /// [`BlockingByteWriter::shutdown_write`]). Reading goes on.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.writer.shutdown_write()
    }
}

impl From<BlockingSharedMemoryStream> for BlockingByteStream {
    fn from(stream: BlockingSharedMemoryStream) -> BlockingByteStream {
        BlockingByteStream::new(stream)
    }
}

impl Read for BlockingByteStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl Write for BlockingByteStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl BlockingByteWriter {
    /// Sends the end of the byte stream (an empty record, waiting for room for it): the peer
    /// reads EOF once it has read everything before. Later writes fail with `BrokenPipe`; a
    /// second shutdown does nothing.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if !self.shut {
            self.half.send(&[], None).map_err(to_io)?;
            self.shut = true;
        }
        Ok(())
    }
}

impl Write for BlockingByteWriter {
    /// Publishes up to [`BYTE_RECORD_MAX`] bytes of `buf` as one record, waiting for room.
    /// Fails with `BrokenPipe` once the peer is known to be gone, room or not.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.shut {
            return Err(shut_down());
        }
        if self.half.link().gone_lately() {
            return Err(to_io(IpcError::PeerGone));
        }
        let n = buf.len().min(record_limit(self.half.max_message()));
        if n == 0 {
            return Ok(0);
        }
        self.half.send(&buf[..n], None).map_err(to_io)?;
        Ok(n)
    }

    /// Nothing to do: a write is visible to the peer when it returns.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BlockingByteWriter {
    /// Shuts down if there is room for the end record now (never waits: a full ring means the
    /// peer reads EOF when the connection closes instead).
    fn drop(&mut self) {
        if !self.shut {
            let _ = self.half.try_send(&[]);
        }
    }
}

impl Read for BlockingByteReader {
    /// Waits for bytes; `Ok(0)` at the end of the byte stream (or for an empty `buf`).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.eof || buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.half.try_read_part(&mut self.offset, buf).map_err(to_io)? {
                Some(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Some(n) => return Ok(n),
                None => match self.half.readable_blocking(None) {
                    Ok(()) => {}
                    Err(IpcError::PeerGone) => {
                        self.eof = true;
                        return Ok(0);
                    }
                    Err(e) => return Err(to_io(e)),
                },
            }
        }
    }
}

impl fmt::Debug for BlockingByteWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingByteWriter").field("half", &self.half).field("shut", &self.shut).finish()
    }
}

impl fmt::Debug for BlockingByteReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingByteReader").field("half", &self.half).field("eof", &self.eof).finish()
    }
}

/// The largest record a byte-stream write makes on a stream whose largest message is `max`.
pub(super) fn record_limit(max: usize) -> usize {
    max.min(BYTE_RECORD_MAX)
}

/// The error of a write after shutdown.
pub(super) fn shut_down() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the byte stream's writing side is shut down")
}

/// An [`IpcError`] as the `std::io` traits report it: the peer's going is `BrokenPipe` (for a
/// writer; a reader turns it into EOF first), corruption is `InvalidData`.
pub(super) fn to_io(e: IpcError) -> io::Error {
    match e {
        IpcError::Io(e) => e,
        IpcError::PeerGone => io::Error::new(io::ErrorKind::BrokenPipe, e),
        IpcError::Timeout => io::Error::new(io::ErrorKind::TimedOut, e),
        IpcError::WouldBlock => io::Error::new(io::ErrorKind::WouldBlock, e),
        IpcError::Corrupted(_) => io::Error::new(io::ErrorKind::InvalidData, e),
        e => io::Error::other(e),
    }
}
