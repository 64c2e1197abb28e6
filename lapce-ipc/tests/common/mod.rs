//! Shared helpers for the cross-process tests: unique names, child processes that are always
//! reaped, deterministic message contents.
//!
//! A test spawns its peer by re-running the test binary with `--ignored --exact child_main`
//! (`rpc::child_main` in the `suite` binary, whose tests are modules named after their files);
//! the `child_main` entry point of each test file reads the role from the environment.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const ROLE_ENV: &str = "LAPCE_IPC_TEST_ROLE";
pub const ARG_ENV: &str = "LAPCE_IPC_TEST_ARG";

/// A listener name no other test (or test run) uses.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("t-{tag}-{}-{}-{nanos:x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The full name of the test `test` in the file of the (tracked) caller: in the `suite` binary
/// each file is a module, so `child_main` of `tests/rpc.rs` is `rpc::child_main`; a file that is
/// a binary of its own has its tests at its root.
#[track_caller]
pub fn test_in_caller_file(test: &str) -> String {
    if !module_path!().starts_with("suite::") {
        return test.to_string();
    }
    let file = std::path::Path::new(std::panic::Location::caller().file());
    let module = file.file_stem().and_then(|s| s.to_str()).expect("a test file name");
    format!("{module}::{test}")
}

/// Starts `command`. Under Wine, `CreateProcess` now and then fails with ERROR_INTERNAL_ERROR
/// (1359) when the machine is busy (seen once in the Windows suite, 2026-12-04); that is tried
/// again a few times, any other error fails the test at once.
fn spawn_retrying(command: &mut Command) -> Child {
    const INTERNAL_ERROR: i32 = 1359;
    let mut attempt = 1;
    loop {
        match command.spawn() {
            Ok(child) => return child,
            Err(e) if cfg!(windows) && e.raw_os_error() == Some(INTERNAL_ERROR) && attempt < 5 => {
                eprintln!("spawn child: {e} (attempt {attempt}), trying again");
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50 * attempt));
            }
            Err(e) => panic!("spawn child: {e}"),
        }
    }
}

/// A spawned peer process, killed and reaped when dropped (also when the test panics).
pub struct ChildGuard {
    child: Option<Child>,
    role: String,
    /// The socket file of the listener the child runs, if the test said so
    /// ([`listening_on`](Self::listening_on)): a killed listener cannot remove it itself.
    socket: Option<std::path::PathBuf>,
}

impl ChildGuard {
    /// Re-runs this test binary as `role` with argument `arg`: the `child_main` of the file that
    /// calls.
    #[track_caller]
    pub fn spawn(role: &str, arg: &str) -> ChildGuard {
        Self::spawn_with_env(role, arg, &[])
    }

    /// Like [`spawn`](Self::spawn), with extra environment variables.
    #[track_caller]
    pub fn spawn_with_env(role: &str, arg: &str, env: &[(&str, &std::ffi::OsStr)]) -> ChildGuard {
        Self::spawn_configured(role, arg, |c| {
            c.envs(env.iter().copied());
        })
    }

    /// Like [`spawn`](Self::spawn), with `configure` setting more of the command (environment,
    /// user, working directory) before it starts.
    #[track_caller]
    pub fn spawn_configured(role: &str, arg: &str, configure: impl FnOnce(&mut Command)) -> ChildGuard {
        let exe = std::env::current_exe().expect("test binary path");
        let mut command = Command::new(exe);
        command
            .args([
                "--ignored",
                "--exact",
                &test_in_caller_file("child_main"),
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_ENV, role)
            .env(ARG_ENV, arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        configure(&mut command);
        let child = spawn_retrying(&mut command);
        ChildGuard { child: Some(child), role: role.to_string(), socket: None }
    }

    /// Says that the child binds a listener named `name` with the default configuration, so
    /// that killing it also removes the socket file it leaves (SIGKILL gives it no chance to).
    /// Not for a test that kills a server to see what its successor does with the stale file.
    pub fn listening_on(mut self, name: &str) -> ChildGuard {
        self.socket = Some(lapce_ipc::socket_path(name).expect("a valid listener name"));
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGKILL and reaps the child, then removes any segment name and socket file it left.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            self.kill_and_clean(c);
        }
    }

    fn kill_and_clean(&mut self, mut c: Child) {
        let _ = c.kill();
        let _ = c.wait();
        remove_segment_names_of(c.id());
        // A named pipe on Windows goes with its last handle; a Unix socket file stays.
        if let Some(path) = self.socket.take().filter(|_| cfg!(unix)) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Waits for the child to exit successfully within `timeout`; kills it and panics otherwise.
    pub fn wait_success(&mut self, timeout: Duration) {
        let mut c = self.child.take().expect("child already reaped");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "child {} failed: {status}", self.role);
                return;
            }
            if Instant::now() > deadline {
                self.kill_and_clean(c);
                panic!("child {} did not finish within {timeout:?}", self.role);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The names in /dev/shm that the process `pid` made. The posix backend names a segment
/// `/lapce-ipc-<creator pid in 8 hex digits><8 more>` and unlinks the name right after creating
/// it, so a name lasts only if its creator died between the two. None for the memfd backend,
/// which names nothing, or where /dev/shm cannot be listed.
pub fn segment_names_of(pid: u32) -> Vec<String> {
    let prefix = format!("lapce-ipc-{pid:08x}");
    let Ok(dir) = std::fs::read_dir("/dev/shm") else { return Vec::new() };
    dir.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Removes the shared-memory names of [`segment_names_of`] (a killed child's: a CI run found
/// one) and returns them.
pub fn remove_segment_names_of(pid: u32) -> Vec<String> {
    let names = segment_names_of(pid);
    for n in &names {
        let _ = std::fs::remove_file(format!("/dev/shm/{n}"));
    }
    names
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The role and argument this process was started with, if it is a spawned child. Also makes
/// the child die with its parent, so an aborted test run leaves no orphans.
pub fn child_role() -> Option<(String, String)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    let arg = std::env::var(ARG_ENV).unwrap_or_default();
    // Linux only; elsewhere the parent's `ChildGuard` is what reaps children.
    #[cfg(target_os = "linux")]
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    Some((role, arg))
}

/// Registers the test servers' counting stream on `server` for `kind`: the request is a number
/// `n` in decimal, the chunks are `0`, `1`, ... `n - 1` in decimal.
pub fn register_count(server: &lapce_ipc::IpcServer, kind: lapce_ipc::frame::MessageType) {
    use lapce_ipc::messages::{ErrorBody, ErrorCode};
    server.register_stream_handler(kind, |p: bytes::Bytes, out| async move {
        let bad = |e: String| ErrorBody::new(ErrorCode::BAD_REQUEST, format!("not a count: {e}"));
        let n: u64 = std::str::from_utf8(&p)
            .map_err(|e| bad(e.to_string()))?
            .parse()
            .map_err(|e| bad(format!("{e}")))?;
        for i in 0..n {
            out.send(i.to_string()).await.map_err(|e| ErrorBody::new(ErrorCode::INTERNAL, e.to_string()))?;
        }
        Ok(())
    });
}

/// SplitMix64: a tiny deterministic generator, so both processes derive the same sequence.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Message `seq` of a stream seeded with `seed`: length in `0..=max`, contents derived from
/// `seq`, so the receiver can rebuild and compare every byte.
pub fn message(seed: u64, seq: u64, max: usize, out: &mut Vec<u8>) {
    let mut rng = Rng(seed ^ seq.wrapping_mul(0xA24B_AED4_963E_E407));
    let len = rng.below(max as u64 + 1) as usize;
    out.clear();
    let start = rng.next();
    out.extend((0..len).map(|i| (start.wrapping_add(i as u64 * 0x9E37) >> 8) as u8));
    let tag = seq.to_le_bytes();
    let n = len.min(8);
    out[..n].copy_from_slice(&tag[..n]);
}

/// Connects to `name` with `config`, retrying while no listener is bound yet (the peer process
/// may still be starting) for up to a minute; panics on any other error.
pub fn connect_retry_with(
    name: &str,
    config: &lapce_ipc::StreamConfig,
) -> lapce_ipc::BlockingSharedMemoryStream {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match lapce_ipc::BlockingSharedMemoryStream::connect_with(name, config) {
            Ok(s) => return s,
            Err(lapce_ipc::IpcError::Connect { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("connect {name}: {e}"),
        }
    }
}

/// An [`IpcClient`](lapce_ipc::IpcClient) of `name` with `config`, retrying while no listener is
/// bound yet (the server process may still be starting) for up to a minute; panics on any other
/// error.
pub async fn connect_client(name: &str, config: lapce_ipc::IpcConfig) -> lapce_ipc::IpcClient {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match lapce_ipc::IpcClient::connect(name, config.clone()).await {
            Ok(c) => return c,
            Err(lapce_ipc::IpcError::Connect { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await
            }
            Err(e) => panic!("connect {name}: {e}"),
        }
    }
}

/// [`connect_retry_with`] the default configuration.
pub fn connect_retry(name: &str) -> lapce_ipc::BlockingSharedMemoryStream {
    connect_retry_with(name, &lapce_ipc::StreamConfig::default())
}

/// A raw connection to a listener's control channel, to play a broken or outdated client: a
/// Unix socket, or on Windows the named pipe opened as a file.
#[cfg(unix)]
pub fn raw_connect(path: &std::path::Path) -> std::os::unix::net::UnixStream {
    std::os::unix::net::UnixStream::connect(path).unwrap()
}

/// A raw connection to a listener's control channel (see the Unix version).
#[cfg(windows)]
pub fn raw_connect(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap()
}

/// Bytes every control message carries after its body: on Windows a handle trailer (count,
/// reserved), see docs/PROTOCOL.md §2; nothing on Unix, where descriptors travel out of band.
pub const HANDLE_TRAILER: usize = if cfg!(windows) { 8 } else { 0 };

/// A control message with `body` and no handles, as it travels on this platform.
pub fn raw_message(body: &[u8]) -> Vec<u8> {
    let mut m = body.to_vec();
    m.resize(body.len() + HANDLE_TRAILER, 0);
    m
}
