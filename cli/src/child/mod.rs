//! The parent/child process protocol of `bench` and `stress`: both re-execute this binary with a
//! hidden subcommand, so that servers and clients run in processes of their own.
//!
//! - **Arguments**: each child kind's clap `Args` struct implements [`ChildArgs`], the one place
//!   that turns it back into the child's command line (a unit test parses that command line
//!   back for every kind).
//! - **Server children** ([`ServerProcess`]): `bench-server`, `stress-server`. The child prints
//!   `ready` on stdout once it listens ([`announce_ready`]); it exits when its client closes
//!   (bench) or when asked (stress), and is killed by a watchdog after a timeout.
//! - **Client children** ([`ClientProcess`]): `bench-scale-client`, `stress-client`. Lines on
//!   their stdin and stdout: child → `connected K` (or `error MSG`), parent → `go`; a child whose
//!   load runs until stopped waits for the parent's `stop`; child → `result REQUESTS ERRORS
//!   ELAPSED_NS V:C,V:C,...` (its latency histogram as value:count pairs, merged by the parent;
//!   `stress-client` sends `corrupt N` first), parent → `close`, child exits. Every line is
//!   awaited under a timeout.
//! - **Lifetime**: every child is killed and reaped when its guard drops (also on error and
//!   panic), and dies with the parent ([`die_with_parent`]: a parent-death signal on Linux, end
//!   of file on stdin elsewhere). Every child raises its open-file limit ([`raise_fd_limit`]).

mod argv;
mod client;
mod limits;
mod server;

pub use self::argv::{Argv, ChildArgs};
pub use self::client::{
    child_exit, connected_then_wait_for_go, format_result, parse_result, share, spawn_connected,
    wait_for_parent, ClientProcess,
};
pub use self::limits::{check_fd_limit, clients_within_fd_limit, raise_fd_limit};
pub use self::server::{announce_ready, die_with_parent, ServerProcess};
