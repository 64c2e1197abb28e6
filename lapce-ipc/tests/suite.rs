//! The integration tests that can share a process, as modules of one test binary (named after
//! their files: `cargo test -p lapce-ipc --test suite -- rpc::` runs those of `tests/rpc.rs`).
//! One binary is compiled and linked once per platform, where ten took minutes of every CI run.
//!
//! Tests that watch their whole process have binaries of their own (see `Cargo.toml`):
//! `zero_alloc.rs` and `server_memory.rs` install counting global allocators, `idle_trim.rs`
//! reads the process's resident shared memory.

mod common;

mod byte_stream;
mod config;
mod cross_process;
mod descriptors;
mod example_ai_engine;
mod example_bytes_codec;
mod example_editor_client;
mod example_http_over_shm;
mod frame_props;
mod framed;
#[cfg(feature = "grpc")]
mod grpc_over_shm;
mod loom_ring;
mod metrics;
mod notifications;
mod protocol;
#[cfg(feature = "tls")]
mod remote_tls;
mod rpc;
mod rpc_paths;
mod security;
mod stream_api;
mod thread_client;
mod traits;
mod typed;
