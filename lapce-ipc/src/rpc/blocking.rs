//! [`BlockingIpcClient`]: the request/response client for threads, with no runtime at all: a
//! calling thread writes its request and waits on the ring itself (spinning, then on the futex
//! or doorbell), as the async client's tasks do (see [`super::calls`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::blocking_stream::BlockingResponseStream;
use super::calls::{own_answer, Calls, Collect, InPlace, Ticket, ToBytes, Turn};
use super::dispatch::{Callback, Dispatcher};
use super::inbound::{Inbound, Message, PayloadBlock};
use super::listen::listen;
use super::notify::{Hub, Notification};
use super::outbound::{Outbound, Outbox};
use super::window;
use super::{check_size, greeted};
use crate::channel::Link;
use crate::config::IpcConfig;
use crate::error::{IpcError, Result};
use crate::frame::{FrameError, MessageType};

/// First and longest pause between attempts to reach a server that is not (yet) there.
const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(2);
const RECONNECT_MAX_PAUSE: Duration = Duration::from_millis(50);

/// How long a blocking client waits to tell the server it gave up on a request (the `Cancel`
/// frame needs room in a ring that the server may be slow to empty).
pub(super) const CANCEL_WAIT: Duration = Duration::from_millis(100);

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
    /// The thread of [`request_async`](Self::request_async), started at its first call.
    dispatcher: OnceLock<Dispatcher>,
    /// Notifications, across connections.
    hub: Arc<Hub>,
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
pub(super) struct Conn {
    pub(super) calls: Calls,
    pub(super) outbox: Outbox,
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
pub(super) fn read_until_own<T>(
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
        let hub = Arc::default();
        let conn = establish(name, &config, &hub)?;
        Ok(BlockingIpcClient::with_connection(name, config, conn, hub))
    }

    /// Like [`connect`](Self::connect), waiting up to `timeout` for a server that is not there
    /// yet (still starting, or restarting): tries again every few milliseconds (the pause
    /// doubles from 2 up to 50 ms) while there is no server to reach or it goes away during
    /// the handshake. After `timeout`, [`IpcError::Timeout`]; other errors (a refusal, a
    /// version mismatch, a bad configuration) at once.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use lapce_ipc::{BlockingIpcClient, IpcConfig};
    ///
    /// // The editor starts the AI engine, then connects while it binds.
    /// let client = BlockingIpcClient::connect_timeout("lapce-ai", IpcConfig::default(), Duration::from_secs(5))?;
    /// # Ok::<(), lapce_ipc::IpcError>(())
    /// ```
    pub fn connect_timeout(name: &str, config: IpcConfig, timeout: Duration) -> Result<BlockingIpcClient> {
        config.validate()?;
        let hub = Arc::default();
        let conn = establish_until(name, &config, &hub, Some(Instant::now() + timeout))?;
        Ok(BlockingIpcClient::with_connection(name, config, conn, hub))
    }

    fn with_connection(name: &str, config: IpcConfig, conn: Arc<Conn>, hub: Arc<Hub>) -> BlockingIpcClient {
        BlockingIpcClient {
            name: name.to_string(),
            config,
            conn: Mutex::new(Some(conn)),
            connecting: Mutex::new(()),
            reconnects: AtomicU64::new(0),
            dispatcher: OnceLock::new(),
            hub,
        }
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

    /// Sends a request and returns at once; `callback` gets the answer when it arrives (or the
    /// error: the server's, [`IpcError::Timeout`] after the configured request timeout, with the
    /// request then cancelled on the server, [`IpcError::PeerGone`] if the connection is lost,
    /// [`IpcError::Cancelled`] if the client is dropped first). Exactly one call, whatever
    /// happens.
    ///
    /// Callbacks run on the client's dispatch thread, one at a time, in the order their
    /// outcomes are known (never inside `request_async` itself): the thread starts at the first
    /// `request_async` (a client that never calls it has none) and ends once the client is
    /// dropped and the calls it had are settled. A callback may make requests of its own,
    /// blocking ones included; while it runs, the other callbacks wait. Sending itself may
    /// wait, like [`request`](Self::request), for room in a full ring or for the connection.
    ///
    /// ```no_run
    /// use lapce_ipc::frame::MessageType;
    /// use lapce_ipc::{BlockingIpcClient, IpcConfig};
    ///
    /// let client = BlockingIpcClient::connect("lapce-ai", IpcConfig::default())?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// client.request_async(MessageType::Data, "hover", move |answer| {
    ///     let _ = tx.send(answer); // e.g. to the UI thread's channel
    /// });
    /// let hover = rx.recv().unwrap()?;
    /// # Ok::<(), lapce_ipc::IpcError>(())
    /// ```
    pub fn request_async<F>(&self, kind: MessageType, payload: impl AsRef<[u8]>, callback: F)
    where
        F: FnOnce(Result<Bytes>) + Send + 'static,
    {
        let dispatcher = match self.dispatcher() {
            Ok(d) => d,
            Err(e) => {
                // No thread to run it on: the one place a callback runs in the caller's thread.
                callback(Err(e));
                return;
            }
        };
        let callback: Callback = Box::new(callback);
        let deadline = self.config.request_timeout().map(|t| Instant::now() + t);
        let sent = check_size(payload.as_ref().len(), self.config.ipc.max_message_size)
            .and_then(|()| self.connection(deadline))
            .and_then(|conn| {
                send_detached(&conn, kind, payload.as_ref(), deadline).map(|ticket| (conn, ticket))
            });
        match sent {
            Ok((conn, ticket)) => dispatcher.add(conn, ticket, deadline, callback),
            Err(e) => dispatcher.fail(callback, e),
        }
    }

    fn dispatcher(&self) -> Result<&Dispatcher> {
        if let Some(d) = self.dispatcher.get() {
            return Ok(d);
        }
        let started = Dispatcher::start()?;
        // Two first callers at once: one thread stays, the other's ends at once (dropped).
        let _ = self.dispatcher.set(started);
        Ok(self.dispatcher.get().expect("just set"))
    }

    /// Sends a request answered by a stream of chunks, returned as an iterator whose `next`
    /// blocks the calling thread until the next chunk. Waiting for the connection is bounded
    /// by the request timeout; the chunks themselves have no deadline. With a stream window
    /// configured, an iterator that is not advanced holds the server's handler back (memory
    /// stays bounded by the window). [`BlockingResponseStream::canceller`] stops it from any
    /// thread; dropping it before its end cancels it too.
    ///
    /// ```no_run
    /// use lapce_ipc::frame::MessageType;
    /// use lapce_ipc::{BlockingIpcClient, IpcConfig};
    ///
    /// let client = BlockingIpcClient::connect("lapce-ai", IpcConfig::default())?;
    /// let mut text = Vec::new();
    /// for chunk in client.request_stream(MessageType::Chat, "prompt")? {
    ///     text.extend_from_slice(&chunk?);
    /// }
    /// # Ok::<(), lapce_ipc::IpcError>(())
    /// ```
    pub fn request_stream(
        &self,
        kind: MessageType,
        payload: impl AsRef<[u8]>,
    ) -> Result<BlockingResponseStream> {
        let payload = payload.as_ref();
        check_size(payload.len(), self.config.ipc.max_message_size)?;
        let deadline = self.config.request_timeout().map(|t| Instant::now() + t);
        let conn = self.connection(deadline)?;
        BlockingResponseStream::start(conn, kind, payload, window::configured(&self.config))
    }

    /// Calls `callback` with each notification the server pushes to this client (see
    /// [`Peer::notify`](crate::Peer::notify)), from now on; replaces an earlier callback.
    ///
    /// Until the first call the client keeps no notification (they are dropped as read, at no
    /// cost). From then on a listener thread (one per connection) reads the connection while no
    /// request does, and runs the callback, one notification at a time, in the order they came;
    /// a callback may make requests. Notifications wait for it in a bounded queue: at
    /// [`NOTIFICATION_QUEUE_LEN`](crate::NOTIFICATION_QUEUE_LEN) notifications or
    /// [`NOTIFICATION_QUEUE_BYTES`](crate::NOTIFICATION_QUEUE_BYTES) bytes the newest are
    /// dropped and counted ([`notifications_dropped`](Self::notifications_dropped)). After a
    /// lost connection they resume with the next connection (the next request makes it).
    ///
    /// ```no_run
    /// use lapce_ipc::{BlockingIpcClient, IpcConfig};
    ///
    /// let client = BlockingIpcClient::connect("lapce-ai", IpcConfig::default())?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// client.on_notification(move |n| {
    ///     let _ = tx.send(n); // e.g. to the UI thread
    /// });
    /// # Ok::<(), lapce_ipc::IpcError>(())
    /// ```
    pub fn on_notification(&self, callback: impl FnMut(Notification) + Send + 'static) {
        self.hub.set_callback(Box::new(callback));
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(conn) = conn.filter(|c| c.is_alive()) {
            start_listener(&conn, &self.hub);
        }
    }

    /// Notifications dropped so far because the queue was full.
    pub fn notifications_dropped(&self) -> u64 {
        self.hub.dropped()
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
        let conn = establish_until(&self.name, &self.config, &self.hub, deadline)?;
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        if self.hub.is_subscribed() {
            start_listener(&conn, &self.hub);
        }
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
    }
}

impl Drop for BlockingIpcClient {
    /// Cancels the [`request_async`](Self::request_async) calls still in flight; the listener
    /// ends with the connection.
    fn drop(&mut self) {
        drop(self.dispatcher.take());
        self.hub.close();
    }
}

/// Starts the listener of `conn` (once): a thread with a small runtime of its own, for the
/// async wait on the ring or on an owner that wants the role.
fn start_listener(conn: &Arc<Conn>, hub: &Arc<Hub>) {
    if !conn.calls.start_listening() {
        return;
    }
    let (conn, hub) = (Arc::downgrade(conn), hub.clone());
    let spawned = std::thread::Builder::new().name("lapce-ipc-listen".into()).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(listen(conn, |c: &Conn| &c.calls, hub)),
            Err(e) => tracing::error!(error = %e, "cannot start the notification listener"),
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the notification listener");
    }
}

/// Sends a request whose answer the dispatch thread collects: its call, the reader role given
/// back at once (the sender does not read).
fn send_detached(
    conn: &Conn,
    kind: MessageType,
    payload: &[u8],
    deadline: Option<Instant>,
) -> Result<Ticket> {
    let (ticket, role) = conn.calls.begin(kind, false, false)?;
    if let Some(inbound) = role {
        conn.calls.give_back(inbound);
    }
    if !conn.outbox.try_send(kind, ticket.id, payload) {
        if let Err(e) = conn.outbox.send_blocking(kind, ticket.id, payload, deadline) {
            if conn.calls.end(ticket) && !matches!(e, IpcError::PeerGone) {
                let _ = conn.outbox.send_blocking(
                    MessageType::Cancel,
                    ticket.id,
                    &[],
                    Some(Instant::now() + CANCEL_WAIT),
                );
            }
            return Err(e);
        }
    }
    Ok(ticket)
}

/// Connects, trying again while there is no server (yet) until `deadline` (`None`: for ever);
/// then [`IpcError::Timeout`].
fn establish_until(
    name: &str,
    config: &IpcConfig,
    hub: &Arc<Hub>,
    deadline: Option<Instant>,
) -> Result<Arc<Conn>> {
    let mut pause = RECONNECT_FIRST_PAUSE;
    loop {
        match establish(name, config, hub) {
            Ok(conn) => return Ok(conn),
            Err(IpcError::Connect { .. } | IpcError::PeerGone | IpcError::Timeout)
                if deadline.is_none_or(|d| Instant::now() + pause < d) =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
            }
            // The time ran out while the server was away.
            Err(IpcError::Connect { .. } | IpcError::PeerGone) => return Err(IpcError::Timeout),
            Err(e) => return Err(e),
        }
    }
}

/// Opens a connection: stream handshake, then the server's greeting.
fn establish(name: &str, config: &IpcConfig, hub: &Arc<Hub>) -> Result<Arc<Conn>> {
    let stream_config = config.stream_config();
    // `tls://host:port` goes through the remote bridge; a local name connects directly.
    #[cfg(feature = "tls")]
    let stream = crate::remote::connect_blocking(name, config)?;
    #[cfg(not(feature = "tls"))]
    let stream = crate::BlockingSharedMemoryStream::connect_with(name, &stream_config)?;
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
    Ok(Arc::new(Conn { calls: Calls::new(inbound, hub.clone()), outbox, link }))
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
