//! Idle trim across processes: after a burst of large messages has touched every page of both
//! rings, a connection left idle gives those pages back to the kernel (each side trims the ring
//! it writes), and the connection keeps working, byte for byte, afterwards.
//!
//! The server runs in a child process; the test reads its own resident shared memory
//! (`RssShmem` in `/proc/self/status`), which counts the ring pages mapped here. This file holds
//! a single test so that no other test's mappings move that figure. Linux only: elsewhere the
//! trim is a no-op (no `MADV_REMOVE` for mapped shared memory) and there is no `RssShmem`.
#![cfg(target_os = "linux")]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{child_role, unique_name, ChildGuard};
use lapce_ipc::frame::MessageType;
use lapce_ipc::{IpcClient, IpcConfig, IpcServer};

fn config() -> IpcConfig {
    let mut config = IpcConfig::default();
    config.ipc.idle_trim_ms = 100;
    config.ipc.warm_pool_size = 2;
    config
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, name)) = child_role() else { return };
    assert_eq!(role, "echo-server");
    runtime().block_on(async {
        let server = IpcServer::bind(&name, config()).unwrap();
        server.register_handler(MessageType::Data, |p: Bytes| async move { Ok(p) });
        server.serve().await.unwrap();
    });
}

/// Resident shared memory of this process, in KiB.
fn rss_shmem_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssShmem:")).expect("RssShmem in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn connect(name: &str) -> IpcClient {
    common::connect_client(name, config()).await
}

/// `n` requests of 60 KiB, each with its own contents, checked on the way back: several
/// times around both 256 KiB rings, so every page of their data areas is written and read.
async fn burst(client: &IpcClient, round: u8, n: u8) {
    for i in 0..n {
        let payload: Vec<u8> =
            (0..60 * 1024u32).map(|j| (j as u8).wrapping_mul(31) ^ i.wrapping_add(round)).collect();
        let answer = client.request(MessageType::Data, payload.clone()).await.unwrap();
        assert!(answer == payload, "echo {i} of round {round} differs");
    }
}

#[test]
fn idle_rings_give_their_pages_back_and_keep_working() {
    let name = unique_name("trim");
    let _server = ChildGuard::spawn("echo-server", &name).listening_on(&name);
    let rt = runtime();
    rt.block_on(async {
        let client = connect(&name).await;
        let connected = rss_shmem_kib();
        burst(&client, 0, 24).await;
        let touched = rss_shmem_kib();
        // Both rings (256 KiB each) are mapped here; at least most of their pages are
        // resident after the burst.
        assert!(touched >= connected + 400, "the burst touched too little: {connected} -> {touched} KiB");
        let deadline = Instant::now() + Duration::from_secs(20);
        let trimmed = loop {
            let now = rss_shmem_kib();
            if now <= connected + 16 {
                break now;
            }
            assert!(
                Instant::now() < deadline,
                "idle rings were not trimmed: {connected} KiB connected, {touched} after the burst, {now} now"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        eprintln!("RssShmem: {connected} KiB connected, {touched} after the burst, {trimmed} after the trim");
        // Trimmed rings carry every byte as before, and are trimmed again when idle.
        burst(&client, 1, 24).await;
        assert!(rss_shmem_kib() >= connected + 400);
        let deadline = Instant::now() + Duration::from_secs(20);
        while rss_shmem_kib() > connected + 16 {
            assert!(Instant::now() < deadline, "the second idle period did not trim");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        burst(&client, 2, 4).await;
    });
}
