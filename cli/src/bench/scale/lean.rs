//! The lean server: the library's smallest server (`examples/echo_server`), measured idle for
//! the RSS target of `bench --scale`, as the footprint an application embedding the library
//! would have.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::SETTLE;
use crate::footprint::{footprint, Footprint};

/// The library's smallest server, `examples/echo_server` (an `IpcServer` with the default
/// configuration and an echo handler, nothing else), next to this binary when built with
/// `cargo build --release -p lapce-ipc --example echo_server`.
fn lean_server_path() -> std::result::Result<std::path::PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this binary: {e}"))?;
    let dir = exe.parent().ok_or("this binary has no directory")?;
    let lean = dir.join("examples").join(format!("echo_server{}", std::env::consts::EXE_SUFFIX));
    if lean.is_file() {
        Ok(lean)
    } else {
        Err(format!(
            "not built ({}; build it with `cargo build --release -p lapce-ipc --example echo_server`)",
            lean.display()
        ))
    }
}

/// A lean server child, killed and reaped when dropped, its socket file removed.
struct LeanServer {
    child: Child,
    name: String,
}

impl Drop for LeanServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Killed, it could not remove its socket file.
        if let Ok(path) = lapce_ipc::socket_path(&self.name) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts of the lean server measured idle: its RSS varies by a few percent from one start to
/// the next (mostly which pages of the C library the kernel maps along with the ones touched),
/// so the target is judged on the median.
pub const LEAN_STARTS: usize = 3;

/// The lean server idle: the start with the median RSS of [`LEAN_STARTS`], and the RSS range.
#[derive(Debug, Clone, Copy)]
pub struct LeanIdle {
    /// The start with the median RSS.
    pub median: Footprint,
    /// The smallest RSS of the starts, KiB.
    pub rss_min_kib: Option<u64>,
    /// The largest, KiB.
    pub rss_max_kib: Option<u64>,
}

/// The idle footprint of the lean server ([`lean_server_path`]), as the one an application
/// embedding the library would have: the CLI's own server carries the benchmark suite, the
/// plots and the CLI's dependencies in its binary, whose pages count in its RSS.
pub fn lean_server_idle() -> std::result::Result<LeanIdle, String> {
    let mut starts = (0..LEAN_STARTS).map(lean_server_start).collect::<std::result::Result<Vec<_>, _>>()?;
    starts.sort_by_key(|f| f.rss_kib);
    let rss = starts.iter().filter_map(|f| f.rss_kib);
    Ok(LeanIdle { median: starts[LEAN_STARTS / 2], rss_min_kib: rss.clone().min(), rss_max_kib: rss.max() })
}

/// One start of the lean server: its footprint once it listens and has settled.
fn lean_server_start(start: usize) -> std::result::Result<Footprint, String> {
    let path = lean_server_path()?;
    let name = format!("lean-idle-{}-{start}", std::process::id());
    let child = Command::new(&path)
        .arg(&name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
    let mut lean = LeanServer { child, name };
    let stdout = lean.child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    // It prints one line once it listens; EOF means it died.
    BufReader::new(stdout).read_line(&mut line).map_err(|e| format!("reading its output: {e}"))?;
    if !line.starts_with("listening on ") {
        return Err(format!("{} did not start: {:?}", path.display(), line.trim()));
    }
    std::thread::sleep(SETTLE);
    Ok(footprint(lean.child.id()))
}
