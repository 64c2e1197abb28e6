//! Zero allocations in steady state: once a connection is warm, sending and receiving a
//! fixed-size message, the server's dispatch of a fixed-size echo request (sync or async
//! handler), and a request through `IpcClient` or `BlockingIpcClient`, perform no heap
//! allocation at all.
//!
//! How it is measured: this test binary installs a counting global allocator (every `alloc`,
//! `alloc_zeroed` and `realloc` adds one to a process-wide counter). The *measured* side runs in
//! a child process (this binary re-run in a child role, see `common`), talks to its peer in the
//! parent process over a real connection, warms up, then reads the counter around
//! [`MESSAGES`] round trips and reports the difference to the parent, which asserts it is 0.
//!
//! Why the counter is process-wide and why the measured side is the child: a per-thread count
//! would miss work the library moves to other threads (tokio workers running the server's
//! connection tasks and its writer task, the `lapce-ipc-pool` refiller, the Linux
//! `lapce-ipc-hangup` watcher), so it could report 0 for a path that allocates. A process-wide
//! count sees all of them, but in the parent it would also see the test harness and the other
//! tests of this file running in parallel. The child runs only `child_main`, on its own test
//! thread, while libtest's main thread waits for it; so every allocation it counts during the
//! window is one the library (or this test's code, which allocates nothing there) made for the
//! messages. Background work that is not per message (segment pool refills after the accept,
//! connection setup, a late-starting library thread: see [`settle`]) is over before the window.
//!
//! The only `unsafe` here is the allocator: `GlobalAlloc` can only be implemented by an
//! `unsafe impl` with `unsafe fn`s (std has no safe counting allocator, and a crate providing
//! one would be a new dependency); it just forwards to `System`, with a `SAFETY` note on each
//! block.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{child_role, connect_retry, unique_name, ChildGuard};
use lapce_ipc::frame::{BlockingFramedStream, Frame, MessageType};
use lapce_ipc::{
    BlockingIpcClient, BlockingSharedMemoryListener, BlockingSharedMemoryStream, IpcClient, IpcConfig,
    IpcError, IpcServer, SharedMemoryStream,
};

/// Counts allocation calls, then lets the system allocator do the work.
struct CountingAlloc;

/// Allocation calls (`alloc`, `alloc_zeroed`, `realloc`) made by this process so far.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only addition is a relaxed atomic increment, which neither
// allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        trace::record(layout.size());
        // SAFETY: our caller upholds `alloc`'s contract (non-zero size), passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        trace::record(new_size);
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`; our
        // caller upholds the rest of `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Where the first allocations of a measured window were made: armed for the window, a few
/// backtraces kept, printed by the child when the window was not clean, so that a failure says
/// what allocated.
mod trace {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// Backtraces kept per window.
    const KEPT: usize = 4;

    static ARMED: AtomicBool = AtomicBool::new(false);
    static KEPT_TRACES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    thread_local! {
        /// Set while this thread records one, so that the recording's own allocations are not
        /// recorded.
        static RECORDING: Cell<bool> = const { Cell::new(false) };
    }

    /// Starts keeping the backtraces of the next allocations.
    pub fn arm() {
        KEPT_TRACES.lock().unwrap().clear();
        ARMED.store(true, Ordering::SeqCst);
    }

    /// Stops keeping them; returns those kept.
    pub fn disarm() -> Vec<String> {
        ARMED.store(false, Ordering::SeqCst);
        std::mem::take(&mut *KEPT_TRACES.lock().unwrap())
    }

    /// Called by the allocator for each allocation of `size` bytes.
    pub fn record(size: usize) {
        if !ARMED.load(Ordering::Relaxed) || RECORDING.with(Cell::get) {
            return;
        }
        RECORDING.with(|r| r.set(true));
        if let Ok(mut kept) = KEPT_TRACES.try_lock() {
            if kept.len() < KEPT {
                let thread = std::thread::current().name().unwrap_or("?").to_owned();
                let trace = std::backtrace::Backtrace::force_capture();
                kept.push(format!("{size} bytes on thread {thread}:\n{trace}"));
            }
        }
        RECORDING.with(|r| r.set(false));
    }
}

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// Round trips before the window opens (connection set-up, first-touch growth of buffers and
/// tables, pool refills are over by then).
const WARMUP: u64 = 1_000;
/// Round trips inside the measured window.
const MESSAGES: u64 = 10_000;
/// Size of every message.
const SIZE: usize = 64;
/// Generous bound for "must not hang".
const HANG: Duration = Duration::from_secs(120);

/// Waits until every other thread of this process sleeps, at most a few seconds. A thread the
/// library starts while connecting (on Linux the `lapce-ipc-hangup` watcher) makes its start-up
/// allocations when it first runs, which on a busy machine can be after the warm-up; it must
/// not be counted as a per-message cost. Elsewhere (no `/proc`) a pause does the same job.
fn settle() {
    #[cfg(target_os = "linux")]
    {
        let me = rustix::thread::gettid().as_raw_nonzero().get().to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let running = |tid: &str| {
            // `/proc/self/task/TID/stat` is `TID (NAME) STATE ...`; the name may hold anything.
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
            matches!(stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().as_bytes()[0]), Some(b'R'))
        };
        while std::time::Instant::now() < deadline {
            let tasks = std::fs::read_dir("/proc/self/task").unwrap();
            let tids: Vec<String> =
                tasks.map(|t| t.unwrap().file_name().to_string_lossy().into_owned()).collect();
            if !tids.iter().any(|tid| *tid != me && running(tid)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    #[cfg(not(target_os = "linux"))]
    std::thread::sleep(Duration::from_millis(50));
}

/// Message `seq`: its number, then bytes derived from it, so a stale or altered echo shows.
fn fill(seq: u64, msg: &mut [u8; SIZE]) {
    msg[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in msg[8..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
}

/// The report a measured child sends after its window(s): one allocation count per window.
fn encode_report(counts: &[u64]) -> Vec<u8> {
    counts.iter().flat_map(|c| c.to_le_bytes()).collect()
}

fn decode_report(bytes: &[u8]) -> Vec<u64> {
    assert_eq!(bytes.len() % 8, 0, "malformed report of {} bytes", bytes.len());
    bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Entry point of every child process; a no-op when run as a normal test.
#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, arg)) = child_role() else { return };
    match role.as_str() {
        "stream-client" => child_stream_client(&arg),
        "framed-client" => child_framed_client(&arg),
        "async-client" => child_async_client(&arg),
        "echo-server" => child_echo_server(&arg),
        "rpc-client" => child_rpc_client(&arg),
        "blocking-rpc-client" => child_blocking_rpc_client(&arg),
        other => panic!("unknown role {other}"),
    }
}

/// The allocator in this binary is the counting one and it counts (else every other test here
/// would pass vacuously).
#[test]
fn the_counting_allocator_counts() {
    let before = allocations();
    let boxed = std::hint::black_box(Box::new([0u8; SIZE]));
    let mut grown = std::hint::black_box(Vec::<u8>::with_capacity(1));
    grown.extend_from_slice(&boxed[..]);
    assert!(allocations() >= before + 3, "alloc + alloc + realloc: {} counted", allocations() - before);
}

// ---------------------------------------------------------------------------------------------
// The raw streams: a child measures its round trips against an echo in the parent.

/// Echoes `count` messages, then reads the child's report and acknowledges it.
fn parent_echo(stream: &mut BlockingSharedMemoryStream, count: u64) -> Vec<u64> {
    let mut buf = vec![0u8; stream.max_message_size()];
    for _ in 0..count {
        let n = stream.recv(&mut buf).unwrap();
        stream.send(&buf[..n]).unwrap();
    }
    let n = stream.recv(&mut buf).unwrap();
    let report = decode_report(&buf[..n]);
    stream.send(b"k").unwrap();
    report
}

/// Sends the report, then waits for the parent's acknowledgement (so that the connection is
/// not torn down under the parent's last read).
fn send_report(stream: &mut BlockingSharedMemoryStream, counts: &[u64]) {
    stream.send(&encode_report(counts)).unwrap();
    assert_eq!(stream.recv_timeout(&mut [0u8; 1], HANG).unwrap(), 1, "acknowledgement");
}

/// One blocking round trip of message `seq`: `send` + `recv` into a reused buffer, checked.
fn round_trip(s: &mut BlockingSharedMemoryStream, seq: u64, msg: &mut [u8; SIZE], reply: &mut [u8; SIZE]) {
    fill(seq, msg);
    s.send(&msg[..]).unwrap();
    let n = s.recv(&mut reply[..]).unwrap();
    assert!(n == SIZE && reply == msg, "echo #{seq} altered");
}

/// One blocking round trip of message `seq`: `send_with` filling the ring in place, then
/// `recv_with` comparing in place.
fn round_trip_in_place(s: &mut BlockingSharedMemoryStream, seq: u64, msg: &mut [u8; SIZE]) {
    fill(seq, msg);
    s.send_with(SIZE, |out| {
        out[..SIZE].copy_from_slice(&msg[..]);
        SIZE
    })
    .unwrap();
    assert!(s.recv_with(|got| got == &msg[..]).unwrap(), "echo #{seq} altered");
}

fn child_stream_client(name: &str) {
    let mut s = connect_retry(name);
    let (mut msg, mut reply) = ([0u8; SIZE], [0u8; SIZE]);
    let mut seq = 0;
    for _ in 0..WARMUP {
        round_trip(&mut s, seq, &mut msg, &mut reply);
        round_trip_in_place(&mut s, seq + 1, &mut msg);
        seq += 2;
    }
    settle();
    let before = allocations();
    for _ in 0..MESSAGES {
        round_trip(&mut s, seq, &mut msg, &mut reply);
        seq += 1;
    }
    let copying = allocations() - before;
    let before = allocations();
    for _ in 0..MESSAGES {
        round_trip_in_place(&mut s, seq, &mut msg);
        seq += 1;
    }
    let in_place = allocations() - before;
    send_report(&mut s, &[copying, in_place]);
}

/// Asserts that every window of `report` (named by `windows`) counted at most `slack`
/// allocations: 0 for the blocking streams; see [`ASYNC_ONE_OFF_SLACK`] for tokio.
fn assert_no_allocations(case: &str, windows: &[&str], report: &[u64], slack: u64) {
    assert_eq!(report.len(), windows.len(), "{case}: report {report:?}");
    for (window, &count) in windows.iter().zip(report) {
        eprintln!(
            "{case}, {window}: {count} allocations in {MESSAGES} round trips ({:.3} per round trip)",
            count as f64 / MESSAGES as f64
        );
    }
    assert!(
        report.iter().all(|&c| c <= slack),
        "{case}: steady-state round trips allocated: {:?}",
        windows.iter().zip(report).collect::<Vec<_>>()
    );
}

/// Allocations a tokio window may see that are not the messages': the runtime's own one-offs
/// (seen: 2 in a window of 10,000 round trips, in about 1 run of 20, on Linux and under Wine).
/// An allocation per message would count 10,000.
const ASYNC_ONE_OFF_SLACK: u64 = 4;

#[test]
fn blocking_stream_send_recv_allocates_nothing() {
    let name = unique_name("za-stream");
    let listener = BlockingSharedMemoryListener::bind(&name).unwrap();
    let mut child = ChildGuard::spawn("stream-client", &name);
    let mut s = listener.accept().unwrap();
    let report = parent_echo(&mut s, 2 * WARMUP + 2 * MESSAGES);
    child.wait_success(HANG);
    assert_no_allocations(
        "BlockingSharedMemoryStream",
        &["send + recv into a buffer", "send_with + recv_with in place"],
        &report,
        0,
    );
}

// ---------------------------------------------------------------------------------------------
// The framed stream: headers, CRC, ids.

fn child_framed_client(name: &str) {
    let mut framed = BlockingFramedStream::new(connect_retry(name));
    let mut msg = [0u8; SIZE];
    let mut got = Frame::new(MessageType::Data, 0, Vec::with_capacity(SIZE));
    let mut seq = 0;
    let mut into = |framed: &mut BlockingFramedStream, seq: u64, msg: &mut [u8; SIZE]| {
        fill(seq, msg);
        let id = framed.send(MessageType::Data, &msg[..]).unwrap();
        framed.recv_into(&mut got).unwrap();
        assert!(
            got.kind == MessageType::Data && got.id == id && got.payload == msg[..],
            "echo #{seq} altered"
        );
    };
    let with = |framed: &mut BlockingFramedStream, seq: u64, msg: &mut [u8; SIZE]| {
        fill(seq, msg);
        let id = framed.send(MessageType::Data, &msg[..]).unwrap();
        let ok = framed
            .recv_with(|kind, got, got_id| kind == MessageType::Data && got_id == id && got == &msg[..])
            .unwrap();
        assert!(ok, "echo #{seq} altered");
    };
    for _ in 0..WARMUP {
        into(&mut framed, seq, &mut msg);
        with(&mut framed, seq + 1, &mut msg);
        seq += 2;
    }
    settle();
    let before = allocations();
    for _ in 0..MESSAGES {
        into(&mut framed, seq, &mut msg);
        seq += 1;
    }
    let recv_into = allocations() - before;
    let before = allocations();
    for _ in 0..MESSAGES {
        with(&mut framed, seq, &mut msg);
        seq += 1;
    }
    let recv_with = allocations() - before;
    send_report(framed.get_mut(), &[recv_into, recv_with]);
}

#[test]
fn framed_stream_send_recv_allocates_nothing() {
    let name = unique_name("za-framed");
    let listener = BlockingSharedMemoryListener::bind(&name).unwrap();
    let mut child = ChildGuard::spawn("framed-client", &name);
    let mut framed = BlockingFramedStream::new(listener.accept().unwrap());
    let mut frame = Frame::default();
    for _ in 0..2 * WARMUP + 2 * MESSAGES {
        framed.recv_into(&mut frame).unwrap();
        framed.send_with_id(frame.kind, frame.id, &frame.payload).unwrap();
    }
    let report = parent_echo(framed.get_mut(), 0);
    child.wait_success(HANG);
    assert_no_allocations("BlockingFramedStream", &["send + recv_into", "send + recv_with"], &report, 0);
}

// ---------------------------------------------------------------------------------------------
// The tokio stream, on a current-thread runtime in the child.

fn child_async_client(name: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut s = loop {
            match SharedMemoryStream::connect(name).await {
                Ok(s) => break s,
                Err(IpcError::Connect { .. }) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(e) => panic!("connect {name}: {e}"),
            }
        };
        let (mut msg, mut reply) = ([0u8; SIZE], [0u8; SIZE]);
        let mut counts = [0u64; 2];
        let mut seq = 0;
        for (round, count) in [WARMUP, MESSAGES].into_iter().enumerate() {
            if round == 1 {
                settle();
            }
            let before = allocations();
            for _ in 0..count {
                fill(seq, &mut msg);
                s.send(&msg[..]).await.unwrap();
                let n = s.recv(&mut reply[..]).await.unwrap();
                assert!(n == SIZE && reply == msg, "echo #{seq} altered");
                fill(seq + 1, &mut msg);
                s.send(&msg[..]).await.unwrap();
                assert!(s.recv_with(|got| got == &msg[..]).await.unwrap(), "echo #{} altered", seq + 1);
                seq += 2;
            }
            counts[round] = allocations() - before;
        }
        // The window holds MESSAGES round trips of each kind, reported as one count (so the
        // parent's "per round trip" is per pair here).
        s.send(&encode_report(&counts[1..])).await.unwrap();
        assert_eq!(s.recv_timeout(&mut [0u8; 1], HANG).await.unwrap(), 1, "acknowledgement");
    });
}

#[test]
fn async_stream_send_recv_allocates_nothing() {
    let name = unique_name("za-async");
    let listener = BlockingSharedMemoryListener::bind(&name).unwrap();
    let mut child = ChildGuard::spawn("async-client", &name);
    let mut s = listener.accept().unwrap();
    let report = parent_echo(&mut s, 2 * WARMUP + 2 * MESSAGES);
    child.wait_success(HANG);
    assert_no_allocations(
        "SharedMemoryStream",
        &["send + recv, then send + recv_with (a pair per round trip)"],
        &report,
        ASYNC_ONE_OFF_SLACK,
    );
}

// ---------------------------------------------------------------------------------------------
// The server's dispatch: an IpcServer with an echo handler in the child, measured; the client
// in the parent sends one fixed-size request at a time over a raw framed stream.
//
// Two echo handlers are measured, sync and async (the same Bytes in, out), both 0 allocations
// per request: the payload is a slice of the connection's reused payload block
// (src/rpc/inbound.rs, `PayloadBlock`), the handler is called on the connection task, and the
// answer is written into the ring in place. An async handler's future is polled there once and
// completes at once; its box is kept by the handler for the next request
// (src/rpc/server/handlers.rs, `Unary`). Only a handler that waits costs a task.

/// One-off allocations beyond one per worker a server window may see (see the test below).
const SERVER_ONE_OFF_SLACK: u64 = 8;
/// Tokio workers of the measured server.
const WORKERS: u64 = 2;

/// The async echo (`MessageType::Data` is the sync one).
const ASYNC_ECHO: MessageType = MessageType::Unknown(0x7A04);
/// Opens a window: the handler waits for the other threads to sleep, then reads the counter.
const START: MessageType = MessageType::Unknown(0x7A01);
/// Closes it: the handler answers the allocations since `START` (as 8 bytes, made after
/// reading the counter).
const STOP: MessageType = MessageType::Unknown(0x7A02);
/// Ends the server.
const QUIT: MessageType = MessageType::Unknown(0x7A03);

fn child_echo_server(name: &str) {
    static WINDOW_START: AtomicU64 = AtomicU64::new(0);
    static WINDOWS: AtomicU64 = AtomicU64::new(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS as usize)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = IpcServer::bind(name, IpcConfig::default()).unwrap();
        server.register_sync_handler(MessageType::Data, Ok);
        server.register_handler(ASYNC_ECHO, |request: Bytes| async move { Ok(request) });
        server.register_sync_handler(START, |_| {
            settle();
            WINDOW_START.store(allocations(), Ordering::SeqCst);
            trace::arm();
            Ok(Bytes::new())
        });
        server.register_sync_handler(STOP, |_| {
            let counted = allocations() - WINDOW_START.load(Ordering::SeqCst);
            // The first window is the warm-up, whose allocations are expected.
            let traces = trace::disarm();
            if WINDOWS.fetch_add(1, Ordering::SeqCst) > 0 {
                for trace in traces {
                    eprintln!("echo server: allocated in a window: {trace}");
                }
            }
            Ok(Bytes::copy_from_slice(&counted.to_le_bytes()))
        });
        let handle = server.clone();
        server.register_handler(QUIT, move |_| {
            handle.shutdown(Duration::from_secs(1));
            async { Ok(Bytes::new()) }
        });
        server.serve().await.unwrap();
    });
    // The QUIT handler holds a clone of the server, so the listener is never dropped and its
    // socket file stays: remove it (the process exits next).
    let _ = std::fs::remove_file(lapce_ipc::socket_path(name).unwrap());
}

/// One request of type `kind` with id `id`, and its answer's payload (must be a `Response`).
fn call(framed: &mut BlockingFramedStream, kind: MessageType, id: u64, payload: &[u8], answer: &mut Frame) {
    framed.send_with_id(kind, id, payload).unwrap();
    framed.recv_into(answer).unwrap();
    assert_eq!((answer.kind, answer.id), (MessageType::Response, id), "answer to {kind:?} #{id}: {answer:?}");
}

/// What the server allocated: in the cleanest of up to [`SERVER_TRIES`] windows of
/// [`MESSAGES`] echo requests, and in an empty one (what the window's own START and STOP
/// requests cost).
struct ServerWindows {
    full: u64,
    empty: u64,
}

impl ServerWindows {
    /// Allocations per echo request, the empty window's cost taken off.
    fn per_request(&self) -> f64 {
        self.full.saturating_sub(self.empty) as f64 / MESSAGES as f64
    }

    /// Within the one-offs a window may see (see the tests below).
    fn clean(&self) -> bool {
        self.full <= self.empty + WORKERS + SERVER_ONE_OFF_SLACK
    }
}

/// Full windows measured at most: one that allocates per request fails every one, while a
/// burst of one-offs on a loaded machine (the child prints where it allocated) seldom repeats.
const SERVER_TRIES: usize = 3;

/// Measures the server's windows of echo requests of type `echo`.
fn measure_server(tag: &str, echo_kind: MessageType) -> ServerWindows {
    let name = unique_name(tag);
    let mut child = ChildGuard::spawn("echo-server", &name).listening_on(&name);
    let mut framed = BlockingFramedStream::new(connect_retry(&name));
    let mut answer = Frame::default();
    framed.recv_into(&mut answer).unwrap();
    assert_eq!((answer.kind, answer.id), (MessageType::Control, 0), "greeting");
    assert_eq!(answer.payload, b"ready");
    let mut msg = [0u8; SIZE];
    let mut echo = |framed: &mut BlockingFramedStream, id: u64, answer: &mut Frame| {
        fill(id, &mut msg);
        call(framed, echo_kind, id, &msg, answer);
        assert!(answer.payload[..] == msg[..], "echo #{id} altered");
    };
    let mut id = 1;
    let mut window = |framed: &mut BlockingFramedStream, count: u64| -> u64 {
        call(framed, START, id, b"", &mut answer);
        id += 1;
        for _ in 0..count {
            echo(framed, id, &mut answer);
            id += 1;
        }
        call(framed, STOP, id, b"", &mut answer);
        id += 1;
        decode_report(&answer.payload)[0]
    };
    window(&mut framed, WARMUP);
    let empty = window(&mut framed, 0);
    let mut w = ServerWindows { full: u64::MAX, empty };
    for _ in 0..SERVER_TRIES {
        let full = window(&mut framed, MESSAGES);
        eprintln!("IpcServer {echo_kind:?} echo dispatch: {full} allocations in a window of {MESSAGES} requests, {empty} in an empty one");
        w.full = w.full.min(full);
        if w.clean() {
            break;
        }
    }
    call(&mut framed, QUIT, u64::MAX, b"", &mut answer);
    child.wait_success(HANG);
    w
}

/// The goal of issue 7 for the server: a sync echo costs nothing per request. Besides the
/// per-request allocations (there are none), a window may see a few one-offs: one per tokio
/// worker (a worker's deferred-wake list, a `Vec<Waker>` in tokio's scheduler, is allocated the
/// first time the connection task yields on it, which happens whenever the task first migrates
/// there), and now and then one more (seen: 1 in 20 runs). One allocation per request would add
/// 10,000.
#[test]
fn server_dispatch_of_a_sync_echo_allocates_nothing() {
    let w = measure_server("za-server-sync", MessageType::Data);
    assert!(
        w.clean(),
        "the server allocated {:.3} times per sync echo request ({} in {MESSAGES} requests, {} in an \
         empty window)",
        w.per_request(),
        w.full,
        w.empty
    );
    assert!(
        w.empty <= WORKERS + SERVER_ONE_OFF_SLACK,
        "the window's own requests cost {} allocations",
        w.empty
    );
}

/// An async echo that answers at once costs nothing per request either (same one-offs as
/// above).
#[test]
fn server_dispatch_of_an_async_echo_allocates_nothing() {
    let w = measure_server("za-server-async", ASYNC_ECHO);
    assert!(
        w.clean(),
        "the server allocated {:.3} times per async echo request ({} in {MESSAGES} requests, {} in an \
         empty window)",
        w.per_request(),
        w.full,
        w.empty
    );
}

// ---------------------------------------------------------------------------------------------
// The clients: an `IpcClient` (requests awaited from the `block_on` future of a multi-thread
// runtime, as `#[tokio::main]` makes them) or a `BlockingIpcClient` in the child, measured; an
// `IpcServer` with the sync and async echoes in the parent. The child reports its counts in a
// last request.

/// Carries a child's report to the parent's server.
const REPORT: MessageType = MessageType::Unknown(0x7A05);

/// Runs an `IpcServer` with the echoes and a `REPORT` handler on a runtime of its own (in the
/// parent) until the child has reported; returns the report.
fn serve_until_report(name: &str, child: &mut ChildGuard) -> Vec<u64> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let report = std::sync::Arc::new(std::sync::Mutex::new(None));
    runtime.block_on(async {
        let server = IpcServer::bind(name, IpcConfig::default()).unwrap();
        server.register_sync_handler(MessageType::Data, Ok);
        server.register_handler(ASYNC_ECHO, |request: Bytes| async move { Ok(request) });
        let (handle, keep) = (server.clone(), report.clone());
        server.register_sync_handler(REPORT, move |counts| {
            *keep.lock().unwrap() = Some(decode_report(&counts));
            handle.shutdown(Duration::from_secs(1));
            Ok(Bytes::new())
        });
        tokio::time::timeout(HANG, server.serve()).await.expect("the child never reported").unwrap();
    });
    child.wait_success(HANG);
    let report = report.lock().unwrap().take().expect("a report");
    report
}

/// The windows of a client child: echoes of `Data` (sync handler) and of `ASYNC_ECHO`, and
/// `Data` looked at in place (`request_with`).
const CLIENT_WINDOWS: [&str; 3] =
    ["request, sync handler", "request, async handler", "request_with in place"];

/// Checks an echo.
fn check_echo(seq: u64, msg: &[u8; SIZE], answer: &[u8]) {
    assert!(answer == &msg[..], "echo #{seq} altered");
}

fn child_rpc_client(name: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let client = loop {
            match IpcClient::connect(name, IpcConfig::default()).await {
                Ok(c) => break c,
                Err(IpcError::Connect { .. }) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(e) => panic!("connect {name}: {e}"),
            }
        };
        let mut msg = [0u8; SIZE];
        let mut counts = Vec::new();
        for (window, kind) in [MessageType::Data, ASYNC_ECHO, MessageType::Data].into_iter().enumerate() {
            for (round, count) in [WARMUP, MESSAGES].into_iter().enumerate() {
                if round == 1 {
                    settle();
                }
                let before = allocations();
                for seq in 0..count {
                    fill(seq, &mut msg);
                    if window < 2 {
                        let answer = client.request(kind, &msg[..]).await.unwrap();
                        check_echo(seq, &msg, &answer);
                    } else {
                        client
                            .request_with(kind, &msg[..], |answer| check_echo(seq, &msg, answer))
                            .await
                            .unwrap();
                    }
                }
                if round == 1 {
                    counts.push(allocations() - before);
                }
            }
        }
        client.request(REPORT, encode_report(&counts)).await.unwrap();
    });
}

#[test]
fn ipc_client_requests_allocate_nothing() {
    let name = unique_name("za-rpc-client");
    let mut child = ChildGuard::spawn("rpc-client", &name);
    let report = serve_until_report(&name, &mut child);
    assert_no_allocations("IpcClient from block_on", &CLIENT_WINDOWS, &report, ASYNC_ONE_OFF_SLACK);
}

fn child_blocking_rpc_client(name: &str) {
    let deadline = std::time::Instant::now() + HANG;
    let client = loop {
        match BlockingIpcClient::connect(name, IpcConfig::default()) {
            Ok(c) => break c,
            Err(IpcError::Connect { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("connect {name}: {e}"),
        }
    };
    let mut msg = [0u8; SIZE];
    let mut counts = Vec::new();
    for (window, kind) in [MessageType::Data, ASYNC_ECHO, MessageType::Data].into_iter().enumerate() {
        for (round, count) in [WARMUP, MESSAGES].into_iter().enumerate() {
            if round == 1 {
                settle();
            }
            let before = allocations();
            for seq in 0..count {
                fill(seq, &mut msg);
                if window < 2 {
                    let answer = client.request(kind, &msg[..]).unwrap();
                    check_echo(seq, &msg, &answer);
                } else {
                    client.request_with(kind, &msg[..], |answer| check_echo(seq, &msg, answer)).unwrap();
                }
            }
            if round == 1 {
                counts.push(allocations() - before);
            }
        }
    }
    client.request(REPORT, encode_report(&counts)).unwrap();
}

#[test]
fn blocking_ipc_client_requests_allocate_nothing() {
    let name = unique_name("za-blocking-rpc");
    let mut child = ChildGuard::spawn("blocking-rpc-client", &name);
    let report = serve_until_report(&name, &mut child);
    assert_no_allocations("BlockingIpcClient", &CLIENT_WINDOWS, &report, 0);
}
