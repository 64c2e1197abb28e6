//! Length-prefixed messages over a byte stream with std blocking I/O: the framing of the
//! baselines (the Unix-domain socket, and the named pipe on Windows). Each message is a 4-byte
//! little-endian length, then the payload.
//!
//! A message is written with one `write_all` of header and payload together (one `write` system
//! call in practice); reads go through a `BufReader`, so a burst of small messages costs few
//! `read` calls. This is the ordinary, reasonably tuned way to do message passing over a socket
//! or a pipe.

use std::io::{BufRead, BufReader, Read, Write};

use super::measure::{ClientConn, Result, ServerConn};

/// Size of the length prefix.
pub const HEADER: usize = 4;
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 64 << 20;
/// Capacity of the read buffer.
pub const READ_BUF: usize = 256 << 10;

/// One end of a length-prefixed connection (used by both the client and the server): `reader`
/// and `writer` are two handles of the same stream.
pub struct PrefixedConn<S> {
    reader: BufReader<S>,
    writer: S,
    /// Header and payload of the last frame read or written.
    frame: Vec<u8>,
}

impl<S: Read + Write> PrefixedConn<S> {
    /// Wraps two handles of one connected stream.
    pub fn new(reader: S, writer: S) -> PrefixedConn<S> {
        PrefixedConn { reader: BufReader::with_capacity(READ_BUF, reader), writer, frame: Vec::new() }
    }

    /// Writes one frame.
    fn write_frame(&mut self, msg: &[u8]) -> Result<()> {
        encode_frame(&mut self.frame, msg)?;
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
        let len = frame_len(header)?;
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

/// Puts header and payload of `msg` into `frame`.
pub fn encode_frame(frame: &mut Vec<u8>, msg: &[u8]) -> Result<()> {
    if msg.len() > MAX_FRAME {
        return Err(format!("message of {} bytes exceeds the frame limit {MAX_FRAME}", msg.len()).into());
    }
    frame.clear();
    frame.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    frame.extend_from_slice(msg);
    Ok(())
}

/// The payload length a header announces, checked against [`MAX_FRAME`].
pub fn frame_len(header: [u8; HEADER]) -> Result<usize> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes exceeds the limit {MAX_FRAME}").into());
    }
    Ok(len)
}

/// A received frame's length and first payload byte (0 when empty): what `recv_probe` returns.
pub fn probe(frame: &[u8], len: usize) -> (usize, u8) {
    (len, frame.get(HEADER).copied().unwrap_or(0))
}

/// Whether a received frame of payload length `got` is `len` bytes long and starts with `tag`:
/// what `recv_check` returns.
pub fn check(frame: &[u8], got: usize, len: usize, tag: u8) -> bool {
    got == len && frame.get(HEADER) == Some(&tag)
}

/// Copies a received frame's `len`-byte payload into `buf`: what `recv_into` returns.
pub fn copy_payload(frame: &[u8], len: usize, buf: &mut [u8]) -> Result<usize> {
    if len > buf.len() {
        return Err(format!("buffer of {} bytes too small for a {len}-byte message", buf.len()).into());
    }
    buf[..len].copy_from_slice(&frame[HEADER..HEADER + len]);
    Ok(len)
}

impl<S: Read + Write> ClientConn for PrefixedConn<S> {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.write_frame(msg)
    }

    fn recv_probe(&mut self) -> Result<(usize, u8)> {
        let len = self.expect_frame()?;
        Ok(probe(&self.frame, len))
    }

    fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        let len = self.expect_frame()?;
        copy_payload(&self.frame, len, buf)
    }
}

impl<S: Read + Write> ServerConn for PrefixedConn<S> {
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
        Ok(check(&self.frame, got, len, tag))
    }

    fn recv_check_or_end(&mut self, len: usize, tag: u8) -> Result<Option<bool>> {
        let got = self.expect_frame()?;
        Ok((got > 0).then(|| check(&self.frame, got, len, tag)))
    }

    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.write_frame(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let mut frame = Vec::new();
        encode_frame(&mut frame, b"abc").unwrap();
        assert_eq!(frame, [3, 0, 0, 0, b'a', b'b', b'c']);
        assert_eq!(frame_len([3, 0, 0, 0]).unwrap(), 3);
        assert!(frame_len(((MAX_FRAME + 1) as u32).to_le_bytes()).is_err());
    }
}
