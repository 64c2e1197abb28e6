//! [`IpcClient`]: concurrent requests over one connection, streams, timeouts, cancellation and
//! automatic reconnection, with no task between the caller and the rings (see [`super::calls`]).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::calls::{
    own_answer, own_chunk, Calls, Collect, InPlace, Ticket, ToBytes, Turn, SWEEPS_PER_TIMEOUT,
};
use super::inbound::Inbound;
use super::listen::listen;
use super::notify::{Hub, NotificationReceiver};
use super::outbound::{trim_when_idle, Outbound, Outbox};
use super::window::{self, Consumed};
use super::{check_size, greeted};
use crate::channel::Link;
use crate::config::IpcConfig;
use crate::error::{IpcError, Result};
use crate::frame::MessageType;
use crate::ResponseStream;

/// First pause between reconnection attempts; doubled up to [`RECONNECT_MAX_PAUSE`], so a
/// server that comes back is found within that much time.
const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(2);
const RECONNECT_MAX_PAUSE: Duration = Duration::from_millis(50);

/// A client of an [`IpcServer`](crate::IpcServer) (tokio).
///
/// Cheap to clone; clones share one connection, and any number of tasks may have requests in
/// flight on it at once: each request gets an id and its answer is routed back by id, in
/// whatever order the server answers. There is no reader task: a task waiting for an answer
/// reads the connection itself when no other task does, and passes the answers it finds for
/// other tasks on to them. So a request answered promptly costs no task or thread hop, also when
/// it is made from the future given to `block_on` (what `#[tokio::main]` does).
///
/// When the connection is lost (the server died or closed it), the requests in flight on it fail
/// with [`IpcError::PeerGone`] — never silently retried, since the server may have acted on them
/// ([`request_idempotent`](Self::request_idempotent) retries once for requests that are safe to
/// repeat). The client reconnects in the background, trying again every few milliseconds (at
/// most 50 ms apart), so it is back within about 50 ms of the server being available again;
/// requests made meanwhile wait for the connection until their timeout, then fail with
/// [`IpcError::Timeout`].
#[derive(Clone)]
pub struct IpcClient {
    inner: Arc<ClientInner>,
}

/// The server's name and the connection's state.
impl std::fmt::Debug for IpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcClient")
            .field("name", &self.inner.name)
            .field("connected", &self.is_connected())
            .field("reconnects", &self.reconnects())
            .finish()
    }
}

struct ClientInner {
    name: String,
    config: IpcConfig,
    /// The current connection, if any (it may have died since: see `Conn::is_alive`).
    conn: Mutex<Option<Arc<Conn>>>,
    /// Held while (re)connecting, so that one task connects and the others wait for it.
    connecting: tokio::sync::Mutex<()>,
    reconnects: AtomicU64,
    /// Notifications, across connections.
    hub: Arc<Hub>,
}

impl ClientInner {
    /// A client of `name`, not connected yet.
    fn new(name: &str, config: IpcConfig) -> Arc<ClientInner> {
        Arc::new(ClientInner {
            name: name.to_string(),
            config,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            reconnects: AtomicU64::new(0),
            hub: Arc::default(),
        })
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.hub.close();
    }
}

/// One live connection: its calls, where its frames are sent, and the task that watches it.
struct Conn {
    calls: Calls,
    outbox: Outbox,
    link: Arc<Link>,
    /// Cleared when the peer hangs up or a read fails.
    alive: AtomicBool,
    /// The connection's housekeeping task (hang-up, timeouts, idle trim).
    housekeeper: Mutex<Option<AbortHandle>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(task) = self.housekeeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl Conn {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire) && !self.link.gone_lately()
    }

    /// Cancels request `id` on the server: at once if the outbox is free, else from a task (a
    /// rare case: the outbox is busy or the ring full). Best effort: the server answers into the
    /// void if it finished first. It cannot overtake the request it cancels: the request's send
    /// began before, and a request whose send stopped midway is finished before anything else.
    fn cancel(self: &Arc<Conn>, id: u64) {
        if self.outbox.try_send(MessageType::Cancel, id, &[]) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let conn = self.clone();
            runtime.spawn(async move {
                let _ = conn.outbox.send(MessageType::Cancel, id, &[]).await;
            });
        }
    }

    /// The reader met `error`: the connection is over.
    fn ended(&self, error: &IpcError) {
        self.alive.store(false, Ordering::Release);
        tracing::debug!(%error, "connection to the server ended");
    }

    /// Sends a request and waits for its answer, collected as `collect` says. `swept`: the
    /// sweeper fails it after the default timeout. Dropping the future cancels the request.
    async fn call<C: Collect>(
        self: &Arc<Conn>,
        kind: MessageType,
        payload: &[u8],
        swept: bool,
        collect: C,
    ) -> Result<C::Out> {
        let (ticket, role) = self.calls.begin(kind, false, swept)?;
        let mut call = CallGuard { conn: self, ticket, role, sent: true, done: false, ended: false };
        if !self.outbox.try_send(kind, ticket.id, payload) {
            // A caller that waits to send must not hold the role meanwhile: the server may be
            // waiting for room for answers, which only a reader makes.
            call.give_back_role();
            if let Err(e) = self.outbox.send(kind, ticket.id, payload).await {
                call.sent = false;
                return Err(e);
            }
        }
        let out = call.answer(kind, collect).await;
        call.done = true;
        out
    }
}

/// A call in progress: its slot, and the reader role while it holds it. Dropped before its
/// answer came, it cancels the request on the server; however it ends, it gives the role back.
struct CallGuard<'a> {
    conn: &'a Arc<Conn>,
    ticket: Ticket,
    role: Option<Box<Inbound>>,
    /// The request may have reached the server.
    sent: bool,
    /// The answer was taken.
    done: bool,
    /// The call was ended already (its slot is gone).
    ended: bool,
}

impl CallGuard<'_> {
    fn give_back_role(&mut self) {
        if let Some(inbound) = self.role.take() {
            self.conn.calls.give_back(inbound);
        }
    }

    /// Waits for the answer: reads it when it holds the role, else waits for it or the role.
    async fn answer<C: Collect>(&mut self, kind: MessageType, collect: C) -> Result<C::Out> {
        let mut collect = Some(collect);
        loop {
            if self.role.is_some() {
                let conn = self.conn;
                let got = read_until_own(conn, self.ticket, &mut self.role, |msg, block| {
                    own_answer(msg, block, kind, &mut collect)
                })
                .await?;
                if let Some(out) = got {
                    return out;
                }
                // Settled by somebody else (a timeout, the connection's end): take it as owners do.
                self.give_back_role();
            }
            let turn = poll_fn(|cx| self.conn.calls.poll_unary(self.ticket, cx.waker())).await;
            match turn {
                Turn::Done(outcome) => {
                    self.ended = true;
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
        if self.ended {
            return;
        }
        let running = match self.role.take() {
            Some(inbound) => self.conn.calls.end_giving_back(self.ticket, inbound),
            None => self.conn.calls.end(self.ticket),
        };
        if running && self.sent && !self.done {
            self.conn.cancel(self.ticket.id);
        }
    }
}

/// As the reader (`role` holds the role): reads until `mine` returns `Some` for a message of
/// `call` (returned), or until the call is settled by somebody else (`Ok(None)`). Errors end the
/// connection.
async fn read_until_own<T>(
    conn: &Conn,
    call: Ticket,
    role: &mut Option<Box<Inbound>>,
    mut mine: impl FnMut(
        &super::inbound::Message<'_>,
        &mut super::inbound::PayloadBlock,
    ) -> std::result::Result<Option<T>, crate::frame::FrameError>,
) -> Result<Option<T>> {
    let inbound = role.as_mut().expect("the reader holds the role");
    loop {
        match conn.calls.read_ready(inbound, call, |msg, block| mine(&msg, block)) {
            Ok(Some(out)) => return Ok(Some(out)),
            Ok(None) => {}
            Err(e) => {
                conn.ended(&e);
                return Err(e);
            }
        }
        let settled = inbound.rx().readable_or(|cx| conn.calls.poll_settled(call, cx.waker())).await;
        match settled {
            Ok(true) => return Ok(None),
            Ok(false) => {}
            Err(e) => {
                // The peer went away: what it wrote before is read first (the wait said so only
                // once the ring was empty), so nothing answered is lost.
                conn.calls.fail_all(&e);
                conn.ended(&e);
                return Err(e);
            }
        }
    }
}

impl IpcClient {
    /// Connects to the server bound to `name`. Fails if the server is not there or refuses the
    /// connection (e.g. [`IpcError::ServerRefused`] at its connection limit). Must be called
    /// inside a tokio runtime; the connection's housekeeping task runs on it.
    pub async fn connect(name: &str, config: IpcConfig) -> Result<IpcClient> {
        config.validate()?;
        let inner = ClientInner::new(name, config);
        let conn = establish(&inner).await?;
        *inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        Ok(IpcClient { inner })
    }

    /// Like [`connect`](Self::connect), waiting up to `timeout` for a server that is not there
    /// yet (still starting, or restarting): tries again every few milliseconds (the pause
    /// doubles from 2 up to 50 ms) while there is no server to reach or it goes away during the
    /// handshake. After `timeout`, [`IpcError::Timeout`]; other errors (a refusal, a version
    /// mismatch, a bad configuration) at once.
    pub async fn connect_timeout(name: &str, config: IpcConfig, timeout: Duration) -> Result<IpcClient> {
        config.validate()?;
        let deadline = Instant::now() + timeout;
        let inner = ClientInner::new(name, config);
        let mut pause = RECONNECT_FIRST_PAUSE;
        let conn = loop {
            match establish(&inner).await {
                Ok(conn) => break conn,
                Err(IpcError::Connect { .. } | IpcError::PeerGone | IpcError::Timeout)
                    if Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
                }
                Err(IpcError::Connect { .. } | IpcError::PeerGone) => return Err(IpcError::Timeout),
                Err(e) => return Err(e),
            }
        };
        *inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        Ok(IpcClient { inner })
    }

    /// Sends a request and waits for its answer, at most about the configured request timeout
    /// (`request_timeout_ms`, 0 = no timeout): the connection looks for requests over it eight
    /// times per timeout instead of arming a timer for each, so one fails between one and 1.125
    /// timeouts after it was sent. [`request_timeout`](Self::request_timeout) for a precise
    /// timeout; the errors are the same.
    pub async fn request(&self, kind: MessageType, payload: impl AsRef<[u8]>) -> Result<Bytes> {
        self.request_collect(kind, payload.as_ref(), ToBytes).await
    }

    /// Like [`request`](Self::request), handing the answer to `f` in place instead of copying it
    /// out: a one-record answer is read where it lies in shared memory (checked against its CRC
    /// first), so a large answer costs no copy at all. `f` runs while the answer holds ring
    /// space: keep it short. With an untrusted server prefer [`request`](Self::request), which
    /// checks a private copy (see the crate's guarantees about zero-copy calls).
    ///
    /// ```no_run
    /// # async fn run(client: lapce_ipc::IpcClient) -> lapce_ipc::Result<()> {
    /// use lapce_ipc::frame::MessageType;
    /// let lines = client.request_with(MessageType::Data, "file.rs", |text| text.split(|&b| b == b'\n').count()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn request_with<R>(
        &self,
        kind: MessageType,
        payload: impl AsRef<[u8]>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.request_collect(kind, payload.as_ref(), InPlace(f)).await
    }

    async fn request_collect<C: Collect>(
        &self,
        kind: MessageType,
        payload: &[u8],
        collect: C,
    ) -> Result<C::Out> {
        self.check_size(payload.len())?;
        let timeout = self.inner.config.request_timeout();
        match self.current() {
            Some(conn) => conn.call(kind, payload, timeout.is_some(), collect).await,
            // Reconnecting: waits for the server, the whole request on a timer. (Boxed: the
            // connecting future is large, and would otherwise make every request's as large.)
            None => Box::pin(self.request_within(kind, payload, timeout, collect)).await,
        }
    }

    /// Sends a request and waits at most `timeout` (`None`: no limit) for its answer.
    ///
    /// Errors: the server's answers ([`IpcError::UnknownMessageType`], [`IpcError::HandlerPanic`],
    /// [`IpcError::Remote`] for a handler's own error), [`IpcError::Timeout`] (the request is then
    /// cancelled on the server), [`IpcError::PeerGone`] if the connection was lost with the
    /// request in flight, [`IpcError::MessageTooLarge`] before anything is sent. Dropping the
    /// returned future cancels the request on the server too.
    pub async fn request_timeout(
        &self,
        kind: MessageType,
        payload: impl AsRef<[u8]>,
        timeout: Option<Duration>,
    ) -> Result<Bytes> {
        self.check_size(payload.as_ref().len())?;
        self.request_within(kind, payload.as_ref(), timeout, ToBytes).await
    }

    async fn request_within<C: Collect>(
        &self,
        kind: MessageType,
        payload: &[u8],
        timeout: Option<Duration>,
        collect: C,
    ) -> Result<C::Out> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let conn = match self.current() {
            Some(conn) => conn,
            None => Box::pin(self.connection(deadline)).await?,
        };
        match deadline {
            None => conn.call(kind, payload, false, collect).await,
            Some(d) => tokio::time::timeout_at(d, conn.call(kind, payload, false, collect))
                .await
                .map_err(|_| IpcError::Timeout)?,
        }
    }

    /// Like [`request`](Self::request), for requests that are safe to repeat: if the connection
    /// is lost with the request in flight, it is sent once more after reconnecting.
    pub async fn request_idempotent(&self, kind: MessageType, payload: impl AsRef<[u8]>) -> Result<Bytes> {
        match self.request(kind, payload.as_ref()).await {
            Err(IpcError::PeerGone) => self.request(kind, payload).await,
            other => other,
        }
    }

    /// Sends a request answered by a stream of chunks (a streaming handler on the server).
    /// Waiting for the connection is bounded by the request timeout; the chunks themselves have
    /// no deadline (a token stream may legitimately take minutes).
    pub async fn request_stream(
        &self,
        kind: MessageType,
        payload: impl AsRef<[u8]>,
    ) -> Result<ResponseStream> {
        let payload = payload.as_ref();
        self.check_size(payload.len())?;
        let deadline = self.inner.config.request_timeout().map(|t| Instant::now() + t);
        let conn = self.connection(deadline).await?;
        let (ticket, role) = conn.calls.begin(kind, true, false)?;
        let consumed = window::configured(&self.inner.config).map(Consumed::new);
        let mut stream = Chunks { conn, ticket, kind, role, finished: false, consumed };
        // The role is not kept between chunks (nor while the request waits for room).
        if let Some(inbound) = stream.role.take() {
            stream.conn.calls.give_back(inbound);
        }
        if let Err(e) = stream.conn.outbox.send(kind, ticket.id, payload).await {
            stream.finished = true;
            return Err(e);
        }
        Ok(ResponseStream::new(stream))
    }

    /// The notifications the server pushes to this client (see
    /// [`Peer::notify`](crate::Peer::notify)), from now on and across reconnections. Until the
    /// first call the client keeps none (they are dropped as read, at no cost); from then on a
    /// listener task reads the connection while no request does, on the current runtime (call
    /// this inside one), and the notifications wait in a bounded queue: at
    /// [`NOTIFICATION_QUEUE_LEN`](crate::NOTIFICATION_QUEUE_LEN) notifications or
    /// [`NOTIFICATION_QUEUE_BYTES`](crate::NOTIFICATION_QUEUE_BYTES) bytes the newest are dropped
    /// and counted ([`notifications_dropped`](Self::notifications_dropped)). Receivers share the
    /// one queue: each notification goes to one of them.
    ///
    /// ```no_run
    /// # async fn run(client: lapce_ipc::IpcClient) {
    /// let mut notifications = client.notifications();
    /// while let Some(n) = notifications.recv().await {
    ///     println!("{:?}: {} bytes", n.kind, n.payload.len());
    /// }
    /// # }
    /// ```
    pub fn notifications(&self) -> NotificationReceiver {
        self.inner.hub.subscribe();
        if let Some(conn) = self.current() {
            start_listener(&conn, &self.inner.hub);
        }
        NotificationReceiver::new(self.inner.hub.clone())
    }

    /// Notifications dropped so far because the queue was full.
    pub fn notifications_dropped(&self) -> u64 {
        self.inner.hub.dropped()
    }

    /// How many times the client has reconnected after losing its connection.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Whether the client has a live connection right now.
    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    fn check_size(&self, len: usize) -> Result<()> {
        check_size(len, self.inner.config.ipc.max_message_size)
    }

    fn current(&self) -> Option<Arc<Conn>> {
        current(&self.inner)
    }

    /// The live connection, reconnecting (and waiting for the server) until `deadline`.
    async fn connection(&self, deadline: Option<Instant>) -> Result<Arc<Conn>> {
        connection(&self.inner, deadline).await
    }
}

fn current(inner: &ClientInner) -> Option<Arc<Conn>> {
    let conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
    conn.as_ref().filter(|c| c.is_alive()).cloned()
}

async fn connection(inner: &Arc<ClientInner>, deadline: Option<Instant>) -> Result<Arc<Conn>> {
    let mut pause = RECONNECT_FIRST_PAUSE;
    loop {
        if let Some(conn) = current(inner) {
            return Ok(conn);
        }
        let attempt = {
            let _one_at_a_time = inner.connecting.lock().await;
            if let Some(conn) = current(inner) {
                return Ok(conn);
            }
            establish(inner).await
        };
        match attempt {
            Ok(conn) => {
                inner.reconnects.fetch_add(1, Ordering::Relaxed);
                *inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
                return Ok(conn);
            }
            // No server (yet), or it went away during the handshake: wait and try again.
            Err(IpcError::Connect { .. } | IpcError::PeerGone | IpcError::Timeout)
                if deadline.is_none_or(|d| Instant::now() + pause < d) =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
            }
            // The request's time ran out while the server was away.
            Err(IpcError::Connect { .. } | IpcError::PeerGone) => return Err(IpcError::Timeout),
            Err(e) => return Err(e),
        }
    }
}

/// Opens a connection: stream handshake, then the server's greeting, then the housekeeping task.
async fn establish(inner: &Arc<ClientInner>) -> Result<Arc<Conn>> {
    let stream_config = inner.config.stream_config();
    // `tls://host:port` goes through the remote bridge; a local name connects directly.
    #[cfg(feature = "tls")]
    let stream = crate::remote::connect(&inner.name, &inner.config).await?;
    #[cfg(not(feature = "tls"))]
    let stream = crate::SharedMemoryStream::connect_with(&inner.name, &stream_config).await?;
    let max_message = inner.config.ipc.max_message_size;
    let (tx, rx) = stream.into_halves();
    let link = rx.link_handle();
    let mut inbound = Inbound::new(rx, max_message);
    tokio::time::timeout(stream_config.handshake_timeout, greeting(&mut inbound))
        .await
        .map_err(|_| IpcError::Timeout)??;
    let outbox = Outbox::new(Outbound::new(tx, max_message), None);
    if let Some(size) = window::configured(&inner.config) {
        // The first frame: it applies to every stream requested after it.
        outbox.send(MessageType::StreamWindow, 0, &window::encode(size)).await?;
    }
    let conn = Arc::new(Conn {
        calls: Calls::new(inbound, inner.hub.clone()),
        outbox,
        link: link.clone(),
        alive: AtomicBool::new(true),
        housekeeper: Mutex::new(None),
    });
    let sweep_every = inner.config.request_timeout().map(|t| t / SWEEPS_PER_TIMEOUT);
    let task =
        keep_house(Arc::downgrade(&conn), link, Arc::downgrade(inner), sweep_every, inner.config.idle_trim());
    let handle = tokio::spawn(task).abort_handle();
    *conn.housekeeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    if inner.hub.is_subscribed() {
        start_listener(&conn, &inner.hub);
    }
    Ok(conn)
}

/// Starts the listener of `conn` (once), on the current runtime.
fn start_listener(conn: &Arc<Conn>, hub: &Arc<Hub>) {
    if conn.calls.start_listening() {
        tokio::spawn(listen(Arc::downgrade(conn), |c: &Conn| &c.calls, hub.clone()));
    }
}

/// Reads the server's greeting: `ready`, or its refusal.
async fn greeting(inbound: &mut Inbound) -> Result<()> {
    loop {
        if let Some(outcome) = inbound.try_next(|msg, _| greeted(&msg))? {
            return outcome;
        }
        inbound.rx().readable_async().await?;
    }
}

/// A connection's housekeeping, off every request's path: notices the peer's hang-up while no
/// request waits (and reconnects in the background), fails requests over the default timeout,
/// and gives the outgoing ring's pages back when it stays idle. Holds the connection weakly.
async fn keep_house(
    conn: Weak<Conn>,
    link: Arc<Link>,
    client: Weak<ClientInner>,
    sweep_every: Option<Duration>,
    trim_after: Option<Duration>,
) {
    let hang_up = async {
        if let Err(e) = link.hung_up().await {
            // (Out of descriptors, say.) The requests still notice a hang-up when they read.
            tracing::debug!(error = %e, "cannot watch the connection for a hang-up");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = hang_up => {}
        () = sweep(conn.clone(), sweep_every) => return,
        () = trim_when_idle(conn.clone(), trim_after, |c: &Conn| &c.outbox) => return,
    }
    if let Some(conn) = conn.upgrade() {
        conn.alive.store(false, Ordering::Release);
    }
    drop(link);
    if client.strong_count() > 0 {
        reconnect_in_background(client).await;
    }
}

/// The sweeper: every `period` while requests wait, fails those over the default timeout with
/// [`IpcError::Timeout`] and cancels them on the server. Never returns while the connection
/// lives (returns at once without a period).
async fn sweep(conn: Weak<Conn>, period: Option<Duration>) {
    let Some(period) = period else { return std::future::pending().await };
    // Waits hold no strong reference: the connection goes when its last user does.
    let Some(first_call) = conn.upgrade().map(|c| c.calls.first_call_signal()) else { return };
    loop {
        match conn.upgrade() {
            Some(c) if c.calls.is_empty() => {
                drop(c);
                first_call.notified().await;
            }
            Some(_) => {}
            None => return,
        }
        tokio::time::sleep(period).await;
        let Some(c) = conn.upgrade() else { return };
        let mut expired = Vec::new();
        c.calls.sweep(|id| expired.push(id));
        for id in expired {
            c.cancel(id);
        }
    }
}

/// Reconnects as soon as the server is back, for as long as the client exists.
fn reconnect_in_background(client: Weak<ClientInner>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let mut pause = RECONNECT_FIRST_PAUSE;
        loop {
            let Some(inner) = client.upgrade() else { return };
            match connection(&inner, Some(Instant::now())).await {
                Ok(_) => return,
                Err(IpcError::Connect { .. } | IpcError::PeerGone | IpcError::Timeout) => {}
                Err(e) => tracing::debug!(error = %e, "reconnecting failed"),
            }
            drop(inner);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
        }
    })
}

/// The state of a [`ResponseStream`]: the chunks of a streamed answer. Dropping it before the end
/// cancels the request on the server.
pub(super) struct Chunks {
    conn: Arc<Conn>,
    ticket: Ticket,
    kind: MessageType,
    /// The reader role, only while `next` reads.
    role: Option<Box<Inbound>>,
    finished: bool,
    /// What the owner consumed and did not credit back yet, when the client has a stream window.
    consumed: Option<Consumed>,
}

impl Chunks {
    /// The next chunk; `None` after the server's `StreamEnd`. An error (the handler's error,
    /// a lost connection) ends the stream.
    pub(super) async fn next(&mut self) -> Option<Result<Bytes>> {
        if self.finished {
            return None;
        }
        if let Some(bytes) = self.consumed.as_ref().and_then(Consumed::due) {
            // Credit the outbox could not take at once: it goes before we wait for more chunks
            // (the server may be waiting for it). Here, before a chunk is taken, the wait is
            // cancel-safe.
            if self
                .conn
                .outbox
                .send(MessageType::StreamWindow, self.ticket.id, &window::encode(bytes))
                .await
                .is_ok()
            {
                self.consumed.as_mut().expect("just seen").credited(bytes);
            }
        }
        let item = self.next_item().await;
        if let Some(inbound) = self.role.take() {
            self.conn.calls.give_back(inbound);
        }
        match &item {
            Some(Ok(chunk)) => self.consume(chunk.len()),
            _ => self.finished = true,
        }
        item
    }

    /// The owner takes a chunk of `len` bytes: a batch of credit goes back to the server when
    /// complete, if the outbox takes it at once (else at the next call).
    fn consume(&mut self, len: usize) {
        let Some(consumed) = &mut self.consumed else { return };
        if !self.conn.calls.windowed() {
            return;
        }
        if let Some(bytes) = consumed.consumed(len) {
            if self.conn.outbox.try_send(MessageType::StreamWindow, self.ticket.id, &window::encode(bytes)) {
                consumed.credited(bytes);
            }
        }
    }

    async fn next_item(&mut self) -> Option<Result<Bytes>> {
        loop {
            if self.role.is_some() {
                let kind = self.kind;
                match read_until_own(&self.conn, self.ticket, &mut self.role, |msg, block| {
                    own_chunk(msg, block, kind)
                })
                .await
                {
                    Ok(Some(item)) => return item,
                    Ok(None) => {
                        if let Some(inbound) = self.role.take() {
                            self.conn.calls.give_back(inbound);
                        }
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
            match poll_fn(|cx| self.conn.calls.poll_stream(self.ticket, cx.waker())).await {
                Turn::Done(item) => return item,
                Turn::Read(inbound) => self.role = Some(inbound),
            }
        }
    }

    /// The request's id on its connection.
    pub(super) fn request_id(&self) -> u64 {
        self.ticket.id
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        let running = self.conn.calls.end(self.ticket);
        if let Some(inbound) = self.role.take() {
            self.conn.calls.give_back(inbound);
        }
        if running && !self.finished {
            self.conn.cancel(self.ticket.id);
        }
    }
}
