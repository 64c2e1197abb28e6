//! The iceoryx2 peer of `lapce-ipc bench`: iceoryx2's request-response (`[u8]` slices in shared
//! memory) between two processes, measured with the same echo and sink tests as every other row of
//! the bench (see `cli/src/bench/measure.rs`), in two modes:
//!
//! - `spin`: both sides busy-poll (`Server::receive`, `PendingResponse::receive`);
//! - `waitset`: both sides block in an iceoryx2 `WaitSet` between messages. iceoryx2's
//!   request-response ports cannot be attached to a `WaitSet` themselves; the documented pattern
//!   pairs them with an event service, so every request and every response is followed by a
//!   `Notifier::notify` on an event service (one per direction) whose `Listener` the other side's
//!   `WaitSet` waits on.
//!
//! The tests:
//!
//! - echo (round-trip latency): the client sends a request of `payload` bytes whose first byte is
//!   the round trip's number as `u8`; the server answers with a copy of it; the client checks the
//!   length and the first byte.
//! - sink (one-way throughput): the client sends `warmup` requests, waits for an ack, then
//!   `messages` timed requests and waits for the final ack. The requests are fire-and-forget (the
//!   client drops their `PendingResponse`), except the last one of each phase: the server answers
//!   that one with the ack, 16 bytes: requests received (`u64` LE), requests that failed the check
//!   (`u64` LE). The server checks every request (length, first byte = its number as `u8`). The
//!   sink's service keeps `in_flight` requests at most (its request buffer: no safe overflow, the
//!   client retries until the server has room): the bytes of lapce-ipc's 1 MiB sink ring, 16 to
//!   256 requests. The echo test has a service of its own with 2 (iceoryx2's cost per request
//!   grows with that setting, see [`ECHO_IN_FLIGHT`]).
//!
//! With `--budget-ms N` each test also stops after N ms (the echo's warm-up included, the sink's
//! timed requests only), at least one round trip and one request measured. The server needs no
//! count for that: the echo phase ends with the first sink request, and a sink cut short ends
//! with one request on the echo service, which the server answers with the sink's ack once it
//! has taken every sink request before it. The result line then says `"budget_hit": true` and
//! holds the counts reached.
//!
//! Usage: `lapce-ipc-iceoryx2-peer --mode spin|waitset --payload N --warmup N --rounds N
//! --messages N [--budget-ms N] [--pin-handshake 1]`, the same line protocol as
//! `cli/node/ipc-bench.js`: with `--pin-handshake 1` it first prints `{"parent_pid": N,
//! "child_pid": N}` and waits for a line on stdin (the bench pins the two processes to their
//! CPUs in between); then it prints one JSON line, `{"rtt_ns": [...], "messages": N,
//! "elapsed_ns": N, "wrong": N, "budget_hit": B}`. Exits 2 on bad arguments and 1 with a message
//! on stderr when something fails. Test hook: `LAPCE_IPC_BENCH_PEER_DELAY_US=N` in the
//! environment makes the server wait N µs before each request it takes (a slow peer for the
//! bench's tests).
//!
//! The process started by the bench is the client; it starts this binary again as the server
//! (`--child ID`). Each run has an iceoryx2 domain of its own (root directory
//! `$TMPDIR/lxi2-ID/` instead of `/tmp/iceoryx2/`, file prefix `lID_`): every port and node is
//! dropped before the processes exit, then the client removes the domain's global management
//! segment (shared memory that iceoryx2 keeps past its nodes by design) and its directory, so a
//! run leaves nothing in `/tmp` or `/dev/shm`. A client killed by a signal leaves its domain
//! behind (the server child notices that its parent is gone and exits); the next run's client
//! removes it.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iceoryx2::active_request::ActiveRequest;
use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::request_response::PortFactory;

/// Errors: anything printable.
type Error = Box<dyn std::error::Error>;
/// `Result` with [`Error`].
type Result<T, E = Error> = std::result::Result<T, E>;

/// The iceoryx2 service flavour: inter-process.
type Svc = ipc::Service;
/// The request-response service: `[u8]` requests and responses, no user headers.
type RrFactory = PortFactory<Svc, [u8], (), [u8], ()>;
/// The server port.
type Server = iceoryx2::port::server::Server<Svc, [u8], (), [u8], ()>;
/// A request as the server holds it.
type Request = ActiveRequest<Svc, [u8], (), [u8], ()>;

/// Size of a sink ack: requests received, requests that failed the check (`u64` LE each).
const ACK_LEN: usize = 16;
/// Active requests per client of the echo service: one in flight, one more so the client never
/// waits for the server to release the previous request. iceoryx2's cost per request grows with
/// this setting (a 64 B spin round trip measured 0.85 µs with 2, 2.9 µs with 16, 12 µs with 1024
/// here), so the echo test has a service of its own.
const ECHO_IN_FLIGHT: usize = 2;
/// Most requests in flight in the sink test (see [`ECHO_IN_FLIGHT`] for why not more).
const SINK_MAX_IN_FLIGHT: usize = 256;
/// Polls between two checks that the other process is still alive, in spin mode.
const SPINS_PER_CHECK: u64 = 1 << 14;
/// Wake-ups from the `WaitSet` between two checks that the other process is still alive.
const WAKEUPS_PER_CHECK: u64 = 64;
/// Longest block in the `WaitSet` before checking that the other process is still alive.
const WAIT_SLICE: Duration = Duration::from_millis(200);

/// How both sides wait for the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Busy-poll.
    Spin,
    /// Block in a `WaitSet` on the event service's `Listener`.
    WaitSet,
}

impl Mode {
    /// Value of `--mode`.
    fn arg(self) -> &'static str {
        match self {
            Mode::Spin => "spin",
            Mode::WaitSet => "waitset",
        }
    }
}

/// The command line.
#[derive(Debug, Clone)]
struct Args {
    mode: Mode,
    payload: usize,
    warmup: u64,
    rounds: u64,
    messages: u64,
    /// Time budget of each test in milliseconds (0: none).
    budget_ms: u64,
    pin_handshake: bool,
    /// Set in the server child: the run's id (its domain and service names).
    child: Option<String>,
}

impl Args {
    /// Parses `--key value` pairs.
    fn parse(argv: &[String]) -> Result<Args, String> {
        let mut mode = None;
        let (mut payload, mut warmup, mut rounds, mut messages) = (None, None, None, None);
        let mut pin_handshake = false;
        let mut budget_ms = 0;
        let mut child = None;
        let mut it = argv.iter();
        while let Some(key) = it.next() {
            let value = it.next().ok_or_else(|| format!("{key} needs a value"))?;
            let number = || value.parse::<u64>().map_err(|_| format!("{key} must be a non-negative integer"));
            match key.as_str() {
                "--mode" => {
                    mode = Some(match value.as_str() {
                        "spin" => Mode::Spin,
                        "waitset" => Mode::WaitSet,
                        _ => return Err("--mode must be spin or waitset".into()),
                    })
                }
                "--payload" => payload = Some(number()?),
                "--warmup" => warmup = Some(number()?),
                "--rounds" => rounds = Some(number()?),
                "--messages" => messages = Some(number()?),
                "--pin-handshake" => pin_handshake = number()? != 0,
                "--budget-ms" => budget_ms = number()?,
                "--child" => child = Some(value.clone()),
                _ => return Err(format!("unknown argument {key}")),
            }
        }
        let need = |v: Option<u64>, k: &str| v.ok_or_else(|| format!("{k} is required"));
        let payload = need(payload, "--payload")?;
        if payload == 0 || payload > 16 << 20 {
            return Err("--payload must be between 1 and 16 MiB".into());
        }
        let messages = need(messages, "--messages")?;
        if messages == 0 {
            return Err("--messages must be at least 1".into());
        }
        Ok(Args {
            mode: mode.ok_or("--mode is required")?,
            payload: payload as usize,
            warmup: need(warmup, "--warmup")?,
            rounds: need(rounds, "--rounds")?,
            messages,
            budget_ms,
            pin_handshake,
            child,
        })
    }

    /// Requests the sink service holds at most: the bytes of lapce-ipc's 1 MiB sink ring, at
    /// least 16 and at most [`SINK_MAX_IN_FLIGHT`] requests.
    fn in_flight(&self) -> usize {
        ((1 << 20) / self.payload).clamp(16, SINK_MAX_IN_FLIGHT)
    }
}

/// The run's own iceoryx2 domain: a root directory (instead of `/tmp/iceoryx2`) and a file
/// prefix of its own, so the run's files and shared memory, down to iceoryx2's global management
/// segment (which outlives every node by design), can be removed once both processes are done.
struct Domain {
    config: Config,
    /// The root directory, removed with the domain.
    root: PathBuf,
}

impl Domain {
    /// The domain of run `id` (the client's pid and a timestamp, in hex).
    fn new(id: &str) -> Result<Domain> {
        let root = std::env::temp_dir().join(format!("lxi2-{id}"));
        let mut config = Config::default();
        let root_str = format!("{}/", root.display());
        config.global.set_root_path(&Path::new(root_str.as_bytes())?);
        config.global.prefix = FileName::new(format!("l{id}_").as_bytes())?;
        Ok(Domain { config, root })
    }

    /// A node of the domain, with iceoryx2's signal handling off (a killed peer dies as usual).
    fn node(&self) -> Result<Node<Svc>> {
        Ok(NodeBuilder::new()
            .config(&self.config)
            .signal_handling_mode(SignalHandlingMode::Disabled)
            .create::<Svc>()?)
    }

    /// Whether no node of the domain exists (its `nodes` directory is empty or gone).
    fn has_no_nodes(&self) -> bool {
        std::fs::read_dir(self.root.join("nodes")).map_or(true, |mut d| d.next().is_none())
    }

    /// Removes the domains of earlier runs whose client was killed (a signal, the bench's
    /// timeout): the client's pid is gone and, once the stale resources of dead nodes are
    /// cleaned up, no node is left. Domains still in use (a server child that has not yet seen
    /// its client die, a reused pid) are left for a later run.
    fn remove_stale() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_prefix("lxi2-")) else { continue };
            let Some(pid) = id.split('x').next().and_then(|p| u32::from_str_radix(p, 16).ok()) else {
                continue;
            };
            if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let Ok(domain) = Domain::new(id) else { continue };
            if !domain.has_no_nodes() {
                if let Ok(node) = domain.node() {
                    let _ = node.try_cleanup_dead_nodes();
                }
                // The node just created is dropped again.
            }
            if domain.has_no_nodes() {
                let _ = domain.remove();
            }
        }
    }

    /// Removes what is left of the domain once its nodes are dropped and the server child has
    /// exited: the global management segment and the (then empty) directories.
    fn remove(self) -> Result<()> {
        // SAFETY: the precondition is that no process uses the domain any more. The domain is
        // one run's alone (its root and prefix carry the client's pid and a timestamp), and this
        // is called once its server child has exited and the client's nodes and ports are
        // dropped, or, for a killed run's domain, once its client is gone and no node is left.
        unsafe { iceoryx2::testing::remove_global_mgmt_segment::<Svc>(&self.config) }?;
        std::fs::remove_dir_all(&self.root)?;
        Ok(())
    }
}

/// Creates (client) or opens (server) the request-response service `base/test` with room for
/// `in_flight` requests.
fn request_response(
    node: &Node<Svc>,
    base: &str,
    test: &str,
    in_flight: usize,
    create: bool,
) -> Result<RrFactory> {
    let name: ServiceName = format!("{base}/{test}").as_str().try_into()?;
    let builder = node
        .service_builder(&name)
        .request_response::<[u8], [u8]>()
        .enable_safe_overflow_for_requests(false)
        .enable_safe_overflow_for_responses(false)
        .enable_fire_and_forget_requests(true)
        .max_active_requests_per_client(in_flight)
        .max_clients(1)
        .max_servers(1)
        .max_nodes(2);
    Ok(if create { builder.create()? } else { builder.open()? })
}

/// The event service of one direction (`to-server` or `to-client`) in waitset mode.
fn event(node: &Node<Svc>, base: &str, direction: &str, create: bool) -> Result<PortFactoryEvent> {
    let name: ServiceName = format!("{base}/{direction}").as_str().try_into()?;
    let builder = node.service_builder(&name).event().max_nodes(2).max_listeners(1).max_notifiers(1);
    Ok(if create { builder.create()? } else { builder.open()? })
}

/// The event service's port factory.
type PortFactoryEvent = iceoryx2::service::port_factory::event::PortFactory<Svc>;

/// Waits between polls: spins (checking every [`SPINS_PER_CHECK`] polls that the other process
/// lives) or blocks in the `WaitSet` until the other side notifies (checking at least every
/// [`WAIT_SLICE`]).
struct Waiter<'a, 'ws, 'att> {
    /// The `WaitSet`, the listener attached to it and its guard, in waitset mode.
    waitset: Option<(&'ws WaitSet<Svc>, &'att Listener<Svc>, &'a WaitSetGuard<'ws, 'att, Svc>)>,
    /// Polls (spin) or wake-ups (waitset) since the last liveness check.
    spins: u64,
    /// `Err` once the other process is gone.
    alive: &'a mut dyn FnMut() -> Result<()>,
}

impl Waiter<'_, '_, '_> {
    /// Called when a poll found nothing.
    fn idle(&mut self) -> Result<()> {
        match self.waitset {
            None => {
                self.spins += 1;
                if self.spins == SPINS_PER_CHECK {
                    self.spins = 0;
                    (self.alive)()?;
                }
                std::hint::spin_loop();
            }
            Some((waitset, listener, guard)) => {
                let mut notified = false;
                let mut drain_error = None;
                waitset.wait_and_process_once_with_timeout(
                    |id| {
                        if id.has_event_from(guard) {
                            notified = true;
                            // Consume the notifications, so the next wait blocks again.
                            if let Err(e) = listener.try_wait(|_| {}) {
                                drain_error = Some(e);
                            }
                        }
                        CallbackProgression::Continue
                    },
                    WAIT_SLICE,
                )?;
                if let Some(e) = drain_error {
                    return Err(e.into());
                }
                // Also every so many wake-ups: once a notifier's process is gone, the `WaitSet`
                // can report its listener ready on every call.
                self.spins += 1;
                if !notified || self.spins == WAKEUPS_PER_CHECK {
                    self.spins = 0;
                    (self.alive)()?;
                }
            }
        }
        Ok(())
    }
}

/// Notifies the other side after a request or response, in waitset mode.
fn notify(notifier: Option<&Notifier<Svc>>) -> Result<()> {
    if let Some(n) = notifier {
        n.notify()?;
    }
    Ok(())
}

/// The client: starts the server child, runs the echo and sink tests and prints the results.
fn client(args: &Args) -> Result<()> {
    // Short: the paths of iceoryx2's event sockets must fit in `sun_path` (108 bytes).
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let id = format!("{:x}x{nanos:x}", std::process::id());
    Domain::remove_stale();
    let domain = Domain::new(&id)?;
    let result = run_client(args, &domain, &id);
    let removed = domain.remove();
    let out = result?;
    removed?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{out}")?;
    stdout.flush()?;
    Ok(())
}

/// The client in `domain`: the result line, printed once the domain is removed.
fn run_client(args: &Args, domain: &Domain, id: &str) -> Result<String> {
    let node = domain.node()?;
    let base = format!("lapce-ipc-bench/iceoryx2/{id}");
    let echo = request_response(&node, &base, "echo", ECHO_IN_FLIGHT, true)?;
    let sink = request_response(&node, &base, "sink", args.in_flight(), true)?;
    let echo_client = echo.client_builder().initial_max_slice_len(args.payload.max(ACK_LEN)).create()?;
    let sink_client = sink.client_builder().initial_max_slice_len(args.payload).create()?;
    let events = match args.mode {
        Mode::Spin => None,
        Mode::WaitSet => {
            let to_server = event(&node, &base, "to-server", true)?;
            let to_client = event(&node, &base, "to-client", true)?;
            let notifier = to_server.notifier_builder().create()?;
            let listener = to_client.listener_builder().create()?;
            Some((to_server, to_client, notifier, listener))
        }
    };

    let mut child = Command::new(std::env::current_exe()?)
        .args(["--child", id, "--mode", args.mode.arg()])
        .args(["--payload", &args.payload.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--rounds", &args.rounds.to_string()])
        .args(["--messages", &args.messages.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let outcome = (|| -> Result<(Vec<u64>, u64, u64, u64, bool)> {
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout is piped")).read_line(&mut ready)?;
        if ready.trim() != "ready" {
            return Err("the server child exited before it was ready".into());
        }
        if args.pin_handshake {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{{\"parent_pid\": {}, \"child_pid\": {}}}", std::process::id(), child.id())?;
            out.flush()?;
            let mut go = String::new();
            std::io::stdin().read_line(&mut go)?;
        }
        let mut alive = || -> Result<()> {
            match child.try_wait()? {
                Some(status) => {
                    Err(format!("the server child exited ({status}) in the middle of the test").into())
                }
                None => Ok(()),
            }
        };
        let waitset =
            WaitSetBuilder::new().signal_handling_mode(SignalHandlingMode::Disabled).create::<Svc>()?;
        let guard = match &events {
            Some((_, _, _, listener)) => Some(waitset.attach_notification(listener)?),
            None => None,
        };
        let mut waiter = Waiter {
            waitset: events.as_ref().zip(guard.as_ref()).map(|((_, _, _, l), g)| (&waitset, l, g)),
            spins: 0,
            alive: &mut alive,
        };
        let notifier = events.as_ref().map(|(_, _, n, _)| n);

        let budget = (args.budget_ms > 0).then(|| Duration::from_millis(args.budget_ms));
        let over = |deadline: Option<Instant>| deadline.is_some_and(|d| Instant::now() >= d);
        let mut budget_hit = false;

        // Echo: within the budget, the warm-up included (past it the warm-up ends at once, the
        // recording after the current round trip).
        let mut rtt = Vec::with_capacity(args.rounds as usize);
        let mut msg = vec![0xA5u8; args.payload];
        let deadline = budget.map(|b| Instant::now() + b);
        let mut i = 0;
        while i < args.warmup + args.rounds {
            let tag = i as u8;
            msg[0] = tag;
            let start = Instant::now();
            let pending = echo_client.loan_slice_uninit(args.payload)?.write_from_slice(&msg).send()?;
            notify(notifier)?;
            let response = loop {
                if let Some(r) = pending.receive()? {
                    break r;
                }
                waiter.idle()?;
            };
            let ns = start.elapsed().as_nanos() as u64;
            let echoed = response.payload();
            if echoed.len() != args.payload || echoed[0] != tag {
                return Err(format!(
                    "bad echo for round trip {i}: {} bytes starting with {:?}, expected {} starting with {tag}",
                    echoed.len(),
                    echoed.first(),
                    args.payload
                )
                .into());
            }
            if i >= args.warmup {
                rtt.push(ns);
            }
            i += 1;
            if over(deadline) {
                if i < args.warmup {
                    i = args.warmup;
                } else if i < args.warmup + args.rounds {
                    budget_hit = true;
                    break;
                }
            }
        }

        // Sink: the requests from `from` to `to` (until `deadline`, when given, at least one);
        // returns the ack (received, wrong) and the requests sent.
        let mut msg = vec![0x5Au8; args.payload];
        let mut send_phase = |from: u64,
                              to: u64,
                              deadline: Option<Instant>,
                              waiter: &mut Waiter|
         -> Result<((u64, u64), u64)> {
            let mut last = None;
            let mut sent = 0;
            for seq in from..to {
                msg[0] = seq as u8;
                let request = loop {
                    match sink_client.loan_slice_uninit(args.payload) {
                        Ok(r) => break r,
                        // Every request of the segment is still at the server: wait for one.
                        Err(iceoryx2::port::LoanError::OutOfMemory) => waiter.idle()?,
                        Err(e) => return Err(e.into()),
                    }
                };
                let pending = request.write_from_slice(&msg).send()?;
                notify(notifier)?;
                sent += 1;
                if seq + 1 == to {
                    last = Some(pending);
                } else if over(deadline) {
                    break;
                }
                // Otherwise dropped: fire and forget.
            }
            let pending = match last {
                Some(pending) => pending,
                // Cut short: the end request, on the echo service.
                None if sent > 0 => {
                    let end = echo_client.loan_slice_uninit(args.payload)?.write_from_slice(&msg).send()?;
                    notify(notifier)?;
                    end
                }
                None => return Err("empty phase".into()),
            };
            let ack = loop {
                if let Some(r) = pending.receive()? {
                    break r;
                }
                waiter.idle()?;
            };
            let ack = ack.payload();
            if ack.len() != ACK_LEN {
                return Err(format!("ack of {} bytes, expected {ACK_LEN}", ack.len()).into());
            }
            let word = |i: usize| u64::from_le_bytes(ack[i..i + 8].try_into().expect("8 bytes"));
            Ok(((word(0), word(8)), sent))
        };
        if args.warmup > 0 {
            let ((received, _), _) = send_phase(0, args.warmup, None, &mut waiter)?;
            if received != args.warmup {
                return Err(format!("warm-up ack {received}, expected {}", args.warmup).into());
            }
        }
        let start = Instant::now();
        let deadline = budget.map(|b| start + b);
        let ((received, wrong), sent) =
            send_phase(args.warmup, args.warmup + args.messages, deadline, &mut waiter)?;
        let elapsed = start.elapsed().as_nanos() as u64;
        if received != args.warmup + sent {
            return Err(format!("final ack {received}, expected {}", args.warmup + sent).into());
        }
        budget_hit |= sent < args.messages;
        Ok((rtt, sent, elapsed, wrong, budget_hit))
    })();
    let (rtt, sent, elapsed, wrong, budget_hit) = match outcome {
        Ok(v) => v,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the server child exited with {status}").into());
    }
    // Drop every port and the node before printing: the run's resources are gone by then.
    drop(events);
    drop((echo_client, sink_client));
    drop((echo, sink));
    drop(node);
    let list = rtt.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    Ok(format!(
        "{{\"rtt_ns\": [{list}], \"messages\": {sent}, \"elapsed_ns\": {elapsed}, \"wrong\": {wrong}, \"budget_hit\": {budget_hit}}}"
    ))
}

/// The server child: opens the run's services, says `ready`, serves the echo and sink tests.
fn server(args: &Args, id: &str) -> Result<()> {
    let parent = std::os::unix::process::parent_id();
    let domain = Domain::new(id)?;
    let node = domain.node()?;
    let base = &format!("lapce-ipc-bench/iceoryx2/{id}");
    let echo = request_response(&node, base, "echo", ECHO_IN_FLIGHT, false)?;
    let sink = request_response(&node, base, "sink", args.in_flight(), false)?;
    let echo_server = echo.server_builder().initial_max_slice_len(args.payload.max(ACK_LEN)).create()?;
    let sink_server = sink.server_builder().initial_max_slice_len(args.payload.max(ACK_LEN)).create()?;
    let events = match args.mode {
        Mode::Spin => None,
        Mode::WaitSet => {
            let to_server = event(&node, base, "to-server", false)?;
            let to_client = event(&node, base, "to-client", false)?;
            let listener = to_server.listener_builder().create()?;
            let notifier = to_client.notifier_builder().create()?;
            Some((to_server, to_client, notifier, listener))
        }
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready")?;
        out.flush()?;
    }
    let mut alive = || -> Result<()> {
        if std::os::unix::process::parent_id() != parent {
            return Err("the client exited in the middle of the test".into());
        }
        Ok(())
    };
    let waitset = WaitSetBuilder::new().signal_handling_mode(SignalHandlingMode::Disabled).create::<Svc>()?;
    let guard = match &events {
        Some((_, _, _, listener)) => Some(waitset.attach_notification(listener)?),
        None => None,
    };
    let mut waiter = Waiter {
        waitset: events.as_ref().zip(guard.as_ref()).map(|((_, _, _, l), g)| (&waitset, l, g)),
        spins: 0,
        alive: &mut alive,
    };
    let notifier = events.as_ref().map(|(_, _, n, _)| n);
    // The test hook's delay before each request taken.
    let delay = std::env::var("LAPCE_IPC_BENCH_PEER_DELAY_US")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&us| us > 0)
        .map(Duration::from_micros);
    let take = |server: &Server| -> Result<Option<Request>> {
        let request = server.receive()?;
        if let (Some(_), Some(d)) = (&request, delay) {
            std::thread::sleep(d);
        }
        Ok(request)
    };

    // Echo, until the first sink request (the client stops at its count or its time budget).
    let first_sink = loop {
        if let Some(request) = take(&echo_server)? {
            let payload = request.payload();
            request.loan_slice_uninit(payload.len())?.write_from_slice(payload).send()?;
            notify(notifier)?;
            continue;
        }
        if let Some(request) = take(&sink_server)? {
            break request;
        }
        waiter.idle()?;
    };

    // Sink: `warmup + messages` requests, or fewer and then a request on the echo service (the
    // client's budget ran out), answered with the ack once every sink request before it is in.
    let mut wrong = 0u64;
    let mut received = 0u64;
    let total = args.warmup + args.messages;
    let intact = |request: &Request, seq: u64| {
        let payload = request.payload();
        payload.len() == args.payload && payload[0] == seq as u8
    };
    let ack = |request: Request, received: u64, wrong: u64| -> Result<()> {
        let mut ack = [0u8; ACK_LEN];
        ack[..8].copy_from_slice(&received.to_le_bytes());
        ack[8..].copy_from_slice(&wrong.to_le_bytes());
        request.loan_slice_uninit(ACK_LEN)?.write_from_slice(&ack).send()?;
        notify(notifier)
    };
    let mut next_sink = Some(first_sink);
    while received < total {
        let request = match next_sink.take() {
            Some(request) => request,
            None => match take(&sink_server)? {
                Some(request) => request,
                None => {
                    if let Some(end) = take(&echo_server)? {
                        while let Some(request) = take(&sink_server)? {
                            wrong += u64::from(!intact(&request, received));
                            received += 1;
                        }
                        ack(end, received, wrong)?;
                        break;
                    }
                    waiter.idle()?;
                    continue;
                }
            },
        };
        wrong += u64::from(!intact(&request, received));
        received += 1;
        if received == args.warmup || received == total {
            ack(request, received, wrong)?;
        }
    }
    // Dropped in reverse order of creation: the ports, the services, the node last.
    Ok(())
}

fn main() -> ExitCode {
    // Not iceoryx2's warning that no config file was loaded (the config is built here).
    set_log_level(LogLevel::Error);
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match Args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lapce-ipc-iceoryx2-peer: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match &args.child {
        Some(id) => server(&args, id),
        None => client(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let side = if args.child.is_some() { "server" } else { "client" };
            eprintln!("lapce-ipc-iceoryx2-peer ({side}, {}): {e}", args.mode.arg());
            ExitCode::FAILURE
        }
    }
}
