//! `lapce-ipc`: the command line of the lapce-ipc shared-memory IPC library.
//!
//! For now it has one user-facing command, `bench`, which measures round-trip latency,
//! one-way throughput and idle CPU of lapce-ipc against a Unix-domain-socket baseline, with the
//! server in a separate process. `bench-server` is the hidden subcommand that process runs.
#![forbid(unsafe_code)]

mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "lapce-ipc", version, about = "lapce-ipc command line: benchmarks and tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark lapce-ipc (spin and adaptive waits) against a Unix-domain-socket baseline:
    /// round-trip latency, one-way throughput and idle CPU, with the server in a child process.
    Bench(bench::BenchArgs),
    /// The server side of `bench`, run as a child process by `bench` itself.
    #[command(hide = true)]
    BenchServer(bench::ServerArgs),
}

/// Parses the command line and runs the subcommand; the exit code is the subcommand's.
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::BenchServer(args) => bench::serve(&args),
    }
}
