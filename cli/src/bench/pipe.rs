//! The baseline on Windows: a named pipe (byte mode), each message framed by a 4-byte
//! little-endian length as on the Unix socket.
//!
//! The client (the bench process, whose calls are timed) opens `\\.\pipe\<name>` as a
//! `std::fs::File` and uses std blocking I/O through [`PrefixedConn`], exactly like the socket
//! client. std cannot create the server end of a named pipe, so the server child creates it with
//! tokio (`tokio::net::windows::named_pipe`, overlapped I/O on a current-thread runtime): no
//! `unsafe` code here. Its loop does what [`PrefixedConn`]'s does (buffered reads, one write of
//! header and payload per message), each call driven to completion with `block_on`.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use tokio::runtime::Runtime;

use super::measure::{self, Result, ServerConn};
use super::prefixed::{check, encode_frame, frame_len, PrefixedConn, HEADER, READ_BUF};
use super::{Mode, ServerArgs, Test};
use crate::child::announce_ready;

/// Name of the baseline in the table and the JSON.
pub const NAME: &str = "pipe";

/// The client's end of a framed pipe connection.
pub type Conn = PrefixedConn<File>;

/// The pipe path for a server named `base` (`--name` of the child); there is no file to remove.
pub fn endpoint(base: &str) -> (String, PathBuf) {
    (format!(r"\\.\pipe\{base}"), PathBuf::new())
}

/// Connects to the server's pipe `path`.
pub fn connect(path: &str) -> Result<Conn> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot connect to {path}: {e}"))?;
    let writer = file.try_clone()?;
    Ok(PrefixedConn::new(file, writer))
}

/// The server's end: the pipe behind a read buffer, and the runtime that drives it.
struct PipeServer {
    rt: Runtime,
    pipe: BufReader<NamedPipeServer>,
    /// Header and payload of the last frame read or written.
    frame: Vec<u8>,
}

/// Reads one frame into `frame` and returns its payload length; `None` when the client closed
/// the pipe between frames.
async fn read_frame(pipe: &mut BufReader<NamedPipeServer>, frame: &mut Vec<u8>) -> Result<Option<usize>> {
    match pipe.fill_buf().await {
        Ok([]) => return Ok(None),
        Ok(_) => {}
        // A pipe whose client has gone reports a broken pipe rather than end of file.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut header = [0u8; HEADER];
    pipe.read_exact(&mut header).await?;
    let len = frame_len(header)?;
    frame.resize(HEADER + len, 0);
    frame[..HEADER].copy_from_slice(&header);
    pipe.read_exact(&mut frame[HEADER..]).await?;
    Ok(Some(len))
}

/// Reads one frame and writes it back as it is; `false` when the client closed the pipe.
async fn echo_frame(pipe: &mut BufReader<NamedPipeServer>, frame: &mut Vec<u8>) -> Result<bool> {
    if read_frame(pipe, frame).await?.is_none() {
        return Ok(false);
    }
    pipe.get_mut().write_all(frame).await?;
    Ok(true)
}

/// Writes one frame holding `msg`.
async fn write_frame(pipe: &mut BufReader<NamedPipeServer>, frame: &mut Vec<u8>, msg: &[u8]) -> Result<()> {
    encode_frame(frame, msg)?;
    pipe.get_mut().write_all(frame).await?;
    Ok(())
}

impl ServerConn for PipeServer {
    fn echo(&mut self) -> Result<bool> {
        self.rt.block_on(echo_frame(&mut self.pipe, &mut self.frame))
    }

    fn recv_check(&mut self, len: usize, tag: u8) -> Result<bool> {
        let got = self.rt.block_on(read_frame(&mut self.pipe, &mut self.frame))?;
        let got = got.ok_or("peer closed the connection")?;
        Ok(check(&self.frame, got, len, tag))
    }

    fn recv_check_or_end(&mut self, len: usize, tag: u8) -> Result<Option<bool>> {
        let got = self.rt.block_on(read_frame(&mut self.pipe, &mut self.frame))?;
        let got = got.ok_or("peer closed the connection")?;
        Ok((got > 0).then(|| check(&self.frame, got, len, tag)))
    }

    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.rt.block_on(write_frame(&mut self.pipe, &mut self.frame, msg))
    }
}

/// Runs the server child: creates the pipe `args.name` (one instance), prints `ready`, waits for
/// the client and serves the test; then waits for the client to close the pipe, so that nothing
/// written is still in flight when the server's end goes away.
pub fn serve(args: &ServerArgs) -> Result<()> {
    if args.mode != Mode::Blocking {
        return Err("the pipe baseline only has the blocking mode".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let pipe = rt.block_on(async {
        let server = ServerOptions::new()
            .first_pipe_instance(true)
            .max_instances(1)
            .create(&args.name)
            .map_err(|e| format!("cannot create the pipe {}: {e}", args.name))?;
        announce_ready()?;
        server.connect().await?;
        Ok::<_, measure::Error>(server)
    })?;
    let mut conn = PipeServer { rt, pipe: BufReader::with_capacity(READ_BUF, pipe), frame: Vec::new() };
    measure::serve_baseline(&mut conn, args.test, args.payload, args.warmup, args.count)?;
    if args.test != Test::Echo {
        while conn.rt.block_on(read_frame(&mut conn.pipe, &mut conn.frame))?.is_some() {}
    }
    Ok(())
}
