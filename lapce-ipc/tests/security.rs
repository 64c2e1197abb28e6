//! Connection security with real processes running as other users: the uid allow-list applied
//! by both sides, refusals counted by the listener, and the rules for an explicit socket
//! directory (`StreamConfig::socket_dir`).
//!
//! The cross-user tests need root: the parent spawns this test binary again (`child_main`)
//! through `std::process::Command` with `CommandExt::uid/gid`, so the privilege drop happens in
//! the freshly forked child before `exec` and the multi-threaded test process never forks on its
//! own. As another user they print "skipped: ..." and pass.

#![cfg(unix)]

use crate::common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{child_role, unique_name, ChildGuard};
use lapce_ipc::{BlockingSharedMemoryListener, BlockingSharedMemoryStream, IpcError, StreamConfig};

/// The `nobody` user (and group) of most Linux distributions.
const NOBODY: u32 = 65534;
/// A uid with no account, allowed by the listener in the cross-user test.
const OTHER: u32 = 4242;
/// Generous bound for "must not hang".
const HANG: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    rustix::process::getuid().is_root()
}

fn own_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// A directory under the system temp dir with `mode`, removed with its contents on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str, mode: u32) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!("/tmp/lipc-sec-{}-{n}-{tag}", std::process::id()));
        fs::create_dir(&path).unwrap();
        let dir = TempDir(path);
        dir.chmod(mode);
        dir
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn chmod(&self, mode: u32) {
        fs::set_permissions(&self.0, fs::Permissions::from_mode(mode)).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Path, allowed: &[u32]) -> StreamConfig {
    StreamConfig {
        socket_dir: Some(dir.to_path_buf()),
        allowed_peer_uids: allowed.to_vec(),
        handshake_timeout: Duration::from_secs(10),
        ..StreamConfig::default()
    }
}

/// The reason of an [`IpcError::InsecurePath`] about `path`; panics on anything else.
fn insecure_reason<T>(result: lapce_ipc::Result<T>, path: &Path) -> String {
    match result {
        Err(IpcError::InsecurePath { path: p, reason }) => {
            assert_eq!(p, path, "the error names the directory");
            reason
        }
        Err(e) => panic!("expected InsecurePath for {}, got {e}", path.display()),
        Ok(_) => panic!("expected InsecurePath for {}, got Ok", path.display()),
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

// ---------------------------------------------------------------------------------------------
// Child processes.

/// Entry point of the child processes; a no-op when run as a normal test.
#[test]
#[ignore = "entry point of the child processes spawned by the other tests"]
fn child_main() {
    let Some((role, arg)) = child_role() else { return };
    let a: Vec<&str> = arg.split('|').collect();
    let (name, dir, uid) = (a[0], Path::new(a[1]), a[2].parse::<u32>().unwrap());
    // The privilege drop really happened (else the test would prove nothing).
    assert_eq!(own_uid(), uid, "child runs as the uid the parent asked for");
    assert_eq!(rustix::process::getgid().as_raw(), uid, "child runs with the matching gid");
    // The child trusts root (the parent) as the owner of the directory and as the server.
    let cfg = config(dir, &[0]);
    match role.as_str() {
        "expect-refused" => match BlockingSharedMemoryStream::connect_with(name, &cfg) {
            Err(IpcError::Handshake(reason)) => {
                assert!(reason.contains("refused"), "{reason}");
                eprintln!("child uid {uid}: refused as expected: {reason}");
            }
            Err(e) => panic!("child uid {uid}: expected a refusal, got {e}"),
            Ok(_) => panic!("child uid {uid}: connected although its uid is not allowed"),
        },
        "expect-denied" => match BlockingSharedMemoryStream::connect_with(name, &cfg) {
            Err(IpcError::Connect { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied, "{source}");
            }
            Err(e) => panic!("child uid {uid}: expected EACCES on connect, got {e}"),
            Ok(_) => panic!("child uid {uid}: reached a socket in a 0700 directory"),
        },
        "ping" => {
            let mut s = BlockingSharedMemoryStream::connect_with(name, &cfg)
                .unwrap_or_else(|e| panic!("child uid {uid}: connect: {e}"));
            s.send(format!("ping from {uid}").as_bytes()).unwrap();
            let reply = s.recv_with(|b| b.to_vec()).unwrap();
            assert_eq!(reply, b"pong");
        }
        other => panic!("unknown role {other}"),
    }
}

/// A child running this test binary as `uid` (and gid `uid`), killed and reaped when dropped.
fn spawn_as(uid: u32, role: &str, name: &str, dir: &Path) -> ChildGuard {
    ChildGuard::spawn_configured(role, &format!("{name}|{}|{uid}", dir.display()), |c| {
        c.uid(uid).gid(uid).current_dir("/");
    })
}

/// Why a child running as another user could not run this binary, if it could not: every
/// directory above it must be searchable by others, the file readable and executable.
fn binary_unreachable_by_others() -> Option<String> {
    let exe = std::env::current_exe().unwrap();
    if mode_of(&exe) & 0o005 != 0o005 {
        return Some(format!("{} is not readable and executable by others", exe.display()));
    }
    for dir in exe.ancestors().skip(1).chain([Path::new("/tmp")]) {
        if fs::metadata(dir).unwrap().permissions().mode() & 0o001 == 0 {
            return Some(format!("{} cannot be traversed by other users", dir.display()));
        }
    }
    None
}

/// Whether cross-user tests can run here; prints why not.
fn cross_user_possible() -> bool {
    if !is_root() {
        println!("skipped: needs root to run a client as another uid");
        return false;
    }
    if let Some(why) = binary_unreachable_by_others() {
        println!("skipped: {why}");
        return false;
    }
    true
}

/// What [`OneAccept`]'s thread saw: the client's pid and its message.
type Accepted = lapce_ipc::Result<(u32, Vec<u8>)>;

/// A thread accepting one client on `listener`, answering its "ping from <uid>" with "pong".
/// Dropped before the client came, it connects once itself (as our own uid, always accepted)
/// so that the thread ends and the listener's socket is removed.
struct OneAccept {
    thread: Option<JoinHandle<Accepted>>,
    name: String,
    config: StreamConfig,
}

impl OneAccept {
    fn start(listener: Arc<BlockingSharedMemoryListener>, name: &str, config: &StreamConfig) -> OneAccept {
        let thread = std::thread::spawn(move || {
            let mut s = listener.accept()?;
            let got = s.recv_with(|b| b.to_vec())?;
            s.send(b"pong")?;
            Ok((s.peer_pid(), got))
        });
        OneAccept { thread: Some(thread), name: name.to_string(), config: config.clone() }
    }

    fn join(&mut self) -> Accepted {
        let thread = self.thread.take().unwrap();
        let deadline = Instant::now() + HANG;
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "the listener did not accept within {HANG:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().unwrap()
    }
}

impl Drop for OneAccept {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if !thread.is_finished() {
                let _ = BlockingSharedMemoryStream::connect_with(&self.name, &self.config);
            }
            let _ = thread.join();
        }
    }
}

/// Polls `listener.rejected()` until it counts `n` (the listener records a refusal just after
/// it has told the client, so the client may exit first), at most `HANG`.
fn rejected_reaches(listener: &BlockingSharedMemoryListener, n: u64) -> lapce_ipc::Rejected {
    let deadline = Instant::now() + HANG;
    loop {
        let r = listener.rejected();
        if r.count >= n || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-user tests (root only).

/// A listener in a 0711 directory allowing uid 4242: `nobody` reaches the socket (mode 0666) but
/// is refused for its uid and counted once with both uids named; uid 4242 is accepted and
/// exchanges a message.
#[test]
fn allow_list_refuses_and_counts_others_and_accepts_the_allowed_uid() {
    if !cross_user_possible() {
        return;
    }
    let dir = TempDir::new("allow", 0o711);
    let name = unique_name("allow");
    let cfg = config(dir.path(), &[OTHER]);
    let listener = Arc::new(BlockingSharedMemoryListener::bind_with(&name, cfg.clone()).unwrap());
    assert_eq!(listener.path(), dir.path().join(format!("{name}.sock")));
    assert_eq!(mode_of(listener.path()), 0o666, "allowed users must be able to connect");
    let mut server = OneAccept::start(listener.clone(), &name, &cfg);

    // Case A: nobody is not on the list.
    spawn_as(NOBODY, "expect-refused", &name, dir.path()).wait_success(HANG);
    let lapce_ipc::Rejected { count, last: reason } = rejected_reaches(&listener, 1);
    assert_eq!(count, 1, "exactly one refusal counted");
    let reason = reason.expect("a reason is kept");
    assert!(reason.contains(&format!("uid {NOBODY}")), "names the peer's uid: {reason}");
    assert!(reason.contains(&format!("uid {}", own_uid())), "names our uid: {reason}");

    // Case B: uid 4242 is, and trusts root (uid 0) as the server.
    let mut child = spawn_as(OTHER, "ping", &name, dir.path());
    let child_pid = child.pid();
    child.wait_success(HANG);
    let (peer_pid, got) = server.join().unwrap();
    assert_eq!(got, format!("ping from {OTHER}").as_bytes());
    assert_eq!(peer_pid, child_pid, "the kernel's pid of the accepted client");
    assert_eq!(listener.rejected().count, 1, "the allowed client was not counted as a refusal");
}

/// Without an allow-list the socket is 0600 in a 0700 directory: another user cannot even
/// reach it (EACCES), and the listener never hears of it.
#[test]
fn without_allow_list_other_users_cannot_reach_the_socket() {
    if !cross_user_possible() {
        return;
    }
    let dir = TempDir::new("private", 0o700);
    let name = unique_name("private");
    let listener = BlockingSharedMemoryListener::bind_with(&name, config(dir.path(), &[])).unwrap();
    assert_eq!(mode_of(listener.path()), 0o600);
    spawn_as(NOBODY, "expect-denied", &name, dir.path()).wait_success(HANG);
    assert_eq!(listener.rejected(), lapce_ipc::Rejected::default(), "nothing reached the listener");
}

// ---------------------------------------------------------------------------------------------
// Socket-directory checks (any user).

#[test]
fn explicit_socket_dir_must_exist_and_is_never_created() {
    let parent = TempDir::new("missing", 0o700);
    let missing = parent.path().join("not-there");
    let name = unique_name("missing");
    let reason =
        insecure_reason(BlockingSharedMemoryListener::bind_with(&name, config(&missing, &[])), &missing);
    assert!(reason.contains("does not exist"), "{reason}");
    assert!(!missing.exists(), "an explicit socket_dir is not created");
    let reason =
        insecure_reason(BlockingSharedMemoryStream::connect_with(&name, &config(&missing, &[])), &missing);
    assert!(reason.contains("does not exist"), "{reason}");
}

#[test]
fn symlinked_socket_dir_is_refused() {
    let parent = TempDir::new("symlink", 0o700);
    let real = parent.path().join("real");
    fs::create_dir(&real).unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
    let link = parent.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let name = unique_name("symlink");
    for allowed in [&[][..], &[OTHER][..]] {
        let reason =
            insecure_reason(BlockingSharedMemoryListener::bind_with(&name, config(&link, allowed)), &link);
        assert!(reason.contains("symlink"), "{reason}");
        let reason =
            insecure_reason(BlockingSharedMemoryStream::connect_with(&name, &config(&link, allowed)), &link);
        assert!(reason.contains("symlink"), "{reason}");
    }
    // The real directory is fine, and the socket lands in it, 0600.
    let listener = BlockingSharedMemoryListener::bind_with(&name, config(&real, &[])).unwrap();
    assert_eq!(listener.path(), real.join(format!("{name}.sock")));
    assert_eq!(mode_of(listener.path()), 0o600);
    drop(listener);
    assert!(!real.join(format!("{name}.sock")).exists(), "the socket file is removed with the listener");
}

#[test]
fn group_or_other_writable_socket_dir_is_refused() {
    let dir = TempDir::new("writable", 0o700);
    let name = unique_name("writable");
    for mode in [0o720, 0o702, 0o770, 0o733, 0o777, 0o1777] {
        dir.chmod(mode);
        for allowed in [&[][..], &[OTHER][..]] {
            let cfg = config(dir.path(), allowed);
            let reason =
                insecure_reason(BlockingSharedMemoryListener::bind_with(&name, cfg.clone()), dir.path());
            assert!(reason.contains("writable by group or others"), "{mode:o}: {reason}");
            assert!(reason.contains(&format!("{mode:o}")), "names the mode: {reason}");
            let reason = insecure_reason(BlockingSharedMemoryStream::connect_with(&name, &cfg), dir.path());
            assert!(reason.contains("writable by group or others"), "{mode:o}: {reason}");
        }
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "no socket was bound");
}

#[test]
fn socket_dir_0711_only_with_an_allow_list() {
    let dir = TempDir::new("0711", 0o711);
    let name = unique_name("0711");
    let reason =
        insecure_reason(BlockingSharedMemoryListener::bind_with(&name, config(dir.path(), &[])), dir.path());
    assert!(reason.contains("want 0700") && reason.contains("711"), "{reason}");
    let reason = insecure_reason(
        BlockingSharedMemoryStream::connect_with(&name, &config(dir.path(), &[])),
        dir.path(),
    );
    assert!(reason.contains("want 0700"), "{reason}");
    for mode in [0o711, 0o750, 0o755] {
        dir.chmod(mode);
        let listener = BlockingSharedMemoryListener::bind_with(&name, config(dir.path(), &[OTHER]))
            .unwrap_or_else(|e| panic!("mode {mode:o} with an allow-list: {e}"));
        assert_eq!(mode_of(listener.path()), 0o666, "allowed users can connect");
    }
    // Back to 0700 without a list: the default rules, a 0600 socket.
    dir.chmod(0o700);
    let listener = BlockingSharedMemoryListener::bind_with(&name, config(dir.path(), &[])).unwrap();
    assert_eq!(mode_of(listener.path()), 0o600);
}

#[test]
fn socket_dir_owned_by_another_uid_is_refused() {
    let (_dir, path, owner) = if is_root() {
        let dir = TempDir::new("owner", 0o700);
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        let path = dir.path().to_path_buf();
        (Some(dir), path, NOBODY)
    } else {
        // Not root: "/" is someone else's (root's) and not writable by us.
        (None, PathBuf::from("/"), fs::metadata("/").unwrap().uid())
    };
    assert_ne!(owner, own_uid());
    let name = unique_name("owner");
    let want = format!("owned by uid {owner}");
    for allowed in [&[][..], &[owner][..]] {
        // A listener only binds in its own directory, whatever the list says.
        let reason =
            insecure_reason(BlockingSharedMemoryListener::bind_with(&name, config(&path, allowed)), &path);
        assert!(reason.contains(&want), "{reason}");
    }
    let reason = insecure_reason(BlockingSharedMemoryStream::connect_with(&name, &config(&path, &[])), &path);
    assert!(reason.contains(&want), "{reason}");
    if is_root() {
        // A client trusts a directory owned by an allowed uid: the check passes and the connect
        // itself fails (nobody listens there).
        match BlockingSharedMemoryStream::connect_with(&name, &config(&path, &[owner])) {
            Err(IpcError::Connect { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{source}")
            }
            Err(e) => panic!("expected a failed connect past the directory check, got {e}"),
            Ok(_) => panic!("connected to nothing"),
        }
    }
}

#[test]
fn socket_dir_must_be_an_absolute_directory() {
    let parent = TempDir::new("file", 0o700);
    let file = parent.path().join("plain");
    fs::write(&file, b"").unwrap();
    let name = unique_name("file");
    let reason = insecure_reason(BlockingSharedMemoryListener::bind_with(&name, config(&file, &[])), &file);
    assert!(reason.contains("not a directory"), "{reason}");
    let relative = Path::new("relative/dir");
    let reason =
        insecure_reason(BlockingSharedMemoryListener::bind_with(&name, config(relative, &[])), relative);
    assert!(reason.contains("absolute"), "{reason}");
}

/// An allow-list without a `socket_dir` could never let anyone in (nobody else can enter the
/// 0700 runtime directory): both sides refuse it, saying so, instead of binding a socket the
/// allowed users cannot reach.
#[test]
fn an_allow_list_without_a_socket_dir_is_refused() {
    let name = unique_name("allow-no-dir");
    let config = StreamConfig { allowed_peer_uids: vec![own_uid() + 1], ..StreamConfig::default() };
    for result in [
        BlockingSharedMemoryListener::bind_with(&name, config.clone()).map(|_| ()),
        BlockingSharedMemoryStream::connect_with(&name, &config).map(|_| ()),
    ] {
        match result {
            Err(IpcError::InvalidArgument(reason)) => {
                assert!(reason.contains("needs a socket_dir"), "{reason}")
            }
            other => panic!("expected a refusal of the allow-list, got {other:?}"),
        }
    }
    assert!(!lapce_ipc::socket_path(&name).unwrap().exists(), "nothing was bound");
}

/// The default placement is what it was: `socket_path(name)` in the 0700 runtime directory owned
/// by us, socket 0600.
#[test]
fn default_socket_path_is_unchanged() {
    let name = unique_name("default");
    let listener = BlockingSharedMemoryListener::bind(&name).unwrap();
    assert_eq!(listener.path(), lapce_ipc::socket_path(&name).unwrap());
    assert_eq!(mode_of(listener.path()), 0o600);
    let dir = listener.path().parent().unwrap();
    let meta = fs::symlink_metadata(dir).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.uid(), own_uid());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
}

/// An [`IpcServer`](lapce_ipc::IpcServer) surfaces its listener's refusals: a client with a
/// broken hello is answered with a refusal and counted in `handshakes_refused`, and a good
/// client afterwards is not.
#[test]
fn server_stats_count_refused_handshakes() {
    use std::io::{Read, Write};

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let name = unique_name("stats");
    let server =
        rt.block_on(async { lapce_ipc::IpcServer::bind(&name, lapce_ipc::IpcConfig::default()) }).unwrap();
    let serving = rt.spawn({
        let server = server.clone();
        async move { server.serve().await }
    });
    assert_eq!(server.stats().handshakes_refused, 0);

    let mut raw = std::os::unix::net::UnixStream::connect(server.path()).unwrap();
    raw.set_read_timeout(Some(HANG)).unwrap();
    raw.write_all(&[0u8; 24]).unwrap(); // bad magic
    let mut answer = [0u8; 48];
    raw.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[0..8], b"LAPCSRVR");
    assert_eq!(u32::from_le_bytes(answer[12..16].try_into().unwrap()), 2, "status: refused");
    drop(raw);
    let deadline = Instant::now() + HANG;
    while server.stats().handshakes_refused < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(server.stats().handshakes_refused, 1);

    let good = rt.block_on(async { lapce_ipc::SharedMemoryStream::connect(&name).await.map(drop) });
    good.unwrap();
    assert_eq!(server.stats().handshakes_refused, 1, "a good client is not a refusal");
    server.shutdown(Duration::ZERO);
    rt.block_on(serving).unwrap().unwrap();
    let path = server.path().to_path_buf();
    drop(server);
    assert!(!path.exists(), "the socket file is removed with the server");
}

/// The same allow-list through the configuration file's keys and the tokio listener of an
/// [`IpcServer`](lapce_ipc::IpcServer): `nobody` is refused and shows up in
/// `handshakes_refused`.
#[test]
fn ipc_server_with_allowed_uids_counts_a_refused_user() {
    if !cross_user_possible() {
        return;
    }
    let dir = TempDir::new("server", 0o711);
    let name = unique_name("server");
    let mut config = lapce_ipc::IpcConfig::default();
    config.ipc.socket_dir = dir.path().to_str().unwrap().to_owned();
    config.ipc.allowed_uids = vec![OTHER];
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = rt.block_on(async { lapce_ipc::IpcServer::bind(&name, config) }).unwrap();
    assert_eq!(server.path(), dir.path().join(format!("{name}.sock")));
    assert_eq!(mode_of(server.path()), 0o666);
    let serving = rt.spawn({
        let server = server.clone();
        async move { server.serve().await }
    });
    spawn_as(NOBODY, "expect-refused", &name, dir.path()).wait_success(HANG);
    let deadline = Instant::now() + HANG;
    while server.stats().handshakes_refused < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let stats = server.stats();
    assert_eq!((stats.handshakes_refused, stats.connections_accepted), (1, 0));
    server.shutdown(Duration::ZERO);
    rt.block_on(serving).unwrap().unwrap();
}
