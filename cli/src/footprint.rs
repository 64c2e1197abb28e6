//! Memory and descriptors of a server process, read from `/proc` (Linux; `n/a` elsewhere): what
//! `bench --scale` and `stress` measure, with lapce-ipc's segments told apart from other
//! descriptors and mappings.

use serde::Serialize;

/// Memory and descriptors of a process at one moment (`None`: not available here).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Footprint {
    /// `VmRSS`, KiB.
    pub rss_kib: Option<u64>,
    /// `RssAnon`, KiB.
    pub rss_anon_kib: Option<u64>,
    /// `RssShmem`, KiB.
    pub rss_shmem_kib: Option<u64>,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: Option<u64>,
    /// Of those, lapce-ipc segments (memfds, or POSIX shared memory objects): the warm pool's
    /// (a segment handed out to a client is mapped, its descriptor closed).
    pub segments: Option<u64>,
    /// Of the segments, those handed out to a client: their mapping has resident pages (the
    /// server writes the ring headers when it hands a segment out; a warm one is untouched,
    /// and a used one is never made warm again). After the clients left, any is a connection
    /// the server did not close.
    pub segments_used: Option<u64>,
    /// Of the descriptors, epoll instances (the runtime's, and the hang-up watcher's once a
    /// client came).
    pub epolls: Option<u64>,
}

/// Descriptors a warm segment holds in the server: the segment and both ends of its two
/// doorbells (the client's ends go to the client when it is handed out).
pub const FDS_PER_WARM_SEGMENT: u64 = 5;

impl Footprint {
    /// Warm segments: those not handed out (the only segments with a descriptor).
    pub fn warm_segments(&self) -> Option<i64> {
        Some(self.segments? as i64)
    }

    /// Descriptors less those of the warm pool, which grows under bursts of clients and shrinks
    /// back only after a quiet while: what connections and everything else hold.
    pub fn fds_beyond_warm_pool(&self) -> Option<i64> {
        Some(self.fds? as i64 - FDS_PER_WARM_SEGMENT as i64 * self.warm_segments()?)
    }

    /// Descriptors held now beyond those of `idle` that neither more warm segments (a burst of
    /// connections grows the pool for a while) nor the hang-up watcher's epoll (made with the
    /// first connection) explain: with no client connected, anything else is a leak, and a
    /// connection the server kept counts whole (its segment is a used one). `None` when not
    /// measured.
    pub fn unexplained_fds(&self, idle: &Footprint) -> Option<i64> {
        let fds = self.fds? as i64 - idle.fds? as i64;
        let warm = self.warm_segments()? - idle.warm_segments()?;
        let epolls = self.epolls? as i64 - idle.epolls? as i64;
        Some(fds - FDS_PER_WARM_SEGMENT as i64 * warm - epolls.min(1))
    }

    /// Descriptors per connection with `clients` connected now: the growth since `idle`, less
    /// [`FDS_PER_WARM_SEGMENT`] for every warm segment more than then (the warm pool grows while
    /// clients connect in a burst, and shrinks back 30 s later), divided by `clients`. Without
    /// the segment counts, the plain growth per client.
    pub fn fds_per_connection(&self, idle: &Footprint, clients: u64) -> Option<f64> {
        if clients == 0 {
            return None;
        }
        let fds = self.fds? as f64 - idle.fds? as f64;
        let warm_growth = match (self.warm_segments(), idle.warm_segments()) {
            (Some(now), Some(then)) => (now - then) as f64,
            _ => 0.0,
        };
        Some((fds - FDS_PER_WARM_SEGMENT as f64 * warm_growth) / clients as f64)
    }
}

/// Whether a descriptor's or a mapping's target is a lapce-ipc segment: memfd backend
/// `/memfd:lapce-ipc (deleted)`, posix backend `/dev/shm/lapce-ipc-…`.
#[cfg(target_os = "linux")]
fn is_segment(target: &str) -> bool {
    target.starts_with("/memfd:lapce-ipc") || target.starts_with("/dev/shm/lapce-ipc-")
}

/// Mappings of segments in `smaps` (the text of `/proc/PID/smaps`) with resident pages.
#[cfg(target_os = "linux")]
fn used_segment_mappings(smaps: &str) -> u64 {
    let (mut used, mut in_segment) = (0, false);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.ends_with(':') {
            // A field of the current mapping: `Rss:   4 kB`.
            if in_segment && first == "Rss:" {
                used += u64::from(line.split_whitespace().nth(1).is_some_and(|kib| kib != "0"));
            }
        } else {
            // A mapping's first line: `start-end perms offset dev inode [path]`.
            let path = line.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
            in_segment = is_segment(&path);
        }
    }
    used
}

/// Reads the footprint of `pid` from `/proc` (Linux).
#[cfg(target_os = "linux")]
pub fn footprint(pid: u32) -> Footprint {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let (mut fds, mut segments, mut epolls) = (None, 0, 0);
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        let mut count = 0;
        for entry in dir.flatten() {
            count += 1;
            let Ok(target) = std::fs::read_link(entry.path()) else { continue };
            let target = target.to_string_lossy();
            if is_segment(&target) {
                segments += 1;
            } else if target == "anon_inode:[eventpoll]" {
                epolls += 1;
            }
        }
        fds = Some(count);
    }
    Footprint {
        rss_kib: field("VmRSS"),
        rss_anon_kib: field("RssAnon"),
        rss_shmem_kib: field("RssShmem"),
        fds,
        segments: fds.map(|_| segments),
        segments_used: std::fs::read_to_string(format!("/proc/{pid}/smaps"))
            .ok()
            .map(|m| used_segment_mappings(&m)),
        epolls: fds.map(|_| epolls),
    }
}

/// Not available outside Linux: everything `n/a`.
#[cfg(not(target_os = "linux"))]
pub fn footprint(_pid: u32) -> Footprint {
    Footprint::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A footprint with `fds` descriptors, `segments` warm segments, `used` segments handed out,
    /// and `epolls` epoll instances.
    fn at(fds: u64, segments: u64, used: u64, epolls: u64) -> Footprint {
        Footprint {
            fds: Some(fds),
            segments: Some(segments),
            segments_used: Some(used),
            epolls: Some(epolls),
            ..Footprint::default()
        }
    }

    /// Descriptors after the clients left are explained by warm segments (five each) and the
    /// watcher's one epoll; a connection the server kept is not (three descriptors).
    #[test]
    fn unexplained_fds_discount_warm_segments_and_the_watchers_epoll() {
        let idle = at(588, 64, 0, 1);
        assert_eq!(at(588, 64, 0, 1).unexplained_fds(&idle), Some(0));
        assert_eq!(at(589, 64, 0, 2).unexplained_fds(&idle), Some(0), "the watcher's epoll");
        assert_eq!(at(588 + 64 * 5, 128, 0, 1).unexplained_fds(&idle), Some(0), "a doubled warm pool");
        assert_eq!(at(589 + 64 * 5, 128, 0, 1).unexplained_fds(&idle), Some(1), "one descriptor more");
        assert_eq!(at(591, 64, 1, 1).unexplained_fds(&idle), Some(3), "a connection kept, the pool refilled");
        assert_eq!(at(586, 63, 1, 1).unexplained_fds(&idle), Some(3), "the same, the pool not refilled");
        assert_eq!(at(590, 64, 0, 3).unexplained_fds(&idle), Some(1), "a second new epoll");
        assert_eq!(Footprint::default().unexplained_fds(&idle), None);
    }

    /// Per connection, the warm segments a burst added do not count; the connections' own do.
    #[test]
    fn fds_per_connection_leave_out_warm_pool_growth() {
        let idle = at(588, 64, 0, 1);
        // 512 connections of 3 descriptors each, the pool refilled to 64: no growth.
        assert_eq!(at(588 + 512 * 3, 64, 512, 1).fds_per_connection(&idle, 512), Some(3.0));
        // The same with the pool grown by 448 warm segments.
        let grown = at(588 + 512 * 3 + 448 * 5, 64 + 448, 512, 1);
        assert_eq!(grown.fds_per_connection(&idle, 512), Some(3.0));
        // The pool not refilled yet: 8 segments taken from it.
        assert_eq!(at(588 - 8 * 5 + 8 * 3, 56, 8, 1).fds_per_connection(&idle, 8), Some(3.0));
        // Without segment counts: the plain growth.
        let plain = Footprint { fds: Some(588 + 1024), ..Footprint::default() };
        assert_eq!(
            plain.fds_per_connection(&Footprint { fds: Some(588), ..Footprint::default() }, 128),
            Some(8.0)
        );
        assert_eq!(idle.fds_per_connection(&idle, 0), None);
    }

    /// Segment mappings with resident pages are counted, others and other files are not.
    #[cfg(target_os = "linux")]
    #[test]
    fn used_segments_are_the_resident_segment_mappings() {
        let smaps = "\
5600-5700 r--p 00000000 08:01 123  /usr/bin/server
Rss:                  64 kB
7f00-7f40 rw-s 00000000 00:01 2001  /memfd:lapce-ipc (deleted)
Size:                256 kB
Rss:                   4 kB
VmFlags: rd wr sh mr mw me ms sd
7f40-7f80 rw-s 00000000 00:01 2002  /memfd:lapce-ipc (deleted)
Rss:                   0 kB
7f80-7fc0 rw-s 00000000 00:1a 3003  /dev/shm/lapce-ipc-0000abcd00112233 (deleted)
Rss:                  12 kB
7fc0-7fd0 rw-p 00000000 00:00 0
Rss:                   8 kB
";
        assert_eq!(used_segment_mappings(smaps), 2);
        assert_eq!(used_segment_mappings(""), 0);
    }
}
