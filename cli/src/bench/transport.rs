//! What the bench measures: the transports, how they wait, the server child's tests, and the
//! (transport, mode) cases of the table.

use super::baseline;

/// A transport under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// lapce-ipc shared-memory streams.
    #[value(name = "lapce-ipc")]
    Lapce,
    /// lapce-ipc with the canonical frame header and CRC32 on every message.
    #[value(name = "lapce-ipc-framed")]
    LapceFramed,
    /// lapce-ipc with the frame header, CRC off.
    #[value(name = "lapce-ipc-framed-nocrc")]
    LapceFramedNoCrc,
    /// Request/response through `IpcServer` / `IpcClient` (framed, CRC on, an echo handler).
    #[value(name = "lapce-ipc-rpc")]
    Rpc,
    /// The same through `BlockingIpcClient`.
    #[value(name = "lapce-ipc-rpc-blocking")]
    RpcBlocking,
    /// The baseline, length-prefixed frames with blocking I/O: a Unix-domain stream socket
    /// (`uds`), on Windows a named pipe (`pipe`).
    #[cfg_attr(unix, value(name = "uds"))]
    #[cfg_attr(windows, value(name = "pipe"))]
    Baseline,
    /// The baseline's framing over a tokio `UnixStream` (Unix only).
    #[value(name = "uds-tokio")]
    BaselineTokio,
    /// Node.js IPC (`child_process.fork` + `process.send`), json serialization: a peer run by
    /// the `node` script itself, never by `bench-server`.
    #[value(skip)]
    NodeJson,
    /// Node.js IPC, advanced (structured-clone) serialization.
    #[value(skip)]
    NodeAdvanced,
    /// iceoryx2 request-response, busy-polling: a peer run by its own program
    /// (`peers/iceoryx2`), never by `bench-server`.
    #[value(skip)]
    Iceoryx2Spin,
    /// iceoryx2 request-response, blocking in its `WaitSet`.
    #[value(skip)]
    Iceoryx2WaitSet,
}

impl Transport {
    /// Name used in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Lapce => "lapce-ipc",
            Transport::LapceFramed => "lapce-ipc-framed",
            Transport::LapceFramedNoCrc => "lapce-ipc-framed-nocrc",
            Transport::Rpc => "lapce-ipc-rpc",
            Transport::RpcBlocking => "lapce-ipc-rpc-blocking",
            Transport::Baseline => baseline::NAME,
            Transport::BaselineTokio => "uds-tokio",
            Transport::NodeJson => "node-ipc-json",
            Transport::NodeAdvanced => "node-ipc-advanced",
            Transport::Iceoryx2Spin => "iceoryx2-spin",
            Transport::Iceoryx2WaitSet => "iceoryx2-waitset",
        }
    }

    /// Whether this is a peer (what users would otherwise pick: the baselines, Node.js IPC,
    /// iceoryx2) rather than lapce-ipc: its rows run within the time budget.
    pub fn is_peer(self) -> bool {
        match self {
            Transport::Baseline
            | Transport::BaselineTokio
            | Transport::NodeJson
            | Transport::NodeAdvanced
            | Transport::Iceoryx2Spin
            | Transport::Iceoryx2WaitSet => true,
            Transport::Lapce
            | Transport::LapceFramed
            | Transport::LapceFramedNoCrc
            | Transport::Rpc
            | Transport::RpcBlocking => false,
        }
    }

    /// The framing a lapce-ipc transport uses (`None` for the raw stream and the socket).
    pub fn framing(self) -> Option<Framing> {
        match self {
            Transport::LapceFramed => Some(Framing { crc: true }),
            Transport::LapceFramedNoCrc => Some(Framing { crc: false }),
            Transport::Lapce
            | Transport::Rpc
            | Transport::RpcBlocking
            | Transport::Baseline
            | Transport::BaselineTokio
            | Transport::NodeJson
            | Transport::NodeAdvanced
            | Transport::Iceoryx2Spin
            | Transport::Iceoryx2WaitSet => None,
        }
    }
}

/// Frame header on every message, with or without the payload CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Whether the payload CRC is computed and checked.
    pub crc: bool,
}

/// How both sides wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// lapce-ipc `WaitStrategy::Spin`.
    Spin,
    /// lapce-ipc default `WaitStrategy::Adaptive`.
    Adaptive,
    /// Blocking I/O (the baseline; `WaitStrategy::Blocking` for lapce-ipc).
    Blocking,
    /// An event loop: tokio's (the tokio socket baseline) or Node.js's (the Node.js peers).
    #[value(name = "event-loop")]
    EventLoop,
    /// An ordinary tokio program (request/response rows): a multi-thread runtime with the
    /// default workers, requests awaited from `block_on`, default configuration, nothing pinned.
    #[value(name = "tokio-main")]
    TokioMain,
    /// An ordinary thread (blocking request/response rows): default configuration, nothing
    /// pinned.
    Unpinned,
}

impl Mode {
    /// Name used in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Spin => "spin",
            Mode::Adaptive => "adaptive",
            Mode::Blocking => "blocking",
            Mode::EventLoop => "event-loop",
            Mode::TokioMain => "tokio-main",
            Mode::Unpinned => "unpinned",
        }
    }
}

/// What the server child does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Test {
    /// Echo every message until the client closes (latency, idle CPU).
    Echo,
    /// Count and check messages, ack after the warm-up and at the end (throughput).
    Sink,
    /// The sink with large messages: framed lapce-ipc fragments them through a 1 MiB ring.
    #[value(name = "large-sink")]
    LargeSink,
}

/// The transports and modes measured, in table order: lapce-ipc's, then the baseline and (Unix)
/// its tokio flavour. The Node.js peers follow when `node` runs.
pub(super) const CASES: &[(Transport, Mode)] = &[
    (Transport::Lapce, Mode::Spin),
    (Transport::Lapce, Mode::Adaptive),
    (Transport::LapceFramed, Mode::Spin),
    (Transport::LapceFramedNoCrc, Mode::Spin),
    (Transport::Rpc, Mode::Adaptive),
    (Transport::Rpc, Mode::TokioMain),
    (Transport::RpcBlocking, Mode::Blocking),
    (Transport::RpcBlocking, Mode::Unpinned),
    (Transport::Baseline, Mode::Blocking),
    #[cfg(unix)]
    (Transport::BaselineTokio, Mode::EventLoop),
];

/// The transports and modes of the large-message rows; the last one is the baseline.
pub(super) const LARGE_CASES: [(Transport, Mode); 3] = [
    (Transport::LapceFramed, Mode::Spin),
    (Transport::LapceFramedNoCrc, Mode::Spin),
    (Transport::Baseline, Mode::Blocking),
];

/// Largest payload the Node.js and iceoryx2 peers are measured with: larger round trips of
/// theirs take too long for the bench's counts (and are not what they are compared on).
pub(super) const PEER_MAX_PAYLOAD: usize = 64 << 10;
