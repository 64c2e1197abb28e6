//! The smallest useful server: an `IpcServer` that echoes `Data` requests, until it is killed.
//! `lapce-ipc bench --scale` measures the idle memory of this binary beside the CLI's server,
//! because a server embedded in an application carries the library, not the CLI.
//!
//! ```text
//! cargo run --release -p lapce-ipc --example echo_server -- my-server
//! ```

use lapce_ipc::frame::MessageType;
use lapce_ipc::{IpcConfig, IpcServer};

fn main() -> lapce_ipc::Result<()> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "echo-server".into());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        // The whole process is the server: it may give its free heap back to the OS.
        let mut config = IpcConfig::default();
        config.ipc.trim_heap = true;
        let server = IpcServer::bind(&name, config)?;
        server.register_sync_handler(MessageType::Data, Ok);
        println!("listening on {}", server.path().display());
        server.serve().await
    })
}
