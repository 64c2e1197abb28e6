//! Server children: the parent's guard of one ([`ServerProcess`]), and the child's side: its
//! `ready` line and its death with the parent.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ChildArgs;
use crate::error::{Error, Result};

/// A server child process, killed and reaped when dropped (also on error and panic).
///
/// A watchdog thread kills the child once `timeout` has passed since it was spawned, so a
/// server that stops answering turns a blocked client call into an error (the client sees the
/// connection close) instead of a hang. Paths given as `cleanup` (the child's socket files) are
/// removed after the child is gone, in case it was killed before it could remove them.
///
/// Outside Linux the child's stdin is a pipe that stays open as long as this guard: the child
/// exits when it reads end of file, that is when the parent process is gone (see
/// [`die_with_parent`]).
pub struct ServerProcess {
    child: Arc<Mutex<Child>>,
    pid: u32,
    timeout: Duration,
    timed_out: Arc<AtomicBool>,
    /// Dropping the sender stops the watchdog.
    watchdog: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    /// Lines the child prints on stdout.
    lines: mpsc::Receiver<String>,
    stdout_reader: Option<JoinHandle<()>>,
    /// The child's stdin (outside Linux), closed after the child is gone.
    stdin: Option<ChildStdin>,
    reaped: bool,
    cleanup: Vec<PathBuf>,
}

impl ServerProcess {
    /// Re-executes the current binary as the child `args` describe, under a watchdog of
    /// `timeout`.
    pub fn spawn(args: &impl ChildArgs, timeout: Duration, cleanup: Vec<PathBuf>) -> Result<ServerProcess> {
        Self::spawn_with_env(args, &[], timeout, cleanup)
    }

    /// [`spawn`](Self::spawn) with `env` added to the child's environment.
    pub fn spawn_with_env(
        args: &impl ChildArgs,
        env: &[(&str, &str)],
        timeout: Duration,
        cleanup: Vec<PathBuf>,
    ) -> Result<ServerProcess> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the current executable: {e}"))?;
        // Linux ends the child with a parent-death signal; elsewhere it watches its stdin.
        let stdin = if cfg!(target_os = "linux") { Stdio::null() } else { Stdio::piped() };
        let mut child = Command::new(&exe)
            .args(args.to_args())
            .envs(env.iter().copied())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take();
        let child = Arc::new(Mutex::new(child));

        let (line_tx, lines) = mpsc::channel();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });

        let timed_out = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let watchdog = {
            let child = Arc::clone(&child);
            let timed_out = Arc::clone(&timed_out);
            std::thread::spawn(move || {
                if let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(timeout) {
                    timed_out.store(true, Ordering::SeqCst);
                    let _ = lock(&child).kill();
                }
            })
        };

        Ok(ServerProcess {
            child,
            pid,
            timeout,
            timed_out,
            watchdog: Some((stop_tx, watchdog)),
            lines,
            stdout_reader: Some(stdout_reader),
            stdin,
            reaped: false,
            cleanup,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the child at once (SIGKILL on Unix) and reaps it.
    pub fn kill(&mut self) {
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
        self.reaped = true;
    }

    /// Whether the watchdog killed the child.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }

    /// Replaces `err` by a timeout message if the watchdog killed the child (that is then the
    /// real cause of whatever the client saw).
    pub fn explain(&self, err: Error) -> Error {
        if self.timed_out() {
            format!("server did not finish within {} s and was killed ({err})", self.timeout.as_secs()).into()
        } else {
            err
        }
    }

    /// Waits for the child's `ready` line (it listens). Bounded by the watchdog.
    pub fn wait_ready(&mut self) -> Result<()> {
        match self.lines.recv() {
            Ok(line) if line == "ready" => Ok(()),
            Ok(line) => Err(format!("unexpected line from the server: {line:?}").into()),
            Err(_) => {
                let status = self.wait_exit(Duration::from_secs(5));
                let err = format!("server exited before it was ready ({})", describe(status)).into();
                Err(self.explain(err))
            }
        }
    }

    /// Waits (at most `grace`) for the child to exit after the client closed its connection,
    /// and checks that it exited successfully.
    pub fn finish(mut self, grace: Duration) -> Result<()> {
        match self.wait_exit(grace) {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(self.explain(format!("server failed ({})", describe(Some(status))).into())),
            None => {
                Err(format!("server did not exit within {} s of the end of the test", grace.as_secs()).into())
            }
        }
    }

    /// Polls for the child's exit for up to `grace`; `None` if it is still running.
    fn wait_exit(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        loop {
            match lock(&self.child).try_wait() {
                Ok(Some(status)) => {
                    self.reaped = true;
                    return Some(status);
                }
                Ok(None) => {}
                Err(_) => return None,
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some((stop, watchdog)) = self.watchdog.take() {
            drop(stop);
            let _ = watchdog.join();
        }
        if !self.reaped {
            let mut child = lock(&self.child);
            let _ = child.kill();
            let _ = child.wait();
        }
        // The child is gone, so its stdout is closed and the reader ends.
        if let Some(reader) = self.stdout_reader.take() {
            let _ = reader.join();
        }
        drop(self.stdin.take());
        for path in &self.cleanup {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Locks the child, ignoring poisoning (a panicking holder cannot leave a `Child` half-updated
/// in a way that matters for kill and wait).
fn lock(child: &Mutex<Child>) -> MutexGuard<'_, Child> {
    child.lock().unwrap_or_else(|e| e.into_inner())
}

/// Describes an exit status for an error message.
fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => s.to_string(),
        None => "still running".into(),
    }
}

/// Child side: tells the parent that the server listens (one `ready` line on stdout).
pub fn announce_ready() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    Ok(())
}

/// Child side, when started by the parent process `parent_pid`: makes this process die with its
/// parent, and exits at once if the parent is already gone.
///
/// On Linux the kernel kills it (parent-death signal). Elsewhere a thread waits for end of file
/// on stdin, a pipe whose other end only the parent holds ([`ServerProcess`]), and exits then;
/// the parent's guard and watchdog also kill the child whenever the parent ends normally.
pub fn die_with_parent(parent_pid: Option<u32>) -> Result<()> {
    #[cfg(target_os = "linux")]
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    let Some(expected) = parent_pid else { return Ok(()) };
    #[cfg(unix)]
    {
        let ppid = rustix::process::getppid().map(|p| p.as_raw_pid() as u32);
        if ppid != Some(expected) {
            return Err(format!("parent {expected} is gone").into());
        }
    }
    #[cfg(not(target_os = "linux"))]
    std::thread::spawn(move || {
        use std::io::Read;
        let mut byte = [0u8; 1];
        // The parent never writes: any return means its end was closed.
        while let Ok(1) = std::io::stdin().read(&mut byte) {}
        eprintln!("bench-server: parent {expected} is gone, exiting");
        std::process::exit(1);
    });
    Ok(())
}
