//! `lapce-ipc clean`: removes the socket files that crashed servers left behind.

use std::process::ExitCode;

/// Runs `clean`.
pub fn clean() -> ExitCode {
    match lapce_ipc::clean_stale_sockets() {
        Ok(removed) => {
            for path in &removed {
                println!("removed {}", path.display());
            }
            eprintln!("lapce-ipc clean: {} stale socket file(s) removed", removed.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lapce-ipc clean: {e}");
            ExitCode::FAILURE
        }
    }
}
