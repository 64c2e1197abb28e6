//! The byte-stream mode, tokio flavour: [`ByteStream`], `tokio::io::AsyncRead +
//! AsyncWrite` over a [`SharedMemoryStream`]. Same rules as the blocking
//! [`BlockingByteStream`](crate::BlockingByteStream): writes publish records of up to
//! [`BYTE_RECORD_MAX`](crate::BYTE_RECORD_MAX) bytes, reads ignore record boundaries, an empty
//! record (sent by `poll_shutdown`, or when the writer is dropped) is EOF, and so is a closed
//! connection once everything it carried has been read.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::bytes::{record_limit, shut_down, to_io};
use crate::channel::{RecvHalf, SendHalf};
use crate::error::IpcError;
use crate::SharedMemoryStream;

/// A [`SharedMemoryStream`] as a byte stream: `AsyncRead + AsyncWrite`, for tokio-util
/// codecs, `tokio::io::copy_bidirectional`, `tokio::io::split` and the like.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use lapce_ipc::{ByteStream, SharedMemoryStream};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let stream = SharedMemoryStream::connect("echo-bytes").await?;
/// let mut bytes = ByteStream::new(stream);
/// bytes.write_all(b"hello").await?;
/// bytes.shutdown().await?; // the peer reads EOF after "hello"
/// let mut echoed = Vec::new();
/// bytes.read_to_end(&mut echoed).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ByteStream {
    writer: ByteWriter,
    reader: ByteReader,
}

/// The writing half of a [`ByteStream`]: `AsyncWrite`. Dropping it shuts it down
/// (if the ring has room for the end record at that moment).
pub struct ByteWriter {
    half: SendHalf,
    shut: bool,
}

/// The reading half of a [`ByteStream`]: `AsyncRead`.
pub struct ByteReader {
    half: RecvHalf,
    /// Bytes of the oldest record already read.
    offset: usize,
    eof: bool,
}

impl ByteStream {
    /// Turns `stream` into a byte stream. Both sides of a connection must use the byte mode.
    pub fn new(stream: SharedMemoryStream) -> ByteStream {
        let (tx, rx) = stream.into_halves();
        ByteStream {
            writer: ByteWriter { half: tx, shut: false },
            reader: ByteReader { half: rx, offset: 0, eof: false },
        }
    }

    /// Splits the stream so that two tasks write and read concurrently (no lock, unlike
    /// `tokio::io::split`).
    pub fn into_split(self) -> (ByteWriter, ByteReader) {
        (self.writer, self.reader)
    }
}

impl From<SharedMemoryStream> for ByteStream {
    fn from(stream: SharedMemoryStream) -> ByteStream {
        ByteStream::new(stream)
    }
}

impl AsyncRead for ByteStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for ByteStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

impl AsyncWrite for ByteWriter {
    /// Publishes up to [`BYTE_RECORD_MAX`](crate::BYTE_RECORD_MAX) bytes of `buf` as one
    /// record once the ring has room for it.
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.shut {
            return Poll::Ready(Err(shut_down()));
        }
        if self.half.link().gone_lately() {
            return Poll::Ready(Err(to_io(IpcError::PeerGone)));
        }
        let n = buf.len().min(record_limit(self.half.max_message()));
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        ready!(self.half.poll_room(n, cx)).map_err(to_io)?;
        self.half.try_send(&buf[..n]).map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    /// Ready at once: a write is visible to the peer when it returns.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Sends the end of the byte stream (an empty record, once there is room): the peer reads
    /// EOF after everything written before. Later writes fail with `BrokenPipe`.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shut {
            ready!(self.half.poll_room(0, cx)).map_err(to_io)?;
            self.half.try_send(&[]).map_err(to_io)?;
            self.shut = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for ByteWriter {
    fn drop(&mut self) {
        if !self.shut {
            let _ = self.half.try_send(&[]);
        }
    }
}

impl AsyncRead for ByteReader {
    /// Copies as much of the oldest records as `buf` holds; fills nothing at the end of the
    /// byte stream.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.eof || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match this.half.try_read_part(&mut this.offset, buf.initialize_unfilled()).map_err(to_io)? {
                Some(0) => {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                Some(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                None => match ready!(this.half.poll_readable(cx)) {
                    Ok(()) => {}
                    Err(IpcError::PeerGone) => {
                        this.eof = true;
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) => return Poll::Ready(Err(to_io(e))),
                },
            }
        }
    }
}

impl fmt::Debug for ByteWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteWriter").field("half", &self.half).field("shut", &self.shut).finish()
    }
}

impl fmt::Debug for ByteReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteReader").field("half", &self.half).field("eof", &self.eof).finish()
    }
}
