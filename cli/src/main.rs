//! `lapce-ipc`: the command line of the lapce-ipc shared-memory IPC library.
//!
//! - `bench` measures round-trip latency, one-way throughput and idle CPU of lapce-ipc against a
//!   Unix-domain-socket baseline (a named pipe on Windows), with the server in a separate process (`bench-server` is the
//!   hidden subcommand that process runs).
//! - `serve` runs an `IpcServer` with an echo handler and a mock AI engine until Ctrl-C; `call`
//!   sends it one request and prints the answer or the streamed chunks; `clean` removes the
//!   socket files crashed servers left behind.
//! - `stress` runs the stress levels against a server child and client children.
//!
//! `bench` and `stress` re-execute this binary as their children, under hidden subcommands:
//! [`child`] holds the protocol between parent and children.
#![forbid(unsafe_code)]

/// `println!` for the human-readable report of `bench` and `stress`: stdout, or stderr when
/// stdout carries `--json -` (see [`output`]).
macro_rules! outln {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

mod bench;
mod call;
mod child;
mod clean;
mod error;
mod footprint;
mod histogram;
mod logging;
mod output;
mod progress;
mod remote;
mod serve;
mod stress;

use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "lapce-ipc", version, about = "lapce-ipc command line: benchmarks and tools")]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    ///
    /// The library's log goes to stderr, never to stdout. Without -v it shows warnings and
    /// errors (refused peers, handler panics); `bench` and `stress`, which provoke failures on
    /// purpose, show errors only. RUST_LOG, when set, decides instead (e.g.
    /// RUST_LOG=lapce_ipc=debug).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark lapce-ipc against Unix sockets (named pipes on Windows) and other IPC.
    ///
    /// Round-trip latency, one-way throughput and idle CPU of lapce-ipc (spin and adaptive
    /// waits) against a Unix-domain-socket baseline (a named pipe on Windows) and, where they
    /// can run, Node.js IPC and iceoryx2, with the server in a child process.
    // Boxed: its many options make it several times the size of the other variants.
    Bench(Box<bench::BenchArgs>),
    /// The server side of `bench`, run as a child process by `bench` itself.
    #[command(hide = true)]
    BenchServer(bench::ServerArgs),
    /// A client process of `bench --scale`, run as a child process by `bench` itself.
    #[command(hide = true)]
    BenchScaleClient(bench::ScaleClientArgs),
    /// The gRPC server of `bench --grpc`, run as a child process by `bench` itself.
    #[command(hide = true)]
    BenchGrpcServer(bench::GrpcServerArgs),
    /// Run a server with an echo handler and a mock AI engine until Ctrl-C.
    ///
    /// The echo handler answers `data`; the mock AI engine answers `complete` and streams its
    /// answer to `chat` token by token. Ctrl-C shuts the server down gracefully.
    Serve(serve::ServeArgs),
    /// Remove the socket files crashed servers left behind (never a live server's).
    ///
    /// Looks in the runtime directory, and in those of earlier boots.
    Clean,
    /// Send one request to a server and print its answer.
    ///
    /// For chat, the streamed tokens are printed as they arrive.
    Call(call::CallArgs),
    /// Stress levels: connection bomb, memory, latency torture, leak detection, chaos.
    ///
    /// The server and clients run in child processes; a level fails on correctness, never on
    /// time.
    Stress(stress::StressArgs),
    /// The server side of `stress`, run as a child process by `stress` itself.
    #[command(hide = true)]
    StressServer(stress::ServerArgs),
    /// A client process of `stress`, run as a child process by `stress` itself.
    #[command(hide = true)]
    StressClient(stress::ClientArgs),
}

/// Parses the command line and runs the subcommand; the exit code is the subcommand's.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let provokes_failures = !matches!(cli.command, Command::Serve(_) | Command::Call(_) | Command::Clean);
    logging::init(cli.verbose, provokes_failures);
    match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::BenchServer(args) => bench::serve(&args),
        Command::BenchScaleClient(args) => bench::scale_client(&args),
        Command::BenchGrpcServer(args) => bench::grpc_serve(&args),
        Command::Serve(args) => serve::serve(&args),
        Command::Call(args) => call::call(&args),
        Command::Clean => clean::clean(),
        Command::Stress(args) => stress::run(&args),
        Command::StressServer(args) => stress::serve(&args),
        Command::StressClient(args) => stress::client(&args),
    }
}
