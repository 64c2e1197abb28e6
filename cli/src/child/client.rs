//! Client children: the parent's guard of one ([`ClientProcess`]), and the child's side of the
//! line protocol (see the [module doc](super)).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::ChildArgs;
use crate::error::Result;
use crate::histogram::new_histogram;

/// A client child, killed and reaped when dropped.
pub struct ClientProcess {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
}

impl ClientProcess {
    /// Re-executes the current binary as the child `args` describe, its stdin and stdout piped
    /// to this process.
    pub fn spawn(args: &impl ChildArgs) -> Result<ClientProcess> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the current executable: {e}"))?;
        let mut child = Command::new(&exe)
            .args(args.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ClientProcess { child, stdin, lines, reader: Some(reader) })
    }

    /// Sends one line to the child.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("client stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// The child's next line, within `timeout`; its `error ...` lines become errors.
    pub fn line(&mut self, timeout: Duration, what: &str) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => match line.strip_prefix("error ") {
                Some(e) => Err(format!("client process {}: {e}", self.child.id()).into()),
                None => Ok(line),
            },
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "client process {} did not {what} within {} s",
                self.child.id(),
                timeout.as_secs()
            )
            .into()),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(format!("client process {} exited before it could {what} ({status})", self.child.id())
                    .into())
            }
        }
    }

    /// Tells the child to close and waits (at most `grace`) for it to exit.
    pub fn close(mut self, grace: Duration) -> Result<()> {
        let _ = self.send("close");
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("client process failed ({status})").into())
                };
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "client process {} did not exit within {} s",
                    self.child.id(),
                    grace.as_secs()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Starts a client child for each of `children` and waits (each within `timeout`) until it has
/// reported its connections up (`connected K`).
pub fn spawn_connected<A: ChildArgs>(
    children: impl IntoIterator<Item = A>,
    timeout: Duration,
) -> Result<Vec<ClientProcess>> {
    let mut clients = children.into_iter().map(|a| ClientProcess::spawn(&a)).collect::<Result<Vec<_>>>()?;
    for c in &mut clients {
        let line = c.line(timeout, "connect")?;
        if !line.starts_with("connected ") {
            return Err(format!("unexpected line from a client process: {line:?}").into());
        }
    }
    Ok(clients)
}

/// The connections of client process `p` when `total` are spread evenly over `processes`
/// (the first ones take one more when they do not divide).
pub fn share(total: usize, processes: usize, p: usize) -> usize {
    total / processes + usize::from(p < total % processes)
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Parses a `result REQUESTS ERRORS ELAPSED_NS V:C,...` line.
pub fn parse_result(line: &str) -> Result<(u64, u64, u64, Histogram<u64>)> {
    let bad = || format!("bad result line from a client process: {line:?}");
    let mut parts = line.split(' ');
    if parts.next() != Some("result") {
        return Err(bad().into());
    }
    let mut num = || parts.next().and_then(|s| s.parse::<u64>().ok()).ok_or_else(bad);
    let (requests, errors, ns) = (num()?, num()?, num()?);
    let mut hist = new_histogram()?;
    if let Some(pairs) = parts.next() {
        for pair in pairs.split(',').filter(|p| !p.is_empty()) {
            let (v, c) = pair.split_once(':').ok_or_else(bad)?;
            let (v, c) = (v.parse::<u64>().map_err(|_| bad())?, c.parse::<u64>().map_err(|_| bad())?);
            hist.record_n(v, c).map_err(|_| bad())?;
        }
    }
    Ok((requests, errors, ns, hist))
}

/// Formats a `result` line (see [`parse_result`]).
pub fn format_result(requests: u64, errors: u64, elapsed: Duration, hist: &Histogram<u64>) -> String {
    let pairs: Vec<String> =
        hist.iter_recorded().map(|v| format!("{}:{}", v.value_iterated_to(), v.count_at_value())).collect();
    format!("result {requests} {errors} {} {}", elapsed.as_nanos(), pairs.join(","))
}

/// A client child's start: tells the parent its `n` connections are up (`connected N` on
/// stdout), then waits for the parent's `go` on stdin, so that every child starts its load at
/// once.
pub fn connected_then_wait_for_go(n: usize) -> Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "connected {n}")?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "go" {
        return Err(format!("expected go, got {:?}", line.trim()).into());
    }
    Ok(())
}

/// Waits for the parent's next line on stdin (`stop`, `close`) or its end: either way, the
/// client child goes on to stop.
pub fn wait_for_parent() {
    let _ = std::io::stdin().lock().read_line(&mut String::new());
}

/// The exit of a client child `name`: an error goes to the parent as an `error` line on stdout
/// (what it reads) and to stderr for a person.
pub fn child_exit(name: &str, outcome: Result<()>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "error {e}");
            let _ = out.flush();
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_round_trip() {
        let mut h = new_histogram().unwrap();
        h.record_n(1500, 3).unwrap();
        h.record(90_000).unwrap();
        let line = format_result(4, 0, Duration::from_millis(1), &h);
        let (r, e, ns, back) = parse_result(&line).unwrap();
        assert_eq!((r, e, ns), (4, 0, 1_000_000));
        assert_eq!(back.len(), 4);
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert!(parse_result("result 1 x 3 ").is_err());
        assert!(parse_result("result 0 0 5 ").unwrap().3.is_empty());
    }

    #[test]
    fn shares_add_up() {
        for (total, processes) in [(1000, 4), (7, 3), (3, 4), (150, 1)] {
            let shares: Vec<usize> = (0..processes).map(|p| share(total, processes, p)).collect();
            assert_eq!(shares.iter().sum::<usize>(), total, "{shares:?}");
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1, "{shares:?}");
        }
    }
}
