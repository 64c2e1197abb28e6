//! The hidden `bench-server` subcommand: the server child of every measurement, its arguments
//! and its dispatch to the transport's server.

use std::process::ExitCode;

use super::measure::Result;
#[cfg(unix)]
use super::uds_tokio;
use super::{baseline, cpu, lapce, rpc, Mode, Test, Transport};
use crate::child::{self, Argv, ChildArgs};

/// Arguments of the hidden `bench-server` subcommand (the server child).
#[derive(Debug, PartialEq, clap::Args)]
pub struct ServerArgs {
    /// Transport to serve.
    #[arg(long, value_enum)]
    pub transport: Transport,
    /// How the server waits.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Listener name (lapce-ipc), socket path (uds) or pipe path (pipe).
    #[arg(long)]
    pub name: String,
    /// Which test to serve.
    #[arg(long, value_enum)]
    pub test: Test,
    /// Payload size in bytes.
    #[arg(long)]
    pub payload: usize,
    /// Sink test: unacked warm-up messages before the timed ones.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Sink test: timed messages.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Ring capacity (lapce-ipc); derived from the test and payload when absent.
    #[arg(long)]
    pub ring_capacity: Option<usize>,
    /// CPU to pin the server to.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Pid of the bench process; the server dies with it.
    #[arg(long)]
    pub parent_pid: Option<u32>,
    /// Request/response server: collect metrics (`metrics.enable`).
    #[arg(long)]
    pub metrics: bool,
    /// Request/response server for the scale rows: the default configuration with room for N
    /// clients; it exits once N + 1 clients have come and gone.
    #[arg(long, value_name = "N")]
    pub scale_clients: Option<u64>,
    /// Request/response server: its runtime threads (1: current-thread runtime; N > 1: a
    /// multi-thread runtime with N workers).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub threads: u64,
}

impl ServerArgs {
    /// The arguments of a server of `transport` and `mode` for `test` with `payload`, listening
    /// on `name`; the other options at clap's defaults.
    pub fn new(transport: Transport, mode: Mode, name: String, test: Test, payload: usize) -> ServerArgs {
        ServerArgs {
            transport,
            mode,
            name,
            test,
            payload,
            warmup: 0,
            count: 0,
            ring_capacity: None,
            cpu: None,
            parent_pid: None,
            metrics: false,
            scale_clients: None,
            threads: 2,
        }
    }
}

impl ChildArgs for ServerArgs {
    const SUBCOMMAND: &'static str = "bench-server";

    fn push_flags(&self, argv: &mut Argv) {
        argv.value_enum("--transport", &self.transport)
            .value_enum("--mode", &self.mode)
            .value("--name", &self.name)
            .value_enum("--test", &self.test)
            .value("--payload", self.payload)
            .value("--warmup", self.warmup)
            .value("--count", self.count)
            .option("--ring-capacity", self.ring_capacity)
            .option("--cpu", self.cpu)
            .option("--parent-pid", self.parent_pid)
            .switch("--metrics", self.metrics)
            .option("--scale-clients", self.scale_clients)
            .value("--threads", self.threads);
    }
}

/// Runs the hidden `bench-server` subcommand (the server child).
pub fn serve(args: &ServerArgs) -> ExitCode {
    let result = (|| -> Result<()> {
        child::die_with_parent(args.parent_pid)?;
        if let Some(cpu) = args.cpu {
            cpu::pin_current_thread(cpu)?;
        }
        match args.transport {
            Transport::Lapce | Transport::LapceFramed | Transport::LapceFramedNoCrc => lapce::serve(args),
            Transport::Rpc | Transport::RpcBlocking => rpc::serve(args),
            Transport::Baseline => baseline::serve(args),
            #[cfg(unix)]
            Transport::BaselineTokio => uds_tokio::serve(args),
            #[cfg(windows)]
            Transport::BaselineTokio => Err("no tokio socket baseline on Windows".into()),
            Transport::NodeJson | Transport::NodeAdvanced => {
                Err("the Node.js peer is run by its script, not by bench-server".into())
            }
            Transport::Iceoryx2Spin | Transport::Iceoryx2WaitSet => {
                Err("the iceoryx2 peer is run by its own program, not by bench-server".into())
            }
        }
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-server ({} {}): {e}", args.transport.name(), args.mode.name());
            ExitCode::FAILURE
        }
    }
}
