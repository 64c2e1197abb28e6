//! The baseline: a Unix-domain stream socket with std blocking I/O, each message framed by a
//! 4-byte little-endian length.
//!
//! A message is written with one `write_all` of header and payload together (one `write` system
//! call in practice); reads go through a `BufReader`, so a burst of small messages costs few
//! `read` calls. This is the ordinary, reasonably tuned way to do message passing over a socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::child::announce_ready;
use super::measure::{self, ClientConn, Result, ServerConn};
use super::{Mode, ServerArgs, Test};

/// Size of the length prefix.
const HEADER: usize = 4;
/// Largest frame either side accepts.
const MAX_FRAME: usize = 64 << 20;
/// Capacity of the read buffer.
const READ_BUF: usize = 256 << 10;

/// One end of a framed socket connection (used by both the client and the server).
pub struct UdsConn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Header and payload of the last frame read or written.
    frame: Vec<u8>,
}

impl UdsConn {
    /// Wraps a connected socket.
    fn new(sock: UnixStream) -> Result<UdsConn> {
        let writer = sock.try_clone()?;
        Ok(UdsConn { reader: BufReader::with_capacity(READ_BUF, sock), writer, frame: Vec::new() })
    }

    /// Connects to the server socket at `path`.
    pub fn connect(path: &Path) -> Result<UdsConn> {
        let sock =
            UnixStream::connect(path).map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
        Self::new(sock)
    }

    /// Writes one frame.
    fn write_frame(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() > MAX_FRAME {
            return Err(format!("message of {} bytes exceeds the frame limit {MAX_FRAME}", msg.len()).into());
        }
        self.frame.clear();
        self.frame.extend_from_slice(&(msg.len() as u32).to_le_bytes());
        self.frame.extend_from_slice(msg);
        self.writer.write_all(&self.frame)?;
        Ok(())
    }

    /// Reads one frame into `self.frame` and returns its payload length; `None` when the peer
    /// closed the connection between frames.
    fn read_frame(&mut self) -> Result<Option<usize>> {
        if self.reader.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let mut header = [0u8; HEADER];
        self.reader.read_exact(&mut header)?;
        let len = u32::from_le_bytes(header) as usize;
        if len > MAX_FRAME {
            return Err(format!("frame of {len} bytes exceeds the limit {MAX_FRAME}").into());
        }
        self.frame.resize(HEADER + len, 0);
        self.frame[..HEADER].copy_from_slice(&header);
        self.reader.read_exact(&mut self.frame[HEADER..])?;
        Ok(Some(len))
    }

    /// Reads one frame; a closed connection is an error here.
    fn expect_frame(&mut self) -> Result<usize> {
        self.read_frame()?.ok_or_else(|| "peer closed the connection".into())
    }
}

impl ClientConn for UdsConn {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.write_frame(msg)
    }

    fn recv_probe(&mut self) -> Result<(usize, u8)> {
        let len = self.expect_frame()?;
        Ok((len, self.frame.get(HEADER).copied().unwrap_or(0)))
    }

    fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        let len = self.expect_frame()?;
        if len > buf.len() {
            return Err(format!("buffer of {} bytes too small for a {len}-byte message", buf.len()).into());
        }
        buf[..len].copy_from_slice(&self.frame[HEADER..]);
        Ok(len)
    }
}

impl ServerConn for UdsConn {
    fn echo(&mut self) -> Result<bool> {
        if self.read_frame()?.is_none() {
            return Ok(false);
        }
        // The frame read is written back as it is, header included.
        self.writer.write_all(&self.frame)?;
        Ok(true)
    }

    fn recv_check(&mut self, len: usize, tag: u8) -> Result<bool> {
        let got = self.expect_frame()?;
        Ok(got == len && self.frame.get(HEADER) == Some(&tag))
    }

    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.write_frame(msg)
    }
}

/// Removes a socket file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the server child: binds the socket at path `args.name`, prints `ready`, accepts one
/// client, removes the socket file and serves the test.
pub fn serve(args: &ServerArgs) -> Result<()> {
    if args.mode != Mode::Blocking {
        return Err("the uds baseline only has the blocking mode".into());
    }
    let path = PathBuf::from(&args.name);
    let listener = UnixListener::bind(&path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    let file = RemoveOnDrop(path);
    announce_ready()?;
    let (sock, _) = listener.accept()?;
    drop(listener);
    drop(file);
    let mut conn = UdsConn::new(sock)?;
    match args.test {
        Test::Echo => measure::serve_echo(&mut conn),
        Test::Sink | Test::LargeSink => measure::serve_sink(&mut conn, args.payload, args.warmup, args.count),
    }
}
