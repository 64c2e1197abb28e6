//! The platform conformance suite: the contracts of the internal platform API (see the table in
//! `platform/mod.rs`), written once and run against whichever backend this build uses: Linux
//! memfd + futex (the default), POSIX `shm_open` + doorbells (`--features posix`, the macOS
//! path) and Windows (sections, events, named pipes; run under Wine).
//!
//! The test bodies name no backend: only what the contract itself makes optional is tested
//! conditionally (`if HAS_FUTEX`, `if HAS_HANGUP_WATCHER`). A contract one backend does not keep
//! is a bug of that backend, not a reason for a `#[cfg]` here.
//!
//! Cross-process tests re-run this test binary as the peer: the child runs the very same test
//! (`--exact`), which sees [`ROLE_ENV`] and plays the child's part. Every child is killed and
//! reaped when its [`ChildGuard`] drops, and gives up on its own after [`LONG`], so an aborted
//! run leaves no process behind. Names are unique per test, so the tests run in parallel.

mod control;
mod peer;
mod segment;
#[cfg(feature = "tokio")]
mod tokio_io;
mod wake;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{
    control_path, BorrowedOsHandle, ControlListener, ControlStream, OsHandle, PeerLink, Segment,
    DOORBELL_HANDLES,
};
use crate::error::{IpcError, Result};

/// How long a wait that should end at once may take before the test calls it lost: far above
/// any scheduling delay of a loaded machine, far below a test runner's patience.
const LONG: Duration = Duration::from_secs(20);

/// The environment variable that makes a process a test's child; its value is the role.
const ROLE_ENV: &str = "LAPCE_IPC_CONFORMANCE_ROLE";
/// The listener name the child uses.
const NAME_ENV: &str = "LAPCE_IPC_CONFORMANCE_NAME";

/// A listener name no other test, process or run uses (`t-` like the suite's names, so CI's
/// leftover check sees a socket file left behind).
fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("t-cf-{tag}-{}-{}-{nanos:x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The role and listener name of this process when it is a test's child.
fn child_role() -> Option<(String, String)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    Some((role, std::env::var(NAME_ENV).unwrap_or_default()))
}

/// A child process running one test of this binary in a role; killed and reaped on drop (also
/// when the test panics).
struct ChildGuard {
    child: Option<std::process::Child>,
}

impl ChildGuard {
    /// Runs the test `test` (its path from `module_path!()`, crate name included) as `role`.
    fn spawn(test: &str, role: &str, name: &str) -> ChildGuard {
        let test = test.strip_prefix("lapce_ipc::").unwrap_or(test);
        let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
        command
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .env(NAME_ENV, name)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        ChildGuard { child: Some(spawn_retrying(&mut command)) }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the child runs").id()
    }

    /// Whether the child has exited (or was reaped).
    fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Accepts the child's connection on `listener`. A child that exits first, or does not
    /// connect within [`LONG`], fails the test instead of leaving the accept blocked forever.
    fn accept_on(&mut self, listener: &ControlListener) -> ControlStream {
        let accepted = AtomicBool::new(false);
        std::thread::scope(|s| {
            let accept = s.spawn(|| {
                let stream = listener.accept().map(|a| a.stream);
                accepted.store(true, Ordering::SeqCst);
                stream
            });
            let start = Instant::now();
            while !accepted.load(Ordering::SeqCst) {
                if self.exited() || start.elapsed() > LONG {
                    // A connection of our own ends the accept.
                    let _unblock = ControlStream::connect(listener.path(), deadline());
                    let _ = accept.join();
                    panic!("the child did not connect (it exited, or took over {LONG:?})");
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            accept.join().expect("the accepting thread").expect("accept the child")
        })
    }

    /// Kills the child (SIGKILL; TerminateProcess on Windows) and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the child to exit successfully within [`LONG`]; kills it and panics otherwise.
    fn wait_success(&mut self) {
        let mut child = self.child.take().expect("the child runs");
        let deadline = Instant::now() + LONG;
        loop {
            if let Some(status) = child.try_wait().expect("the child's status") {
                assert!(status.success(), "the child failed: {status} (its panic is above)");
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child did not finish within {LONG:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `command`. Under Wine `CreateProcess` now and then fails with ERROR_INTERNAL_ERROR
/// (1359) on a busy machine: that is tried again a few times, any other error fails at once.
fn spawn_retrying(command: &mut Command) -> std::process::Child {
    const INTERNAL_ERROR: i32 = 1359;
    let mut attempt = 1;
    loop {
        match command.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(INTERNAL_ERROR) && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50 * attempt));
            }
            Err(e) => panic!("spawn the child: {e}"),
        }
    }
}

/// Binds a fresh name; returns the listener and the name.
fn bind_unique(tag: &str) -> (ControlListener, String) {
    let name = unique_name(tag);
    let listener = ControlListener::bind(control_path(&name).unwrap(), &[]).unwrap();
    (listener, name)
}

/// Both ends of a control connection in this process: (the listener's, the client's). The
/// listener is dropped (whether its name outlives it while a connection lives differs between
/// backends: see `control::a_dropped_listener_frees_its_name_at_once`).
fn stream_pair(tag: &str) -> (ControlStream, ControlStream) {
    let (listener, name) = bind_unique(tag);
    let client = ControlStream::connect(&control_path(&name).unwrap(), deadline()).unwrap();
    let server = listener.accept().unwrap().stream;
    (server, client)
}

/// Both ends of an established connection in this process (no hang-up callbacks).
fn link_pair(tag: &str) -> (PeerLink, PeerLink) {
    let (server, client) = stream_pair(tag);
    (PeerLink::new(server, Box::new(|| {})).unwrap(), PeerLink::new(client, Box::new(|| {})).unwrap())
}

fn deadline() -> Instant {
    Instant::now() + LONG
}

/// Length of the suite's messages: a kind and a value.
const MSG_LEN: usize = 16;

/// Sends a message with `handles` attached.
fn send(stream: &mut ControlStream, kind: u64, value: u64, handles: &[BorrowedOsHandle<'_>]) -> Result<()> {
    stream.write_all_by(&message(kind, value), handles, deadline())
}

fn message(kind: u64, value: u64) -> [u8; MSG_LEN] {
    let mut msg = [0u8; MSG_LEN];
    msg[..8].copy_from_slice(&kind.to_le_bytes());
    msg[8..].copy_from_slice(&value.to_le_bytes());
    msg
}

/// The kind and value of a message.
fn parse(msg: &[u8; MSG_LEN]) -> (u64, u64) {
    let at = |i: usize| u64::from_le_bytes(msg[i..i + 8].try_into().expect("8 bytes"));
    (at(0), at(8))
}

/// Receives a message of `kind`; returns its value and the handles that came with it.
fn recv(stream: &mut ControlStream, kind: u64) -> Result<(u64, Vec<OsHandle>)> {
    let mut msg = [0u8; MSG_LEN];
    let handles = stream.read_exact_by(&mut msg, deadline())?;
    let (got, value) = parse(&msg);
    if got != kind {
        return Err(IpcError::Handshake(format!("expected message {kind}, got {got}")));
    }
    Ok((value, handles))
}

/// Takes a doorbell end's handles from the front of a received list.
fn doorbell_from(handles: &mut Vec<OsHandle>) -> super::Doorbell {
    assert!(
        handles.len() >= DOORBELL_HANDLES,
        "{} handles, a doorbell needs {DOORBELL_HANDLES}",
        handles.len()
    );
    let rest = handles.split_off(DOORBELL_HANDLES);
    let mine = std::mem::replace(handles, rest);
    super::Doorbell::from_handles(mine.try_into().unwrap_or_else(|_| unreachable!("split to the length")))
        .unwrap()
}

/// Byte `i` of the pattern `seed` (different seeds differ at every byte but a few).
fn pattern(seed: u8, i: usize) -> u8 {
    (i as u8).wrapping_mul(seed | 1).wrapping_add(seed) ^ (i >> 8) as u8
}

/// Fills `len` bytes at `offset` of `seg` with pattern `seed`.
fn fill(seg: &Segment, offset: usize, len: usize, seed: u8) {
    assert!(offset + len <= seg.len());
    for i in 0..len {
        // SAFETY: `offset + i` lies inside the live mapping (checked above); the test holds no
        // Rust reference into it, and the peer writes other bytes or waits.
        unsafe { seg.as_ptr().add(offset + i).write_volatile(pattern(seed, i)) };
    }
}

/// The first byte of `len` at `offset` of `seg` that differs from pattern `seed`, if any.
fn mismatch(seg: &Segment, offset: usize, len: usize, seed: u8) -> Option<usize> {
    assert!(offset + len <= seg.len());
    // SAFETY: as in `fill`: inside the live mapping, read without forming references.
    (0..len).find(|&i| unsafe { seg.as_ptr().add(offset + i).read_volatile() } != pattern(seed, i))
}

/// A 32-bit word of `seg` at `offset` (4-aligned: mappings start page-aligned).
fn word(seg: &Segment, offset: usize) -> &AtomicU32 {
    assert!(offset.is_multiple_of(4) && offset + 4 <= seg.len());
    // SAFETY: the address is 4-aligned and inside the live mapping for as long as `seg` is
    // borrowed; both processes only access these bytes atomically.
    unsafe { &*seg.as_ptr().add(offset).cast::<AtomicU32>() }
}

/// Checks that nothing of listener `name` is left: no socket file (a Unix listener's), and
/// nobody to connect to.
fn assert_name_gone(name: &str) {
    let path = control_path(name).unwrap();
    assert!(!path.exists(), "{} is left behind", path.display());
    // A connect to a missing name fails at once; the deadline only bounds a wait for a busy one.
    match ControlStream::connect(&path, Instant::now() + Duration::from_secs(1)) {
        Err(IpcError::Connect { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{source}")
        }
        Err(e) => panic!("connect to a removed name: expected Connect(NotFound), got {e:?}"),
        Ok(_) => panic!("connected to {} after its listener was dropped", path.display()),
    }
}

/// The shared-memory names process `pid` left in `/dev/shm` (the POSIX backend's segments are
/// named for an instant; none anywhere else).
fn segment_names_of(pid: u32) -> Vec<String> {
    let prefix = format!("lapce-ipc-{pid:08x}");
    let Ok(dir) = std::fs::read_dir("/dev/shm") else { return Vec::new() };
    dir.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}
