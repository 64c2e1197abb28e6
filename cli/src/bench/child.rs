//! Process plumbing: the server child and its guard, CPU pinning (Linux), and CPU time from
//! `/proc` (Unix; not available on Windows).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

use super::measure::Result;

/// A server child process, killed and reaped when dropped (also on error and panic).
///
/// A watchdog thread kills the child once `timeout` has passed since it was spawned, so a
/// server that stops answering turns a blocked client call into an error (the client sees the
/// connection close) instead of a hang. Paths given as `cleanup` (the child's socket files) are
/// removed after the child is gone, in case it was killed before it could remove them.
///
/// Outside Linux the child's stdin is a pipe that stays open as long as this guard: the child
/// exits when it reads end of file, that is when the bench process is gone (see
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
    /// Re-executes the current binary with `args`, under a watchdog of `timeout`.
    pub fn spawn(args: &[OsString], timeout: Duration, cleanup: Vec<PathBuf>) -> Result<ServerProcess> {
        Self::spawn_with_env(args, &[], timeout, cleanup)
    }

    /// [`spawn`](Self::spawn) with `env` added to the child's environment.
    pub fn spawn_with_env(
        args: &[OsString],
        env: &[(&str, &str)],
        timeout: Duration,
        cleanup: Vec<PathBuf>,
    ) -> Result<ServerProcess> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the current executable: {e}"))?;
        // Linux ends the child with a parent-death signal; elsewhere it watches its stdin.
        let stdin = if cfg!(target_os = "linux") { Stdio::null() } else { Stdio::piped() };
        let mut child = Command::new(&exe)
            .args(args)
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
    pub fn explain(&self, err: crate::bench::measure::Error) -> crate::bench::measure::Error {
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

/// Child side, when started by the bench process `parent_pid`: makes this process die with its
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

/// The CPUs this thread may run on, in increasing order.
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU).filter(|&cpu| set.is_set(cpu)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins the calling thread to `cpu` (threads it spawns afterwards inherit the pinning).
#[cfg(target_os = "linux")]
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).map_err(|e| format!("cannot pin to cpu{cpu}: {e}"))?;
    Ok(())
}

/// Lets the calling thread run on any of `cpus` (an unpinned thread of an ordinary program;
/// threads it spawns afterwards inherit that). Nothing to do without CPU affinity.
#[cfg(target_os = "linux")]
pub fn allow_cpus(cpus: &[usize]) -> Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu);
    }
    sched_setaffinity(None, &set).map_err(|e| format!("cannot allow cpus {cpus:?}: {e}"))?;
    Ok(())
}

/// See the Linux version: nothing is pinned on this platform.
#[cfg(not(target_os = "linux"))]
pub fn allow_cpus(_cpus: &[usize]) -> Result<()> {
    Ok(())
}

/// Pins the main thread of process `pid` (a Node.js peer's event loop) to `cpu`.
#[cfg(target_os = "linux")]
pub fn pin_process(pid: u32, cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu);
    let pid = rustix::process::Pid::from_raw(pid as i32).ok_or("pid 0")?;
    sched_setaffinity(Some(pid), &set).map_err(|e| format!("cannot pin pid {pid:?} to cpu{cpu}: {e}"))?;
    Ok(())
}

/// See the Linux version; unreachable without allowed CPUs.
#[cfg(not(target_os = "linux"))]
pub fn pin_process(pid: u32, cpu: usize) -> Result<()> {
    Err(format!("cannot pin pid {pid} to cpu{cpu}: no CPU affinity on this platform").into())
}

/// No CPU affinity here (macOS has no API for it; on Windows it would take `unsafe` FFI): the
/// bench runs unpinned and says so.
#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

/// See the Linux version; unreachable without allowed CPUs.
#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    Err(format!("cannot pin to cpu{cpu}: no CPU affinity on this platform").into())
}

/// CPU time a process has used so far, from `/proc`.
#[cfg(unix)]
#[derive(Debug, Clone, Copy)]
pub struct CpuTime {
    /// `utime + stime` from `/proc/<pid>/stat`, in clock ticks.
    pub ticks: u64,
    /// Sum over the process's threads of the time on CPU from `/proc/<pid>/task/*/schedstat`,
    /// in nanoseconds, when the kernel provides it.
    pub sched_ns: Option<u64>,
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
#[cfg(unix)]
pub fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// Reads the CPU time of process `pid`.
#[cfg(unix)]
pub fn process_cpu_time(pid: u32) -> Result<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or_else(|| format!("cannot parse /proc/{pid}/stat"))?;
    Ok(CpuTime { ticks, sched_ns: sched_ns(pid) })
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may contain spaces, so fields are counted after its closing `)`.
#[cfg(unix)]
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 (state) is index 0
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Time on CPU of all threads of `pid` in nanoseconds, from their `schedstat` files.
#[cfg(unix)]
fn sched_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let line = "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 100 1000 10";
        assert_eq!(parse_stat_cpu_ticks(line), Some(12));
    }

    #[test]
    fn reads_own_cpu_time() {
        let t = process_cpu_time(std::process::id()).unwrap();
        assert!(t.ticks < u64::MAX);
        assert!(ticks_per_second() > 0);
    }
}
