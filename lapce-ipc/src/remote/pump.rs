//! The bridge between a local connection and a TCP (TLS) byte stream: each ring message travels
//! as a 4-byte little-endian length and the message's bytes, so message boundaries are kept.
//!
//! Rules:
//! - A length over what the ring holds ends the connection before anything is allocated for it
//!   (the server's own size limit, smaller, is then applied by the server code as for a local
//!   client: an `Error` answer, then the end).
//! - Messages the ring holds at once go out in one write (up to [`BATCH_BYTES`]), so a burst of
//!   small frames makes few TLS records; nothing waits for more to come.
//! - Either side's end ends both: the TLS stream is closed (close_notify) when the local side
//!   goes, and the local connection is dropped (its peer sees a hang-up) when the TCP side goes.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::error::{IpcError, Result};
use crate::{SharedMemoryStream, StreamReceiver, StreamSender};

/// Most bytes gathered from the ring into one write to the socket.
const BATCH_BYTES: usize = 64 * 1024;
/// The read buffer on the socket side.
const READ_BUFFER: usize = 64 * 1024;

/// Pumps `ring` to and from `io` until either ends; `Ok` when one side closed in order.
pub(crate) async fn pump<S>(ring: SharedMemoryStream, io: S) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let max = ring.max_message_size();
    let (tx, rx) = ring.into_split();
    let (r, w) = tokio::io::split(io);
    tokio::select! {
        r = ring_to_io(rx, w) => r,
        r = io_to_ring(BufReader::with_capacity(READ_BUFFER, r), tx, max) => r,
    }
}

/// Appends one message with its length prefix.
fn put(out: &mut Vec<u8>, msg: &[u8]) {
    out.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    out.extend_from_slice(msg);
}

/// Ring to socket: what the ring holds, batched, until the local side goes.
async fn ring_to_io<W: AsyncWrite + Unpin>(mut rx: StreamReceiver, mut w: W) -> Result<()> {
    let mut out = Vec::with_capacity(BATCH_BYTES);
    loop {
        out.clear();
        match rx.recv_with(|m| put(&mut out, m)).await {
            Ok(()) => {}
            Err(IpcError::PeerGone) => {
                let _ = w.shutdown().await;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        while out.len() < BATCH_BYTES {
            match rx.try_recv_with(|m| put(&mut out, m)) {
                Ok(Some(())) => {}
                Ok(None) | Err(IpcError::PeerGone) => break,
                Err(e) => return Err(e),
            }
        }
        w.write_all(&out).await?;
        w.flush().await?;
    }
}

/// Socket to ring: one message per length prefix, until the socket ends.
async fn io_to_ring<R: AsyncRead + Unpin>(mut r: R, mut tx: StreamSender, max: usize) -> Result<()> {
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > max {
            return Err(IpcError::MessageTooLarge { len, max });
        }
        buf.resize(len, 0);
        r.read_exact(&mut buf).await?;
        tx.send(&buf).await?;
    }
}
