//! [`BlockingIpcClient`]: the request/response client for threads, with no runtime at all: a
//! calling thread writes its request and waits on the ring itself (spinning, then on the futex
//! or doorbell), as the async client's tasks do (see [`super::calls`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::calls::{own_answer, own_chunk, Calls, Collect, InPlace, Ticket, ToBytes, Turn};
use super::inbound::{Inbound, Message, PayloadBlock};
use super::outbound::{Outbound, Outbox};
use super::window::{self, Consumed};
use super::{check_size, greeted};
use crate::channel::Link;
use crate::config::IpcConfig;
use crate::error::{IpcError, Result};
use crate::frame::{FrameError, MessageType};
use crate::SharedMemoryStream;

/// First and longest pause between attempts to reach a server that is not (yet) there.
const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(2);
const RECONNECT_MAX_PAUSE: Duration = Duration::from_millis(50);

/// How long a blocking client waits to tell the server it gave up on a request (the `Cancel`
/// frame needs room in a ring that the server may be slow to empty).
const CANCEL_WAIT: Duration = Duration::from_millis(100);

/// [`IpcClient`](crate::IpcClient) for code without an async runtime: each call blocks the
/// calling thread, which waits on the connection itself (no runtime, no thread in between).
///
/// `Send + Sync`: share it between threads (`Arc`), and any number of them may have requests in
/// flight at once; a thread waiting for its answer reads the answers of the others too and
/// wakes them. Waits follow the configured [`WaitStrategy`](crate::WaitStrategy): spin
/// first, then sleep on the futex (Linux) or the doorbell.
///
/// When the connection is lost, the requests in flight fail with [`IpcError::PeerGone`]; the
/// next request connects again (waiting for the server up to its timeout), so no thread runs in
/// the background.
///
/// ```no_run
/// use lapce_ipc::frame::MessageType;
/// use lapce_ipc::{BlockingIpcClient, IpcConfig};
///
/// let client = BlockingIpcClient::connect("lapce-ai", IpcConfig::default())?;
/// let answer = client.request(MessageType::Data, b"ping")?;
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
pub struct BlockingIpcClient {
    name: String,
    config: IpcConfig,
    conn: Mutex<Option<Arc<Conn>>>,
    /// Held while (re)connecting, so that one thread connects and the others wait for it.
    connecting: Mutex<()>,
    reconnects: AtomicU64,
}

/// The server's name and the connection's state.
impl std::fmt::Debug for BlockingIpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingIpcClient")
            .field("name", &self.name)
            .field("connected", &self.is_connected())
            .field("reconnects", &self.reconnects())
            .finish()
    }
}

/// One connection.
struct Conn {
    calls: Calls,
    outbox: Outbox,
    link: Arc<Link>,
}

impl Conn {
    /// Whether the connection can take a request: not ended, and the peer not known to be gone.
    fn is_alive(&self) -> bool {
        !self.calls.has_ended() && !self.link.gone_lately()
    }

    /// Sends a request and waits for its answer until `deadline`.
    fn call<C: Collect>(
        &self,
        kind: MessageType,
        payload: &[u8],
        deadline: Option<Instant>,
        collect: C,
    ) -> Result<C::Out> {
        let (ticket, role) = self.calls.begin(kind, false, false)?;
        let mut call = CallGuard { conn: self, ticket, role, sent: true, done: false };
        if !self.outbox.try_send(kind, ticket.id, payload) {
            // A caller that waits to send must not hold the role meanwhile: the server may be
            // waiting for room for answers, which only a reader makes.
            if let Some(inbound) = call.role.take() {
                self.calls.give_back(inbound);
            }
            if let Err(e) = self.outbox.send_blocking(kind, ticket.id, payload, deadline) {
                call.sent = !matches!(e, IpcError::PeerGone);
                return Err(e);
            }
        }
        let out = call.answer(kind, deadline, collect);
        call.done = true;
        out
    }
}

/// A call in progress (see the async client's): cancels on the server if it ends unanswered,
/// gives the reader role back however it ends.
struct CallGuard<'a> {
    conn: &'a Conn,
    ticket: Ticket,
    role: Option<Box<Inbound>>,
    sent: bool,
    done: bool,
}

impl CallGuard<'_> {
    fn answer<C: Collect>(
        &mut self,
        kind: MessageType,
        deadline: Option<Instant>,
        collect: C,
    ) -> Result<C::Out> {
        let mut collect = Some(collect);
        loop {
            if self.role.is_some() {
                let got = read_until_own(self.conn, self.ticket, &mut self.role, deadline, |msg, block| {
                    own_answer(msg, block, kind, &mut collect)
                })?;
                return got;
            }
            match park_until(deadline, |waker| self.conn.calls.poll_unary(self.ticket, waker))? {
                Turn::Done(outcome) => {
                    let c = collect.take().expect("an answer is collected once");
                    return outcome.map(|bytes| c.collect_bytes(bytes));
                }
                Turn::Read(inbound) => self.role = Some(inbound),
            }
        }
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        let running = match self.role.take() {
            Some(inbound) => self.conn.calls.end_giving_back(self.ticket, inbound),
            None => self.conn.calls.end(self.ticket),
        };
        if running && self.sent && !self.done {
            let deadline = Instant::now() + CANCEL_WAIT;
            let _ = self.conn.outbox.send_blocking(MessageType::Cancel, self.ticket.id, &[], Some(deadline));
        }
    }
}

/// As the reader: reads until `mine` returns `Some` for a message of `call` (returned), waiting
/// on the ring until `deadline`. Nobody else settles a blocking call (its timeout is its own
/// deadline) but the connection's end, which only a reader meets. Errors end the connection.
fn read_until_own<T>(
    conn: &Conn,
    call: Ticket,
    role: &mut Option<Box<Inbound>>,
    deadline: Option<Instant>,
    mut mine: impl FnMut(&Message<'_>, &mut PayloadBlock) -> std::result::Result<Option<T>, FrameError>,
) -> Result<T> {
    let inbound = role.as_mut().expect("the reader holds the role");
    loop {
        if let Some(out) = conn.calls.read_ready(inbound, call, |msg, block| mine(&msg, block))? {
            return Ok(out);
        }
        match inbound.rx().readable_blocking(deadline) {
            Ok(()) => {}
            Err(IpcError::Timeout) => return Err(IpcError::Timeout),
            Err(e) => {
                conn.calls.fail_all(&e);
                return Err(e);
            }
        }
    }
}

impl BlockingIpcClient {
    /// Connects to the server bound to `name` (see [`IpcClient::connect`](crate::IpcClient::connect)).
    pub fn connect(name: &str, config: IpcConfig) -> Result<BlockingIpcClient> {
        config.validate()?;
        let conn = establish(name, &config)?;
        Ok(BlockingIpcClient {
            name: name.to_string(),
            config,
            conn: Mutex::new(Some(conn)),
            connecting: Mutex::new(()),
            reconnects: AtomicU64::new(0),
        })
    }

    /// Sends a request and waits at most the configured request timeout for its answer (see
    /// [`IpcClient::request`](crate::IpcClient::request)).
    pub fn request(&self, kind: MessageType, payload: impl AsRef<[u8]>) -> Result<Bytes> {
        self.request_timeout(kind, payload, self.config.request_timeout())
    }

    /// Sends a request and waits at most `timeout` (`None`: no limit) for its answer; on a
    /// timeout the request is cancelled on the server. Errors as
    /// [`IpcClient::request_timeout`](crate::IpcClient::request_timeout).
    pub fn request_timeout(
        &self,
        kind: MessageType,
        payload: impl AsRef<[u8]>,
        timeout: Option<Duration>,
    ) -> Result<Bytes> {
        self.call(kind, payload.as_ref(), timeout, ToBytes)
    }

    /// Like [`request`](Self::request), handing the answer to `f` in place (see
    /// [`IpcClient::request_with`](crate::IpcClient::request_with)).
    pub fn request_with<R>(
        &self,
        kind: MessageType,
        payload: impl AsRef<[u8]>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.call(kind, payload.as_ref(), self.config.request_timeout(), InPlace(f))
    }

    fn call<C: Collect>(
        &self,
        kind: MessageType,
        payload: &[u8],
        timeout: Option<Duration>,
        collect: C,
    ) -> Result<C::Out> {
        check_size(payload.len(), self.config.ipc.max_message_size)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        self.connection(deadline)?.call(kind, payload, deadline, collect)
    }

    /// Sends a streaming request and calls `on_chunk` with each chunk as it arrives; returns
    /// after the stream's end (or its first error). Waiting for the connection is bounded by the
    /// request timeout; the chunks themselves have no deadline.
    pub fn request_stream(
        &self,
        kind: MessageType,
        payload: impl AsRef<[u8]>,
        mut on_chunk: impl FnMut(Bytes),
    ) -> Result<()> {
        let payload = payload.as_ref();
        let deadline = self.config.request_timeout().map(|t| Instant::now() + t);
        let conn = self.connection(deadline)?;
        let (ticket, role) = conn.calls.begin(kind, true, false)?;
        let mut call = CallGuard { conn: &conn, ticket, role, sent: true, done: false };
        if let Some(inbound) = call.role.take() {
            conn.calls.give_back(inbound);
        }
        conn.outbox.send_blocking(kind, ticket.id, payload, None)?;
        let mut consumed = window::configured(&self.config).map(Consumed::new);
        loop {
            let item = next_chunk(&mut call, kind)?;
            match item {
                Some(chunk) => {
                    let chunk = chunk?;
                    if let Some(consumed) = consumed.as_mut().filter(|_| conn.calls.windowed()) {
                        credit(&conn, ticket.id, consumed, chunk.len());
                    }
                    on_chunk(chunk)
                }
                None => {
                    call.done = true;
                    return Ok(());
                }
            }
        }
    }

    /// How many times the client has reconnected after losing its connection.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Whether the client's connection is up (asks the OS where no watcher tells).
    pub fn is_connected(&self) -> bool {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|c| c.is_alive())
    }

    /// The live connection, connecting again (and waiting for the server) until `deadline`.
    fn connection(&self, deadline: Option<Instant>) -> Result<Arc<Conn>> {
        let live = |slot: &Option<Arc<Conn>>| slot.as_ref().filter(|c| c.is_alive()).cloned();
        if let Some(conn) = live(&self.conn.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(conn);
        }
        let _one_at_a_time = self.connecting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conn) = live(&self.conn.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(conn);
        }
        let mut pause = RECONNECT_FIRST_PAUSE;
        loop {
            match establish(&self.name, &self.config) {
                Ok(conn) => {
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
                    return Ok(conn);
                }
                Err(IpcError::Connect { .. } | IpcError::PeerGone | IpcError::Timeout)
                    if deadline.is_none_or(|d| Instant::now() + pause < d) =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
                }
                // The request's time ran out while the server was away.
                Err(IpcError::Connect { .. } | IpcError::PeerGone) => return Err(IpcError::Timeout),
                Err(e) => return Err(e),
            }
        }
    }
}

/// The owner of stream `id` takes a chunk of `len` bytes: a batch of credit goes back to the
/// server when complete (before the chunk is handed on: the owner may take its time with it).
/// Credit that cannot be sent means a lost connection, which the next read meets.
fn credit(conn: &Conn, id: u64, consumed: &mut Consumed, len: usize) {
    if let Some(bytes) = consumed.consumed(len) {
        let payload = window::encode(bytes);
        if conn.outbox.try_send(MessageType::StreamWindow, id, &payload)
            || conn.outbox.send_blocking(MessageType::StreamWindow, id, &payload, None).is_ok()
        {
            consumed.credited(bytes);
        }
    }
}

/// The next chunk of a stream (`None` at its end): read as the reader, or taken from the slot.
fn next_chunk(call: &mut CallGuard<'_>, kind: MessageType) -> Result<Option<Result<Bytes>>> {
    let item = loop {
        if call.role.is_some() {
            let own = read_until_own(call.conn, call.ticket, &mut call.role, None, |msg, block| {
                own_chunk(msg, block, kind)
            });
            break own.unwrap_or_else(|e| Some(Err(e)));
        }
        match park_until(None, |waker| call.conn.calls.poll_stream(call.ticket, waker))? {
            Turn::Done(item) => break item,
            Turn::Read(inbound) => call.role = Some(inbound),
        }
    };
    // The role goes back after every chunk: the caller may take its time with it.
    if let Some(inbound) = call.role.take() {
        call.conn.calls.give_back(inbound);
    }
    if matches!(item, Some(Err(_))) {
        call.done = true;
    }
    Ok(item)
}

/// Opens a connection: stream handshake, then the server's greeting.
fn establish(name: &str, config: &IpcConfig) -> Result<Arc<Conn>> {
    let stream_config = config.stream_config();
    let stream = SharedMemoryStream::connect_with(name, &stream_config)?;
    let max_message = config.ipc.max_message_size;
    let (tx, rx) = stream.into_halves();
    let link = rx.link_handle();
    let mut inbound = Inbound::new(rx, max_message);
    let deadline = Instant::now() + stream_config.handshake_timeout;
    greeting(&mut inbound, deadline)?;
    let outbox = Outbox::new(Outbound::new(tx, max_message), None);
    if let Some(size) = window::configured(config) {
        // The first frame: it applies to every stream requested after it.
        outbox.send_blocking(MessageType::StreamWindow, 0, &window::encode(size), Some(deadline))?;
    }
    Ok(Arc::new(Conn { calls: Calls::new(inbound), outbox, link }))
}

/// Reads the server's greeting until `deadline`: `ready`, or its refusal.
fn greeting(inbound: &mut Inbound, deadline: Instant) -> Result<()> {
    loop {
        if let Some(outcome) = inbound.try_next(|msg, _| greeted(&msg))? {
            return outcome;
        }
        inbound.rx().readable_blocking(Some(deadline))?;
    }
}

/// Wakes a parked thread.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// This thread's waker, made once (a wait then allocates nothing).
    static THREAD_WAKER: Waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
}

/// Polls `poll` with a waker that unparks this thread, parking between polls, until it is
/// ready or `deadline` passes ([`IpcError::Timeout`]).
pub(super) fn park_until<T>(deadline: Option<Instant>, mut poll: impl FnMut(&Waker) -> Poll<T>) -> Result<T> {
    THREAD_WAKER.with(|waker| loop {
        if let Poll::Ready(out) = poll(waker) {
            return Ok(out);
        }
        match deadline {
            None => std::thread::park(),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                _ => return Err(IpcError::Timeout),
            },
        }
    })
}
