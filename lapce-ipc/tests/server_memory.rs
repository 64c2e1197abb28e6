//! What an `IpcServer` keeps once the work is over (issue 7, stress level 4; issue 6, idle
//! memory): no large receive buffer after a large request, and a heap trim once connections
//! stop ending.
//!
//! The server runs in a child process (this binary re-run in a child role, see `common`); the
//! parent is its client. The child's global allocator counts live heap bytes, which a request
//! type answers, and another request type answers the server's heap-trim count.
//!
//! The only `unsafe` is the counting allocator (`GlobalAlloc` has no safe form); it forwards to
//! `System`, with a `SAFETY` note on each block.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{child_role, connect_retry, unique_name, ChildGuard};
use lapce_ipc::frame::{BlockingFramedStream, MessageType};
use lapce_ipc::{IpcConfig, IpcServer};

/// Keeps a count of live heap bytes, then lets the system allocator do the work.
struct LiveBytes;

/// Bytes allocated and not yet freed by this process.
static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only addition is a relaxed atomic add, which neither allocates
// nor unwinds.
unsafe impl GlobalAlloc for LiveBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: our caller upholds `alloc`'s contract (non-zero size), passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`; our
        // caller upholds the rest of `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: LiveBytes = LiveBytes;

/// Answers the server's live heap bytes (8 bytes, little-endian).
const LIVE_BYTES: MessageType = MessageType::Unknown(0x7B01);
/// Answers the server's `heap_trims` (8 bytes, little-endian).
const HEAP_TRIMS: MessageType = MessageType::Unknown(0x7B02);
/// Ends the server.
const QUIT: MessageType = MessageType::Unknown(0x7B03);
/// Answers the server's `connections_active` (8 bytes, little-endian).
const ACTIVE: MessageType = MessageType::Unknown(0x7B04);
/// Answers the server's counters and its warm pool's state, as text (for failure messages).
const STATE: MessageType = MessageType::Unknown(0x7B05);
/// The child server's `idle_trim_ms`.
const QUIET_MS: u64 = 100;
/// Generous bound for "must not hang".
const HANG: Duration = Duration::from_secs(60);

/// Entry point of the child processes; a no-op when run as a normal test.
#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    // "server" trims the heap (`trim_heap`), "default-server" keeps the default (no trim).
    let trim_heap = match role.as_str() {
        "server" => true,
        "default-server" => false,
        other => panic!("unknown role {other}"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut config = IpcConfig::default();
        config.ipc.idle_trim_ms = QUIET_MS;
        config.ipc.trim_heap = trim_heap;
        let server = IpcServer::bind(&name, config).unwrap();
        server.register_handler(MessageType::Data, |request: Bytes| async move { Ok(request) });
        server.register_sync_handler(LIVE_BYTES, |_| {
            Ok(Bytes::copy_from_slice(&LIVE.load(Ordering::SeqCst).to_le_bytes()))
        });
        let handle = server.clone();
        server.register_sync_handler(HEAP_TRIMS, move |_| {
            Ok(Bytes::copy_from_slice(&handle.stats().heap_trims.to_le_bytes()))
        });
        let handle = server.clone();
        server.register_sync_handler(ACTIVE, move |_| {
            Ok(Bytes::copy_from_slice(&(handle.stats().connections_active as i64).to_le_bytes()))
        });
        let handle = server.clone();
        server.register_sync_handler(STATE, move |_| {
            Ok(Bytes::from(format!("{:?}; {:?}", handle.stats(), handle.pool_stats())))
        });
        let handle = server.clone();
        server.register_sync_handler(QUIT, move |_| {
            handle.shutdown(Duration::from_secs(1));
            Ok(Bytes::new())
        });
        server.serve().await.unwrap();
    });
}

/// A connection to the child server, past its greeting.
fn connect(name: &str) -> BlockingFramedStream {
    let mut framed = BlockingFramedStream::new(connect_retry(name));
    let greeting = framed.recv().unwrap();
    assert_eq!((greeting.kind, greeting.id), (MessageType::Control, 0), "greeting");
    framed
}

/// One request and its answer, which must be a `Response`.
fn call(framed: &mut BlockingFramedStream, kind: MessageType, id: u64, payload: &[u8]) -> Vec<u8> {
    framed.send_with_id(kind, id, payload).unwrap();
    let answer = framed.recv().unwrap();
    assert_eq!((answer.kind, answer.id), (MessageType::Response, id), "answer to {kind:?} #{id}");
    answer.payload
}

fn number(answer: &[u8]) -> i64 {
    i64::from_le_bytes(answer.try_into().expect("an 8-byte answer"))
}

/// The child server and a connection to it (the tests' control connection: requests, counters).
struct ServerChild {
    child: ChildGuard,
    control: BlockingFramedStream,
    last_id: u64,
}

impl ServerChild {
    fn spawn(name: &str) -> ServerChild {
        Self::spawn_as("server", name)
    }

    fn spawn_as(role: &str, name: &str) -> ServerChild {
        let child = ChildGuard::spawn(role, name).listening_on(name);
        ServerChild { child, control: connect(name), last_id: 0 }
    }

    /// One request of `kind` on the control connection, and its answer.
    fn request(&mut self, kind: MessageType) -> Vec<u8> {
        self.last_id += 1;
        call(&mut self.control, kind, self.last_id, b"")
    }

    /// One of the counters: `LIVE_BYTES`, `HEAP_TRIMS` or `ACTIVE`.
    fn ask(&mut self, kind: MessageType) -> i64 {
        number(&self.request(kind))
    }

    /// The server's counters and warm-pool state, as text.
    fn state(&mut self) -> String {
        String::from_utf8_lossy(&self.request(STATE)).into_owned()
    }

    /// The live heap once it has settled: the least of readings 10 ms apart, taken until the
    /// last five agree (for at most a second), so that what an ended connection's task still
    /// holds has time to go.
    fn settled_heap(&mut self) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut readings = vec![self.ask(LIVE_BYTES)];
        let settled = |r: &[i64]| r.len() >= 5 && r[r.len() - 5..].windows(2).all(|w| w[0] == w[1]);
        while Instant::now() < deadline && !settled(&readings) {
            std::thread::sleep(Duration::from_millis(10));
            readings.push(self.ask(LIVE_BYTES));
        }
        readings.into_iter().min().unwrap()
    }

    /// Shuts the server down and reaps it (it must exit with success).
    fn quit(mut self) {
        call(&mut self.control, QUIT, u64::MAX, b"");
        self.child.wait_success(HANG);
    }
}

/// After one 4 MiB request (echoed and checked), the server's live heap is back within 1 MiB
/// of where it was: the connection's receive buffer, grown to 4 MiB, was let go (it would stay
/// for the connection's life otherwise). Small requests after it still work.
#[test]
fn a_large_request_leaves_no_large_buffer_behind() {
    let name = unique_name("mem-large");
    let mut server = ServerChild::spawn(&name);
    for id in 1..=10 {
        call(&mut server.control, MessageType::Data, 100 + id, &[id as u8; 512]);
    }
    let before = server.ask(LIVE_BYTES);
    let large: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    assert!(call(&mut server.control, MessageType::Data, 111, &large) == large, "the 4 MiB echo was altered");
    let small = call(&mut server.control, MessageType::Data, 112, b"small");
    assert_eq!(small, b"small");
    let after = server.ask(LIVE_BYTES);
    eprintln!("server live heap: {before} bytes before the 4 MiB request, {after} after");
    assert!(
        after - before < 1 << 20,
        "the server holds {} KiB more after one 4 MiB request ({before} -> {after} bytes)",
        (after - before) / 1024
    );
    server.quit();
}

/// Connections that end make the server trim its heap once they have stopped ending for
/// `idle_trim_ms`: once per quiet spell, not periodically (an idle server does not wake up).
#[test]
fn the_heap_is_trimmed_once_connections_stop_ending() {
    let name = unique_name("mem-trim");
    let mut server = ServerChild::spawn(&name);
    let mut trims = || server.ask(HEAP_TRIMS);
    // No connection has ended yet: nothing to trim, however long we wait.
    std::thread::sleep(Duration::from_millis(3 * QUIET_MS));
    assert_eq!(trims(), 0, "a trim with no connection ended");
    let mut last = 0;
    for round in 1..=2 {
        let clients: Vec<BlockingFramedStream> = (0..20).map(|_| connect(&name)).collect();
        drop(clients);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut now = trims();
        while now == last && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            now = trims();
        }
        assert!(now > last, "no heap trim within 10 s of round {round}'s 20 connections ending");
        // (The 20 ends reach the server within a few ms, so usually one trim; a slow machine
        // may spread them over more than the quiet time.) Quiet from here on: no further trim.
        std::thread::sleep(Duration::from_millis(5 * QUIET_MS));
        assert_eq!(trims(), now, "a trim with no connection ended since the last");
        last = now;
    }
    server.quit();
}

/// Trimming the heap concerns the whole host process, so it is opt-in: with the default
/// configuration connections that end leave the host's heap alone.
#[test]
fn a_default_server_leaves_the_host_heap_alone() {
    let name = unique_name("mem-no-trim");
    let mut server = ServerChild::spawn_as("default-server", &name);
    let clients: Vec<BlockingFramedStream> = (0..20).map(|_| connect(&name)).collect();
    drop(clients);
    // The trim would come `QUIET_MS` after the last end: wait well past it.
    std::thread::sleep(Duration::from_millis(10 * QUIET_MS));
    assert_eq!(server.ask(HEAP_TRIMS), 0, "a server that was not asked to trimmed the host's heap");
    server.quit();
}

/// Connections that come and go leak nothing: cycles of 50 connections, each sending requests
/// of three sizes and leaving, end with the server's live heap where the warm-up left it. 50,
/// not more: CI runs under a soft limit of 1024 open files, and this process and the server
/// each hold several descriptors per connection.
///
/// A leak grows the heap in every stretch of cycles; a table sized by the connections open at
/// once grows it once, when it doubles, at a cycle set by scheduling (the hang-up watcher's map:
/// 1.6 KiB, seen as late as the eighth cycle; the metrics' ring registry was such a map too,
/// and with it this test failed in CI on 2026-12-05: a slab now). So the verdict takes three
/// windows of `WINDOW` cycles (after the warm-up, in the middle, at the end), each read as its
/// least reading (something held for a while in one cycle does not count), and fails when the
/// heap grew by more than `STRETCH` in both stretches between them, or by more than `ONCE` in
/// all. An injected leak of 16 bytes per connection reads 8,800 and 9,600 bytes and fails;
/// one of 8 bytes, 4,400 and 4,800.
#[test]
fn connections_that_come_and_go_leak_no_heap() {
    const CYCLES: usize = 32;
    const WARM_UP: usize = 4;
    const WINDOW: usize = 5;
    const STRETCH: i64 = 4 << 10;
    const ONCE: i64 = 64 << 10;
    let name = unique_name("mem-cycles");
    let mut server = ServerChild::spawn(&name);
    let payloads: Vec<Vec<u8>> = [256, 4096, 16 * 1024].iter().map(|&n| vec![0x5a; n]).collect();
    let mut live = Vec::new();
    for _cycle in 0..CYCLES {
        let mut clients: Vec<BlockingFramedStream> = (0..50).map(|_| connect(&name)).collect();
        for (c, framed) in clients.iter_mut().enumerate() {
            for (i, p) in payloads.iter().enumerate() {
                assert!(call(framed, MessageType::Data, (c * 3 + i) as u64 + 1, p) == *p, "echo altered");
            }
        }
        drop(clients);
        let deadline = Instant::now() + HANG;
        while server.ask(ACTIVE) > 1 {
            assert!(Instant::now() < deadline, "connections still open after {HANG:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        live.push(server.settled_heap());
    }
    eprintln!("server live heap after each cycle of 50 connections: {live:?}");
    let least = |from: usize| *live[from..from + WINDOW].iter().min().unwrap();
    let middle = (WARM_UP + CYCLES - WINDOW) / 2;
    let [early, mid, late] = [least(WARM_UP), least(middle), least(CYCLES - WINDOW)];
    let (first, second) = (mid - early, late - mid);
    let leaked = (first > STRETCH && second > STRETCH) || late - early > ONCE;
    if leaked {
        panic!(
            "the live heap grew by {first} bytes from cycles {WARM_UP}.. to {middle}.. and by {second} \
             from there to {}.. (least of {WINDOW} cycles each; a leak is over {STRETCH} in both, or \
             over {ONCE} in all): {live:?}; server: {}",
            CYCLES - WINDOW,
            server.state()
        );
    }
    server.quit();
}
