//! Server-to-client notifications across processes: the server (a child process) pushes
//! through `Peer`s it got from `on_connect` / `peers`, and both client flavours receive them
//! while no request waits, in order, with a bounded queue for a client that does not read.

use crate::common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{child_role, unique_name, ChildGuard};
use lapce_ipc::frame::MessageType;
use lapce_ipc::messages::{ErrorBody, ErrorCode};
use lapce_ipc::{
    BlockingIpcClient, IpcClient, IpcConfig, IpcServer, Notification, Peer, NOTIFICATION_QUEUE_LEN,
};

const HANG: Duration = Duration::from_secs(60);

/// Echo.
const ECHO: MessageType = MessageType::Data;
/// Payload `N`: pushes notifications `0..N` (type [`TICK`], payload the number in decimal) to
/// every peer, waiting for room, then answers.
const PUSH: MessageType = MessageType::Unknown(0x500);
/// Answers the peers' pids, comma-separated, oldest first.
const PEERS: MessageType = MessageType::Unknown(0x501);
/// Broadcasts `hello` and answers how many peers took it.
const BROADCAST: MessageType = MessageType::Unknown(0x502);
/// Answers the error of a notification of type `Response` (not an application type).
const BAD_KIND: MessageType = MessageType::Unknown(0x503);
/// The type of the notifications.
const TICK: MessageType = MessageType::Unknown(0x510);

fn internal(e: impl ToString) -> ErrorBody {
    ErrorBody::new(ErrorCode::INTERNAL, e.to_string())
}

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    if role == "drop-client" {
        return drop_client(&name);
    }
    assert_eq!(role, "notify-server");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = IpcServer::bind(&name, IpcConfig::default()).unwrap();
        let connected: Arc<Mutex<Vec<Peer>>> = Arc::default();
        let list = connected.clone();
        server.on_connect(move |peer| list.lock().unwrap().push(peer));
        server.register_handler(ECHO, |p: Bytes| async move { Ok(p) });
        let handle = server.clone();
        server.register_handler(PUSH, move |p: Bytes| {
            let peers = handle.peers();
            async move {
                let n: u64 = std::str::from_utf8(&p).unwrap().parse().unwrap();
                for i in 0..n {
                    for peer in &peers {
                        peer.notify(TICK, i.to_string()).await.map_err(internal)?;
                    }
                }
                Ok(Bytes::from_static(b"pushed"))
            }
        });
        let handle = server.clone();
        server.register_sync_handler(PEERS, move |_| {
            // The hook saw every connection the server lists. (Not the other way round: a
            // closing connection may leave the list before its `Peer` says it is closed.)
            let hooked: Vec<u64> = connected.lock().unwrap().iter().map(Peer::id).collect();
            let listed: Vec<u64> = handle.peers().iter().map(Peer::id).collect();
            assert!(listed.iter().all(|id| hooked.contains(id)), "listed {listed:?}, hooked {hooked:?}");
            let pids: Vec<String> = handle.peers().iter().map(|p| p.pid().to_string()).collect();
            Ok(Bytes::from(pids.join(",")))
        });
        let handle = server.clone();
        server.register_sync_handler(BROADCAST, move |_| {
            Ok(Bytes::from(handle.broadcast(TICK, "hello").map_err(internal)?.to_string()))
        });
        let handle = server.clone();
        server.register_sync_handler(BAD_KIND, move |_| {
            let peer = handle.peers().pop().unwrap();
            Ok(Bytes::from(peer.try_notify(MessageType::Response, "").unwrap_err().to_string()))
        });
        server.serve().await.unwrap();
    });
}

fn server(name: &str) -> ChildGuard {
    ChildGuard::spawn("notify-server", name).listening_on(name)
}

fn tick(i: u64) -> Notification {
    Notification { kind: TICK, payload: Bytes::from(i.to_string()) }
}

#[test]
fn the_async_client_receives_notifications_in_order_while_idle() {
    let name = unique_name("notify-async");
    let _child = server(&name);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let client = IpcClient::connect_timeout(&name, IpcConfig::default(), HANG).await.unwrap();
        let mut notifications = client.notifications();
        // Sent from a task: this one waits for the notifications alone, with no request in
        // flight once the answer came.
        let pusher = client.clone();
        let pushed = tokio::spawn(async move { pusher.request(PUSH, "500").await });
        for i in 0..500 {
            let n = tokio::time::timeout(HANG, notifications.recv()).await.unwrap().unwrap();
            assert_eq!(n, tick(i));
        }
        assert_eq!(pushed.await.unwrap().unwrap(), "pushed");
        // Idle now: a broadcast reaches the listening client all the same.
        assert_eq!(client.request(BROADCAST, "").await.unwrap(), "1");
        let n = tokio::time::timeout(HANG, notifications.recv()).await.unwrap().unwrap();
        assert_eq!(n, Notification { kind: TICK, payload: Bytes::from_static(b"hello") });
        assert_eq!(client.notifications_dropped(), 0);
        let pid = std::process::id().to_string();
        assert_eq!(client.request(PEERS, "").await.unwrap(), pid);
        let refused = client.request(BAD_KIND, "").await.unwrap();
        assert!(String::from_utf8_lossy(&refused).contains("cannot be a notification"), "{refused:?}");
        // Requests and notifications share the connection: answers still come.
        assert_eq!(client.request(ECHO, "after").await.unwrap(), "after");
    });
}

#[test]
fn the_blocking_client_calls_back_on_its_listener_thread_and_the_callback_may_request() {
    let name = unique_name("notify-blocking");
    let _child = server(&name);
    let client = Arc::new(BlockingIpcClient::connect_timeout(&name, IpcConfig::default(), HANG).unwrap());
    let (tx, rx) = mpsc::channel();
    let weak = Arc::downgrade(&client);
    client.on_notification(move |n| {
        let thread = std::thread::current().name().map(str::to_owned);
        // A request from inside the callback: the listener gave the role back.
        let echoed = weak.upgrade().map(|c| c.request(ECHO, &n.payload).unwrap());
        tx.send((n, thread, echoed)).unwrap();
    });
    assert_eq!(client.request(PUSH, "200").unwrap(), "pushed");
    for i in 0..200 {
        let (n, thread, echoed) = rx.recv_timeout(HANG).unwrap();
        assert_eq!(n, tick(i));
        assert_eq!(thread.as_deref(), Some("lapce-ipc-listen"));
        assert_eq!(echoed.unwrap(), n.payload);
    }
    // While the client is idle, a notification still arrives.
    let other = BlockingIpcClient::connect_timeout(&name, IpcConfig::default(), HANG).unwrap();
    assert_eq!(other.request(BROADCAST, "").unwrap(), "2");
    let (n, _, _) = rx.recv_timeout(HANG).unwrap();
    assert_eq!(n.payload, "hello");
    assert_eq!(client.notifications_dropped(), 0);
    // `other` registered nothing: its notifications were dropped as read, not counted.
    assert_eq!(other.request(ECHO, "x").unwrap(), "x");
    assert_eq!(other.notifications_dropped(), 0);
}

#[test]
fn a_client_that_never_takes_its_notifications_keeps_a_bounded_queue() {
    let name = unique_name("notify-bounded");
    let _child = server(&name);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let client = IpcClient::connect_timeout(&name, IpcConfig::default(), HANG).await.unwrap();
        let mut notifications = client.notifications();
        let n = NOTIFICATION_QUEUE_LEN as u64 + 2000;
        // The server waits for room for each: the listener keeps reading, dropping past the cap.
        assert_eq!(client.request(PUSH, n.to_string()).await.unwrap(), "pushed");
        let deadline = Instant::now() + HANG;
        while client.notifications_dropped() < 2000 {
            assert!(Instant::now() < deadline, "dropped {}", client.notifications_dropped());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(client.notifications_dropped(), 2000);
        // The oldest were kept, in order.
        for i in 0..NOTIFICATION_QUEUE_LEN as u64 {
            assert_eq!(notifications.try_recv(), Some(tick(i)));
        }
        assert_eq!(notifications.try_recv(), None);
    });
}

#[test]
fn peers_leave_the_list_when_their_clients_go() {
    let name = unique_name("notify-peers");
    let _child = server(&name);
    let first = BlockingIpcClient::connect_timeout(&name, IpcConfig::default(), HANG).unwrap();
    let second = BlockingIpcClient::connect_timeout(&name, IpcConfig::default(), HANG).unwrap();
    let pid = std::process::id().to_string();
    assert_eq!(first.request(PEERS, "").unwrap(), format!("{pid},{pid}"));
    drop(second);
    let deadline = Instant::now() + HANG;
    while first.request(PEERS, "").unwrap() != pid {
        assert!(Instant::now() < deadline, "the closed connection stayed listed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(first.request(BROADCAST, "").unwrap(), "1");
}

/// The names of this process's threads (Linux).
fn thread_names() -> Vec<String> {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// A client in a process of its own: its listener and dispatch threads run while it is used
/// and end once it is dropped.
fn drop_client(name: &str) {
    let ours = |names: &[String]| {
        // `lapce-ipc-dispatch` and `lapce-ipc-listen` as the kernel keeps them: 15 bytes.
        let client_threads = ["lapce-ipc-dispa", "lapce-ipc-liste"];
        names.iter().filter(|n| client_threads.contains(&n.as_str())).cloned().collect::<Vec<_>>()
    };
    assert!(ours(&thread_names()).is_empty(), "threads before the client: {:?}", thread_names());
    let client = BlockingIpcClient::connect_timeout(name, IpcConfig::default(), HANG).unwrap();
    assert_eq!(client.request(ECHO, "x").unwrap(), "x");
    assert!(ours(&thread_names()).is_empty(), "a client that registered nothing has no thread");
    let (tx, rx) = mpsc::channel();
    client.on_notification(move |n| tx.send(n).unwrap());
    let (done, answered) = mpsc::channel();
    client.request_async(BROADCAST, "", move |a| done.send(a).unwrap());
    assert_eq!(answered.recv_timeout(HANG).unwrap().unwrap(), "1");
    assert_eq!(rx.recv_timeout(HANG).unwrap().payload, "hello");
    let mut running = ours(&thread_names());
    running.sort();
    assert_eq!(running, ["lapce-ipc-dispa", "lapce-ipc-liste"]);
    drop(client);
    let deadline = Instant::now() + HANG;
    while !ours(&thread_names()).is_empty() {
        assert!(Instant::now() < deadline, "threads left after the drop: {:?}", ours(&thread_names()));
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
#[cfg(target_os = "linux")]
fn a_dropped_client_ends_its_listener_and_dispatch_threads() {
    let name = unique_name("notify-drop");
    let _child = server(&name);
    ChildGuard::spawn("drop-client", &name).wait_success(HANG);
}
