//! The baseline's tokio flavour: the same length-prefixed frames as [`super::prefixed`] (a
//! 4-byte little-endian length, then the payload; a 256 KiB read buffer; header and payload in
//! one `write_all`) over a tokio `UnixStream`, each side on a current-thread runtime.
//!
//! Both sides run the bench's common loops ([`measure`]): each send and receive is one
//! `block_on` of the async operation, so what differs from the blocking baseline is tokio's way
//! of waiting (a non-blocking socket, readiness from the runtime's epoll) rather than the test.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::runtime::Runtime;

use super::measure::{self, ClientConn, Result, ServerConn};
use super::prefixed::{self, encode_frame, frame_len, HEADER, READ_BUF};
use super::{Mode, ServerArgs};
use crate::child::announce_ready;

/// One end of a framed tokio socket connection (the client and the server).
pub struct Conn {
    rt: Runtime,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Header and payload of the last frame read or written.
    frame: Vec<u8>,
}

fn runtime() -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_io().build()?)
}

impl Conn {
    fn new(rt: Runtime, sock: UnixStream) -> Conn {
        let (r, w) = sock.into_split();
        Conn { rt, reader: BufReader::with_capacity(READ_BUF, r), writer: w, frame: Vec::new() }
    }

    fn write_frame(&mut self, msg: &[u8]) -> Result<()> {
        encode_frame(&mut self.frame, msg)?;
        self.rt.block_on(self.writer.write_all(&self.frame))?;
        Ok(())
    }

    /// Reads one frame into `self.frame`; `None` when the peer closed between frames.
    fn read_frame(&mut self) -> Result<Option<usize>> {
        let (reader, frame) = (&mut self.reader, &mut self.frame);
        self.rt.block_on(async {
            if reader.fill_buf().await?.is_empty() {
                return Ok(None);
            }
            let mut header = [0u8; HEADER];
            reader.read_exact(&mut header).await?;
            let len = frame_len(header)?;
            frame.resize(HEADER + len, 0);
            frame[..HEADER].copy_from_slice(&header);
            reader.read_exact(&mut frame[HEADER..]).await?;
            Ok(Some(len))
        })
    }

    fn expect_frame(&mut self) -> Result<usize> {
        self.read_frame()?.ok_or_else(|| "peer closed the connection".into())
    }
}

impl ClientConn for Conn {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.write_frame(msg)
    }

    fn recv_probe(&mut self) -> Result<(usize, u8)> {
        let len = self.expect_frame()?;
        Ok(prefixed::probe(&self.frame, len))
    }

    fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        let len = self.expect_frame()?;
        prefixed::copy_payload(&self.frame, len, buf)
    }
}

impl ServerConn for Conn {
    fn echo(&mut self) -> Result<bool> {
        if self.read_frame()?.is_none() {
            return Ok(false);
        }
        self.rt.block_on(self.writer.write_all(&self.frame))?;
        Ok(true)
    }

    fn recv_check(&mut self, len: usize, tag: u8) -> Result<bool> {
        let got = self.expect_frame()?;
        Ok(prefixed::check(&self.frame, got, len, tag))
    }

    fn recv_check_or_end(&mut self, len: usize, tag: u8) -> Result<Option<bool>> {
        let got = self.expect_frame()?;
        Ok((got > 0).then(|| prefixed::check(&self.frame, got, len, tag)))
    }

    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.write_frame(msg)
    }
}

/// The socket path for a server named `base`, and the file to remove once it is gone.
pub fn endpoint(base: &str) -> (String, PathBuf) {
    super::uds::endpoint(base)
}

/// Connects to the server socket at `path`.
pub fn connect(path: &str) -> Result<Conn> {
    let rt = runtime()?;
    let sock = rt
        .block_on(UnixStream::connect(Path::new(path)))
        .map_err(|e| format!("cannot connect to {path}: {e}"))?;
    Ok(Conn::new(rt, sock))
}

/// Runs the server child: binds at `args.name`, prints `ready`, accepts one client, removes
/// the socket file and serves the test.
pub fn serve(args: &ServerArgs) -> Result<()> {
    if args.mode != Mode::EventLoop {
        return Err("the uds-tokio baseline only has the event-loop mode".into());
    }
    let rt = runtime()?;
    let path = PathBuf::from(&args.name);
    let sock = rt.block_on(async {
        let listener =
            UnixListener::bind(&path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
        announce_ready()?;
        let (sock, _) = listener.accept().await?;
        let _ = std::fs::remove_file(&path);
        Ok::<_, measure::Error>(sock)
    })?;
    let mut conn = Conn::new(rt, sock);
    measure::serve_baseline(&mut conn, args.test, args.payload, args.warmup, args.count)
}
