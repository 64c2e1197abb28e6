// The Node.js IPC peer of `lapce-ipc bench`: what a Node.js user would write to talk to a child
// process, `child_process.fork` and `process.send`, measured with the same two tests as every
// other transport of the bench (see cli/src/bench/measure.rs):
//
// - echo (round-trip latency): the parent sends {t, d} where `t` is the round trip's number
//   modulo 256 and `d` the payload (a string of `payload` ASCII characters with the json
//   serialization, a Buffer of `payload` bytes with the advanced one); the child sends the same
//   message back; the parent checks `t` and the length of `d` before the next round trip.
// - sink (one-way throughput): `warmup` messages, an ack from the child, then `messages` timed
//   messages and a final ack carrying how many the child received and how many failed the same
//   check. The parent sends in batches and waits for each batch to be written (process.send's
//   callback), so memory stays bounded as with the other transports' flow control.
//
// With --budget-ms N each test also stops after N ms (for the echo from its first answer on,
// the warm-up included; for the sink the timed messages only), at least one round trip and one message measured: the
// echo after the current round trip, the sink after the current batch, followed by
// {cmd: 'end'}, which the child acks with what it received. The result then says
// "budget_hit": true and holds the counts reached. 0 (the default) means no budget.
// Test hook: LAPCE_IPC_BENCH_PEER_DELAY_US=N in the environment makes the child wait N µs
// before handling each message (a slow peer for the bench's tests).
//
// Usage: node ipc-bench.js --serialization json|advanced --payload N --warmup N --rounds N
//        --messages N [--budget-ms N] [--pin-handshake 1]
// With --pin-handshake 1 it first prints {"parent_pid": N, "child_pid": N} and waits for a line
// on stdin (the bench pins the two processes to their CPUs in between). Then it prints one JSON
// line: {"rtt_ns": [...], "messages": N, "elapsed_ns": N, "wrong": N, "budget_hit": B}.
// Exits 1 with a message on stderr when a check fails.

'use strict';
const { fork } = require('child_process');

const BATCH = 256;

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i];
    if (!key.startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument ${key}`);
    out[key.slice(2)] = argv[i + 1];
  }
  out['pin-handshake'] = out['pin-handshake'] ?? '0';
  out['budget-ms'] = out['budget-ms'] ?? '0';
  for (const k of ['payload', 'warmup', 'rounds', 'messages', 'pin-handshake', 'budget-ms']) {
    const v = Number(out[k]);
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`--${k} must be a non-negative integer`);
    out[k] = v;
  }
  if (out.serialization !== 'json' && out.serialization !== 'advanced') {
    throw new Error('--serialization must be json or advanced');
  }
  return out;
}

function payloadOf(serialization, len) {
  return serialization === 'json' ? 'x'.repeat(len) : Buffer.alloc(len, 0xa5);
}

// --- the child: echo, then sink ------------------------------------------------------------

// The test hook's delay per message, in nanoseconds (busy-waited: timers are too coarse).
const DELAY_NS = BigInt(Number(process.env.LAPCE_IPC_BENCH_PEER_DELAY_US) || 0) * 1000n;

function slowDown() {
  if (DELAY_NS <= 0n) return;
  const until = process.hrtime.bigint() + DELAY_NS;
  while (process.hrtime.bigint() < until);
}

function child() {
  let expectedLen = -1;
  let sinkTarget = 0;
  let warmup = 0;
  let received = 0;
  let wrong = 0;
  let sinkSeq = 0;
  process.on('message', (m) => {
    if (m.cmd === 'sink') {
      // The parent switches to the sink test: from now on, count and check.
      expectedLen = m.payload;
      warmup = m.warmup;
      sinkTarget = m.warmup + m.messages;
      received = 0;
      wrong = 0;
      sinkSeq = 0;
      return;
    }
    if (m.cmd === 'exit') {
      process.disconnect();
      return;
    }
    if (m.cmd === 'end') {
      // The parent's time budget ran out: ack what came.
      process.send({ ack: received, wrong });
      return;
    }
    slowDown();
    if (expectedLen < 0) {
      process.send(m);
      return;
    }
    if (m.t !== (sinkSeq & 255) || m.d.length !== expectedLen) wrong++;
    sinkSeq++;
    received++;
    if (received === warmup || received === sinkTarget) {
      process.send({ ack: received, wrong });
    }
  });
}

// --- the parent: the measured side -----------------------------------------------------------

async function parent(args) {
  const sub = fork(__filename, ['--child'], { serialization: args.serialization, stdio: 'inherit' });
  let waiting = null;
  sub.on('message', (m) => {
    const w = waiting;
    waiting = null;
    if (w) w(m);
  });
  sub.on('exit', (code, signal) => {
    if (waiting) {
      console.error(`the child exited (code ${code}, signal ${signal}) in the middle of the test`);
      process.exit(1);
    }
  });
  const next = () => new Promise((resolve) => { waiting = resolve; });
  if (args['pin-handshake']) {
    process.stdout.write(JSON.stringify({ parent_pid: process.pid, child_pid: sub.pid }) + '\n');
    await new Promise((resolve) => process.stdin.once('data', resolve));
    process.stdin.destroy();
  }
  const d = payloadOf(args.serialization, args.payload);
  const budgetNs = BigInt(args['budget-ms']) * 1000000n;
  const deadline = (from) => (budgetNs > 0n ? from + budgetNs : null);
  const over = (until) => until !== null && process.hrtime.bigint() >= until;
  let budgetHit = false;

  // Echo.
  const rtt = [];
  // From the first answer on: the child's start is not the peer's speed.
  let echoUntil = null;
  for (let i = 0; i < args.warmup + args.rounds; i++) {
    const t = i & 255;
    const start = process.hrtime.bigint();
    const reply = next();
    sub.send({ t, d });
    const m = await reply;
    const ns = process.hrtime.bigint() - start;
    if (m.t !== t || m.d.length !== args.payload) {
      throw new Error(`bad echo for round trip ${i}: tag ${m.t}, ${m.d.length} bytes`);
    }
    if (i >= args.warmup) rtt.push(Number(ns));
    if (i === 0) echoUntil = deadline(process.hrtime.bigint());
    if (over(echoUntil)) {
      if (i < args.warmup) {
        // The warm-up ends here; the recorded round trips start (at least one).
        i = args.warmup - 1;
      } else if (i + 1 < args.warmup + args.rounds) {
        budgetHit = true;
        break;
      }
    }
  }

  // Sink.
  sub.send({ cmd: 'sink', payload: args.payload, warmup: args.warmup, messages: args.messages });
  // Sends up to `count` messages numbered from `seq0` (stopping after a batch once `until` has
  // passed) and returns how many it sent.
  const sendAll = async (count, seq0, until) => {
    let i = 0;
    while (i < count) {
      const n = Math.min(BATCH, count - i);
      await new Promise((resolve, reject) => {
        for (let j = 0; j < n; j++) {
          const last = j === n - 1;
          sub.send({ t: (seq0 + i + j) & 255, d }, last ? (e) => (e ? reject(e) : resolve()) : undefined);
        }
      });
      i += n;
      if (over(until)) break;
    }
    return i;
  };
  let ack = next();
  await sendAll(args.warmup, 0, null);
  if (args.warmup > 0) {
    const a = await ack;
    if (a.ack !== args.warmup) throw new Error(`warm-up ack ${a.ack}, expected ${args.warmup}`);
    ack = next();
  }
  const start = process.hrtime.bigint();
  const sent = await sendAll(args.messages, args.warmup, deadline(start));
  if (sent < args.messages) {
    budgetHit = true;
    sub.send({ cmd: 'end' });
  }
  const a = sent > 0 ? await ack : { ack: args.warmup, wrong: 0 };
  const elapsed = process.hrtime.bigint() - start;
  if (a.ack !== args.warmup + sent) {
    throw new Error(`final ack ${a.ack}, expected ${args.warmup + sent}`);
  }
  sub.send({ cmd: 'exit' });
  await new Promise((resolve) => sub.once('exit', resolve));
  process.stdout.write(
    JSON.stringify({
      rtt_ns: rtt,
      messages: sent,
      elapsed_ns: Number(elapsed),
      wrong: a.wrong,
      budget_hit: budgetHit,
    }) + '\n',
  );
}

if (process.argv[2] === '--child') {
  child();
} else {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`ipc-bench.js: ${e.message}`);
    process.exit(2);
  }
  parent(args).catch((e) => {
    console.error(`ipc-bench.js: ${e.message}`);
    process.exit(1);
  });
}
