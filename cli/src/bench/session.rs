//! One measurement's session: a fresh server child, a client of the same transport connected
//! to it, and the state of the bench run they belong to.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::counts::Counts;
use super::cpu::Pinning;
use super::lapce::LapceClient;
use super::measure::Result;
#[cfg(unix)]
use super::uds_tokio;
use super::{baseline, rpc, BenchArgs, Mode, ServerArgs, Test, Transport};
use crate::child::ServerProcess;
use crate::progress::Progress;

/// A connected client of either transport.
pub(super) enum Client {
    /// lapce-ipc (boxed: the stream is much larger than a socket).
    Lapce(Box<LapceClient>),
    /// Request/response through the server layer.
    Rpc(Box<rpc::RpcClient>),
    /// The baseline (socket or pipe).
    Baseline(baseline::Conn),
    /// The baseline's tokio flavour.
    #[cfg(unix)]
    BaselineTokio(uds_tokio::Conn),
}

/// State of one bench run.
pub(super) struct Bench<'a> {
    pub(super) args: &'a BenchArgs,
    pub(super) pinning: Pinning,
    /// The CPUs this process may run on (an ordinary program's threads use them all).
    pub(super) all_cpus: Vec<usize>,
    /// Numbers the servers of this run, for unique listener names.
    pub(super) counter: AtomicU64,
    /// One step per measurement.
    pub(super) progress: Progress,
}

impl Bench<'_> {
    /// A fresh listener name (lapce-ipc) or socket or pipe path (baseline) for one server, and
    /// the file the server creates, if any (removed after the server is gone, whatever happens).
    pub(super) fn endpoint(&self, transport: Transport) -> (String, PathBuf) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let base = format!("lapce-ipc-bench-{}-{n}", std::process::id());
        match transport {
            Transport::Lapce
            | Transport::LapceFramed
            | Transport::LapceFramedNoCrc
            | Transport::Rpc
            | Transport::RpcBlocking => {
                // On Windows the listener is a named pipe: no file.
                let file = if cfg!(unix) {
                    lapce_ipc::socket_path(&base).unwrap_or_default()
                } else {
                    PathBuf::new()
                };
                (base, file)
            }
            Transport::Baseline => baseline::endpoint(&base),
            #[cfg(unix)]
            Transport::BaselineTokio => uds_tokio::endpoint(&base),
            #[cfg(windows)]
            Transport::BaselineTokio => unreachable!("no tokio socket baseline on Windows"),
            Transport::NodeJson | Transport::NodeAdvanced => {
                unreachable!("the node script runs its own peer")
            }
            Transport::Iceoryx2Spin | Transport::Iceoryx2WaitSet => {
                unreachable!("the iceoryx2 peer program runs its own server")
            }
        }
    }

    /// Starts a server child for one test, connects to it and runs `body` with the client and
    /// the server's pid. The client is closed before the server is expected to exit; on error
    /// the server is killed.
    pub(super) fn session<T>(
        &self,
        transport: Transport,
        mode: Mode,
        test: Test,
        payload: usize,
        counts: Counts,
        body: impl FnOnce(&mut Client, u32) -> Result<T>,
    ) -> Result<T> {
        self.session_with(transport, mode, test, payload, counts, false, body)
    }

    /// [`session`](Self::session), with the request/response server's and client's metrics
    /// collected or not (`metrics`; the other transports have none).
    #[allow(clippy::too_many_arguments, reason = "one private helper; a struct would only rename them")]
    pub(super) fn session_with<T>(
        &self,
        transport: Transport,
        mode: Mode,
        test: Test,
        payload: usize,
        counts: Counts,
        metrics: bool,
        body: impl FnOnce(&mut Client, u32) -> Result<T>,
    ) -> Result<T> {
        let (name, file) = self.endpoint(transport);
        let server_args = ServerArgs {
            warmup: counts.warmup,
            count: counts.messages,
            parent_pid: Some(std::process::id()),
            // An ordinary program's server runs where the OS puts it.
            cpu: self.pinning.server_cpu().filter(|_| !rpc::is_ordinary(mode)),
            metrics,
            ..ServerArgs::new(transport, mode, name.clone(), test, payload)
        };
        let cleanup = if file.as_os_str().is_empty() { Vec::new() } else { vec![file] };
        let timeout = Duration::from_secs(self.args.timeout) + self.budget(transport).unwrap_or_default();
        let mut server = ServerProcess::spawn(&server_args, timeout, cleanup)?;
        server.wait_ready()?;
        let outcome = self
            .connect(transport, mode, test, &name, payload, metrics)
            .and_then(|mut client| body(&mut client, server.pid()));
        match outcome {
            Ok(value) => {
                server.finish(Duration::from_secs(10))?;
                Ok(value)
            }
            Err(e) => Err(server.explain(e)),
        }
    }

    /// Connects a client of `transport` and `mode` to the server listening on `name`.
    fn connect(
        &self,
        transport: Transport,
        mode: Mode,
        test: Test,
        name: &str,
        payload: usize,
        metrics: bool,
    ) -> Result<Client> {
        Ok(match transport {
            Transport::Lapce | Transport::LapceFramed | Transport::LapceFramedNoCrc => {
                let c = LapceClient::connect(name, mode, transport.framing(), payload)?;
                // Only the large-message test fragments (framed) messages.
                if test != Test::LargeSink && payload > c.max_message_size() {
                    return Err(format!(
                        "payload {payload} exceeds the ring's limit {}",
                        c.max_message_size()
                    )
                    .into());
                }
                Client::Lapce(Box::new(c))
            }
            Transport::Rpc | Transport::RpcBlocking => Client::Rpc(Box::new(rpc::RpcClient::connect(
                name,
                transport,
                mode,
                payload,
                metrics,
                &self.all_cpus,
            )?)),
            Transport::Baseline => Client::Baseline(baseline::connect(name)?),
            #[cfg(unix)]
            Transport::BaselineTokio => Client::BaselineTokio(uds_tokio::connect(name)?),
            #[cfg(windows)]
            Transport::BaselineTokio => unreachable!("no tokio socket baseline on Windows"),
            Transport::NodeJson | Transport::NodeAdvanced => {
                unreachable!("the node script runs its own peer")
            }
            Transport::Iceoryx2Spin | Transport::Iceoryx2WaitSet => {
                unreachable!("the iceoryx2 peer program runs its own server")
            }
        })
    }

    /// The time budget of each test of `transport`'s rows: `Some` for the peers only.
    pub(super) fn budget(&self, transport: Transport) -> Option<Duration> {
        transport.is_peer().then(|| self.args.peer_budget())
    }
}
