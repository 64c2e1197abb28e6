//! The open-file limit: raised to the hard limit in every process of a run, and checked to have
//! room for the connections a run asks for.

use crate::error::Result;

/// File descriptors one connection is assumed to need at most on either side, for the check of
/// the descriptor limit before a run (3 per connection, plus slack for the processes' own).
const FDS_PER_CONNECTION_BOUND: u64 = 4;

/// Descriptors the limit must leave for everything else: the process's own, and the warm pool,
/// which may hold a quarter of the limit (`StreamConfig::warm_pool`).
fn fds_for_connections(limit: u64) -> u64 {
    (limit - limit / 4).saturating_sub(256)
}

/// Raises the soft limit of open files to the hard limit and returns the soft limit now in
/// force (`None` when unknown or unlimited).
#[cfg(unix)]
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
    }
    getrlimit(Resource::Nofile).current
}

/// No descriptor limit to raise here (Windows handles are not limited that way).
#[cfg(not(unix))]
pub fn raise_fd_limit() -> Option<u64> {
    None
}

/// How many clients the descriptor limit leaves room for (see [`check_fd_limit`]).
pub fn clients_within_fd_limit(limit: Option<u64>) -> Option<usize> {
    limit.map(|l| (fds_for_connections(l) / FDS_PER_CONNECTION_BOUND) as usize)
}

/// Checks that the descriptor limit leaves room for `clients` connections.
pub fn check_fd_limit(clients: usize, limit: Option<u64>) -> Result<()> {
    let Some(limit) = limit else { return Ok(()) };
    let needed = clients as u64 * FDS_PER_CONNECTION_BOUND;
    if fds_for_connections(limit) < needed {
        return Err(format!(
            "the open-file limit ({limit}, raised to the hard limit) is too low for {clients} clients: the server \
             may need about {needed} descriptors for them, and a quarter of the limit goes to its warm pool; \
             raise the hard limit (ulimit -Hn) or use a smaller --scale"
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_limit_check() {
        assert!(check_fd_limit(1000, Some(20_000)).is_ok());
        assert!(check_fd_limit(1000, Some(1024))
            .unwrap_err()
            .to_string()
            .contains("too low for 1000 clients"));
        assert!(check_fd_limit(1000, None).is_ok());
        // 2048: 1536 after the warm pool's quarter, 256 kept, 4 per connection.
        assert_eq!(clients_within_fd_limit(Some(2048)), Some(320));
        assert!(check_fd_limit(320, Some(2048)).is_ok() && check_fd_limit(321, Some(2048)).is_err());
    }
}
