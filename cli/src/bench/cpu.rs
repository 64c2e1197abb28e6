//! Where the bench's processes run and what CPU they use: pinning (Linux) and CPU time from
//! `/proc` (Unix; not available on Windows).

#[cfg(target_os = "linux")]
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

use super::measure::Result;

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

/// Where the client and the server run.
#[derive(Debug, Clone)]
pub enum Pinning {
    /// The client (this thread) is pinned to `client`, servers to `server`.
    Pinned { client: usize, server: usize },
    /// Only one CPU is available: nothing is pinned, client and server share it.
    SingleCpu,
    /// Nothing is pinned, for the reason given.
    NotPinned(String),
}

impl Pinning {
    /// Pins the calling thread (the client) to the first allowed CPU and picks the second for
    /// the servers, when there are two.
    pub fn setup() -> Pinning {
        let cpus = allowed_cpus();
        match cpus.as_slice() {
            [client, server, ..] => match pin_current_thread(*client) {
                Ok(()) => Pinning::Pinned { client: *client, server: *server },
                Err(e) => Pinning::NotPinned(e.to_string()),
            },
            [_] => Pinning::SingleCpu,
            [] if !cfg!(target_os = "linux") => {
                if std::thread::available_parallelism().is_ok_and(|n| n.get() == 1) {
                    Pinning::SingleCpu
                } else {
                    Pinning::NotPinned("not available on this platform".into())
                }
            }
            [] => Pinning::NotPinned("CPU affinity unknown".into()),
        }
    }

    /// The CPU for servers, if pinned.
    pub fn server_cpu(&self) -> Option<usize> {
        match self {
            Pinning::Pinned { server, .. } => Some(*server),
            Pinning::SingleCpu | Pinning::NotPinned(_) => None,
        }
    }

    /// One line for the output.
    pub fn describe(&self) -> String {
        match self {
            Pinning::Pinned { client, server } => {
                format!("pinned: client cpu{client}, server cpu{server}")
            }
            Pinning::SingleCpu => "not pinned (1 CPU)".into(),
            Pinning::NotPinned(why) => format!("not pinned ({why})"),
        }
    }
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
