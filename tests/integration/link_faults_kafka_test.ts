/**
 * Link faults between edgeinfer and Kafka, through the Toxiproxy "kafka" proxy (scripts/services.sh): a
 * half-open link (black hole) on the Kafka source and on the Kafka sink, seconds of latency on each, and
 * a bandwidth cap on the sink. The proxy's address is what Kafka's PROXIED listener advertises, so a
 * client that bootstraps through it makes ALL its connections through it; the other side of the run, the
 * feed and the verifier go to the broker directly (EDGEINFER_KAFKA_BROKERS), untouched by the fault.
 *
 * Each test: a kafkajs producer feeds the input topic at a steady rate; `edgeinfer run` scores it with a
 * tiny linear model; a kafkajs consumer reads the prediction topic live. Once predictions flow, the fault
 * goes on; the test proves it bit (the output stops, or comes late, or slows to the cap), measures how long
 * edgeinfer took to report it, heals the link, and checks recovery: every input id has a prediction
 * (duplicates allowed, counted) and the group's committed offsets reach the end of the input topic.
 */
import assert from "node:assert/strict";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { type RunningCli, spawnCli } from "../cli/run_cli.ts";
import {
  createTopic,
  KAFKA_BROKERS,
  LiveOutput,
  SteadyFeed,
  uniqueName,
  waitForCommittedEnd,
} from "./brokers.ts";
import { bandwidth, blackHole, faultProxy, healAll, latency } from "./toxiproxy.ts";

const proxy = await faultProxy();
if (typeof proxy === "string") console.log("skipping link-fault tests: " + proxy);
const ignore = typeof proxy === "string";
const PROXIED = typeof proxy === "string" ? "" : proxy.kafka;
const DIRECT = KAFKA_BROKERS.join(",");

/** Input events per second, sent in ticks of TICK_MS, to PARTITIONS partitions. */
const RATE = 200;
const TICK_MS = 50;
const PARTITIONS = 2;

/** request-timeout-ms= of the black-hole tests (the default is 15 s). */
const SHORT_REQUEST_TIMEOUT_MS = 3000;
/**
 * Fault → edgeinfer's "retrying until it recovers" line for the proxied part, on a half-open link. The
 * request in flight when the link goes silent (the source always has a fetch, sent every MAX_WAIT 250 ms,
 * or a heartbeat in flight; the sink a produce, sent at most --linger-ms after a batch) is declared dead
 * SHORT_REQUEST_TIMEOUT_MS after it was sent, its connection closed, and the failure reported. 4 s of
 * slack: a retry's backoff and a busy 2-core machine (the broker, edgeinfer, the test).
 */
const DETECTION_BOUND_MS = SHORT_REQUEST_TIMEOUT_MS + 4000;
/** How long a detection is waited for before the test gives up (and reports how late it was). */
const DETECTION_GIVE_UP_MS = 70_000;
/** How long a black hole, a latency or a cap is held. */
const HOLD_MS = 10_000;
/** latency("kafka", LATENCY_MS): each direction, so a round trip gains 2 x LATENCY_MS (3 s). */
const LATENCY_MS = 1500;
/** bandwidth("kafka", CAP_KB_S): kilobytes (1000 bytes) per second, each direction. */
const CAP_KB_S = 16;
/**
 * --batch-size of the bandwidth test. With the default 256 the sink's requests hold 4-5 batches of 256
 * records of ~180 bytes (185-230 KB: 12-14 s at 16 KB/s): a 10 s window would see one request or none.
 * (Such a request nearly reaches the default 15 s request timeout; at 8 KB/s it outlasts it, every
 * attempt times out and nothing gets through while the cap lasts.) 32 makes them ~1-2 s each.
 */
const CAP_BATCH_SIZE = 32;
/** Heal → every id predicted and every offset committed. */
const CATCH_UP_MS = 45_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/** Polls `check` every `everyMs` until true; returns when it became true, or fails after `timeoutMs`. */
async function waitFor(
  check: () => boolean,
  timeoutMs: number,
  what: () => string,
  everyMs = 25,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`);
    await sleep(everyMs);
  }
  return Date.now();
}

interface Arrival {
  id: number;
  /** When the verifier received it. */
  at: number;
  /** Key, value and header bytes (what the sink's request carries per record, framing aside). */
  bytes: number;
}

type Output = LiveOutput<Arrival>;

/** The prediction topic, read live (directly): when each prediction arrived, and its size. */
function startOutput(topic: string): Promise<Output> {
  return LiveOutput.start(topic, (message) => {
    let bytes = (message.key?.length ?? 0) + (message.value?.length ?? 0);
    for (const [k, v] of Object.entries(message.headers ?? {})) bytes += k.length + String(v).length;
    return { id: JSON.parse(message.value!.toString()).id as number, at: Date.now(), bytes };
  });
}

/** One proxied run: the source or the sink goes through the proxy, the other side is direct. */
interface Setup {
  proxied: "source" | "sink";
  /** Extra kafka:// parameters of the proxied side, e.g. "request-timeout-ms=3000". */
  params?: string;
  /** Extra parameters of the sink URL (either side). */
  sinkParams?: string;
  /** Extra `edgeinfer run` options. */
  options?: string[];
}

interface Harness {
  run: RunningCli;
  feed: SteadyFeed;
  output: Output;
  /** The proxied part's name in edgeinfer's stderr lines. */
  part: string;
  input: string;
  group: string;
}

const FAILURE_LINE = /retrying until it recovers|still waiting/;

/** Runs `body` with a fed input topic, a running edgeinfer and a live verifier; cleans everything up. */
async function withRun(setup: Setup, body: (h: Harness) => Promise<void>): Promise<void> {
  await healAll();
  const input = uniqueName("link-in");
  const out = uniqueName("link-out");
  const group = uniqueName("edgeinfer");
  await createTopic(input, PARTITIONS);
  await createTopic(out, 1);
  const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
  const url = (host: string, topic: string, query: (string | undefined)[]) => {
    const q = query.filter((p) => p !== undefined && p !== "").join("&");
    return `kafka://${host}/${topic}${q === "" ? "" : `?${q}`}`;
  };
  const own = (side: "source" | "sink") => setup.proxied === side ? setup.params : undefined;
  const source = url(setup.proxied === "source" ? PROXIED : DIRECT, input, [`group=${group}`, own("source")]);
  const sink = url(setup.proxied === "sink" ? PROXIED : DIRECT, out, [own("sink"), setup.sinkParams]);
  const output = await startOutput(out);
  const feed = new SteadyFeed(input, { rate: RATE, tickMs: TICK_MS, partitions: PARTITIONS });
  const run = spawnCli([
    "run",
    "--model",
    model,
    "--source",
    source,
    "--sink",
    sink,
    "--status-every",
    "1",
    ...setup.options ?? [],
  ]);
  const part = setup.proxied === "source" ? `Kafka source ${PROXIED}` : `Kafka sink ${PROXIED}`;
  let failed = false;
  try {
    await body({ run, feed, output, part, input, group });
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    await healAll().catch(() => {});
    await feed.stop().catch(() => {});
    if (run.exited === undefined) run.child.kill("SIGTERM");
    const code = await run.exit();
    await output.stop().catch(() => {});
    if (!failed) assert.equal(code, 0, `edgeinfer exited with ${code}:\n${run.stderr()}`);
  }
}

/** (a): predictions flow. */
async function predictionsFlow(h: Harness, n = 200): Promise<void> {
  await waitFor(
    () => h.output.count >= n,
    30_000,
    () => `${n} predictions (have ${h.output.count}); stderr:\n${h.run.stderr()}`,
  );
}

/**
 * When a stderr line matching `pattern` appeared after the first `from` characters (polled every 25 ms),
 * or undefined after `timeoutMs` or when the run exited.
 */
async function watchStderr(
  h: Harness,
  from: number,
  pattern: RegExp,
  timeoutMs: number,
): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(h.run.stderr().slice(from))) {
    if (Date.now() > deadline || h.run.exited !== undefined) return undefined;
    await sleep(25);
  }
  return Date.now();
}

function assertRunning(h: Harness): void {
  assert.equal(h.run.exited, undefined, `edgeinfer exited (${h.run.exited}):\n${h.run.stderr()}`);
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const median = (xs: number[]) => xs[Math.floor(xs.length / 2)];

/**
 * (e)+(f): heals the link, then checks recovery: a prediction after the heal, then (the feed stopped)
 * every id predicted and every offset committed, the run still going. Logs the times.
 */
async function healAndCatchUp(h: Harness, heal: () => Promise<void>, label: string): Promise<void> {
  const before = h.output.count;
  await heal();
  const healedAt = Date.now();
  const firstAt = await waitFor(
    () => h.output.count > before,
    CATCH_UP_MS,
    () => `a prediction after the heal; stderr:\n${h.run.stderr()}`,
  );
  await h.feed.stop();
  const total = h.feed.count;
  const allAt = await waitFor(
    () => h.output.covered() >= total,
    CATCH_UP_MS,
    () => `every id of ${total} predicted (have 0 … ${h.output.covered() - 1}); stderr:\n${h.run.stderr()}`,
    100,
  );
  await waitForCommittedEnd(h.group, h.input, undefined, CATCH_UP_MS);
  const committedAt = Date.now();
  assertRunning(h);
  console.log(
    `${label}: heal → first new prediction ${firstAt - healedAt} ms, → all ${total} predicted ` +
      `${allAt - healedAt} ms, → committed to the end ${committedAt - healedAt} ms; ` +
      `${h.output.duplicates()} duplicate predictions`,
  );
}

/**
 * Fault 1 on either side: a half-open link, reported within DETECTION_BOUND_MS, ridden out. A late
 * detection fails the test only at the end, after the recovery and loss checks have run too.
 */
async function blackHoleTest(side: "source" | "sink"): Promise<void> {
  const started = Date.now();
  let late: Error | undefined;
  await withRun(
    { proxied: side, params: `request-timeout-ms=${SHORT_REQUEST_TIMEOUT_MS}` },
    async (h) => {
      await predictionsFlow(h);
      const seen = h.run.stderr().length;
      const faultAt = Date.now();
      const heal = await blackHole("kafka");
      // (d) Detection: the proxied part says it is waiting (watched from now on).
      const detection = watchStderr(
        h,
        seen,
        // The part itself, or its offset commits (the source's other request that can time out).
        new RegExp(`${escape(h.part)}( \\(offset commits\\))?: .*retrying until it recovers`),
        DETECTION_GIVE_UP_MS,
      );
      // (c) The fault bit: once the request in flight at the fault has timed out (anything sent before
      // the fault was delivered long before), no prediction while the input keeps coming.
      await sleep(faultAt + SHORT_REQUEST_TIMEOUT_MS - Date.now());
      const [outAt, inAt, at] = [h.output.count, h.feed.count, Date.now()];
      const detectedAt = await detection;
      assertRunning(h);
      assert.ok(
        detectedAt !== undefined,
        `no "${h.part}: … retrying until it recovers" within ${DETECTION_GIVE_UP_MS} ms of the fault:\n` +
          h.run.stderr(),
      );
      const detectionMs = detectedAt - faultAt;
      console.log(
        `black hole on the ${side}: detected after ${detectionMs} ms (bound ${DETECTION_BOUND_MS} ms)`,
      );
      if (detectionMs > DETECTION_BOUND_MS) {
        late = new Error(
          `the ${side} reported the half-open link ${detectionMs} ms after the fault, more than ` +
            `${DETECTION_BOUND_MS} ms (request-timeout-ms=${SHORT_REQUEST_TIMEOUT_MS} + slack):\n${h.run.stderr()}`,
        );
      }
      await sleep(Math.max(faultAt + HOLD_MS, detectedAt + 1000) - Date.now());
      const [outGrew, inGrew, heldMs] = [h.output.count - outAt, h.feed.count - inAt, Date.now() - at];
      console.log(`  held ${Date.now() - faultAt} ms: ${inGrew} events fed, ${outGrew} predictions`);
      assert.equal(outGrew, 0, "no prediction while the link is a black hole");
      assert.ok(inGrew >= RATE * heldMs / 1000 * 0.7, `input kept coming (${inGrew} in ${heldMs} ms)`);
      assertRunning(h);
      await healAndCatchUp(h, heal, `black hole on the ${side}`);
      assert.match(h.run.stderr().slice(seen), new RegExp(`${escape(h.part)}: recovered after`));
    },
  );
  console.log(`  test wall time ${Date.now() - started} ms`);
  if (late !== undefined) throw late;
}

/** Fault 2 on either side: seconds of latency at the default request timeout. */
async function latencyTest(side: "source" | "sink"): Promise<void> {
  const started = Date.now();
  await withRun({ proxied: side }, async (h) => {
    await predictionsFlow(h);
    /** How late each prediction of the events fed in [from, to) arrived, sorted. */
    const lateness = (from: number, to: number) =>
      h.output.records.filter((a) => {
        const sent = h.feed.sentAt[a.id];
        return sent !== undefined && sent >= from && sent < to;
      }).map((a) => a.at - h.feed.sentAt[a.id]).sort((x, y) => x - y);
    const seen = h.run.stderr().length;
    const faultAt = Date.now();
    const baseline = lateness(faultAt - 3000, faultAt - 500);
    const heal = await latency("kafka", LATENCY_MS);
    // (c) The fault bit: the events fed after the fault are predicted, each at least LATENCY_MS late
    // (the produce request needs that long to reach the broker; the fetch response to reach edgeinfer).
    await waitFor(
      () => lateness(faultAt + 100, Infinity).length >= 1000,
      30_000,
      () => `1000 predictions of events fed after the fault; stderr:\n${h.run.stderr()}`,
      100,
    );
    const late = lateness(faultAt + 100, Infinity);
    console.log(
      `latency ${LATENCY_MS} ms each way on the ${side}: predictions late by median ${median(baseline)} ms ` +
        `before, min ${late[0]} / median ${median(late)} / max ${late[late.length - 1]} ms during ` +
        `(${late.length} predictions)`,
    );
    assert.ok(median(baseline) < LATENCY_MS, "before the fault, predictions were prompt");
    // sentAt is when the feed's acknowledgement came back, a few ms after the broker appended the event.
    assert.ok(
      late[0] >= LATENCY_MS - 100,
      `every prediction ~${LATENCY_MS} ms late or more (min ${late[0]})`,
    );
    assert.ok(
      median(late) >= LATENCY_MS,
      `predictions ${LATENCY_MS} ms late or more (median ${median(late)})`,
    );
    // Held so that several 3 s round trips (produce; fetch, heartbeat, offset commit) went through.
    await sleep(faultAt + HOLD_MS - Date.now());
    // (d) No detection: a slow link is not a dead one.
    assert.doesNotMatch(h.run.stderr().slice(seen), FAILURE_LINE, "no reconnect or failure reported");
    assertRunning(h);
    await healAndCatchUp(h, heal, `latency on the ${side}`);
    assert.doesNotMatch(h.run.stderr().slice(seen), FAILURE_LINE, "no reconnect or failure reported");
    // Nothing was read twice: no connection was dropped, no rebalance started the stream over.
    assert.equal(h.output.duplicates(), 0, "no duplicate predictions");
  });
  console.log(`  test wall time ${Date.now() - started} ms`);
}

Deno.test({
  name: "Kafka source behind a half-open link (request-timeout-ms=3000): reported within the request " +
    "timeout, ridden out, every event predicted and committed after the heal",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => blackHoleTest("source"),
});

Deno.test({
  name: "Kafka sink behind a half-open link (request-timeout-ms=3000): reported within the request " +
    "timeout, ridden out, every event predicted and committed after the heal",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => blackHoleTest("sink"),
});

Deno.test({
  name: `Kafka sink with ${LATENCY_MS} ms latency each way (default request timeout): no reconnect, ` +
    "predictions arrive late, every event predicted and committed",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => latencyTest("sink"),
});

Deno.test({
  name: `Kafka source with ${LATENCY_MS} ms latency each way (default request timeout): no reconnect ` +
    "or rebalance, predictions arrive late, every event predicted and committed",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => latencyTest("source"),
});

Deno.test({
  name: `Kafka sink capped at ${CAP_KB_S} KB/s (compression=none): predictions slow to about the cap, ` +
    "every event predicted and committed after the heal",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const started = Date.now();
    await withRun(
      { proxied: "sink", sinkParams: "compression=none", options: ["--batch-size", String(CAP_BATCH_SIZE)] },
      async (h) => {
        await predictionsFlow(h);
        const seen = h.run.stderr().length;
        const faultAt = Date.now();
        const heal = await bandwidth("kafka", CAP_KB_S);
        // (c) Measured over a window that starts once the requests sent before the cap are through.
        const [windowStart, windowEnd] = [faultAt + 2000, faultAt + 2000 + HOLD_MS];
        await waitFor(
          () => h.output.records.some((a) => a.at >= windowEnd),
          HOLD_MS + 10_000,
          () => `a prediction after the measuring window; stderr:\n${h.run.stderr()}`,
        );
        // The sink sends one request at a time: the bytes of the predictions that arrived after the
        // window's first arrival (t1) up to its last (t2) all went through the proxy between t1 and t2.
        const inWindow = h.output.records.filter((a) => a.at >= windowStart && a.at < windowEnd);
        const [t1, t2] = [inWindow[0].at, inWindow[inWindow.length - 1].at];
        assert.ok(t2 - t1 >= HOLD_MS / 2, `predictions kept arriving through the window (${t1}, ${t2})`);
        const counted = inWindow.filter((a) => a.at > t1 + 200);
        const seconds = (t2 - t1) / 1000;
        const perSecond = counted.length / seconds;
        const bytesPerSecond = counted.reduce((n, a) => n + a.bytes, 0) / seconds;
        console.log(
          `bandwidth cap ${CAP_KB_S} KB/s on the sink: ${perSecond.toFixed(0)} predictions/s ` +
            `(${(bytesPerSecond / 1000).toFixed(1)} KB/s of keys, values and headers; ` +
            `${(bytesPerSecond / perSecond).toFixed(0)} bytes each) while ${RATE} events/s were fed`,
        );
        // Keys, values and headers are most of a request's bytes (the rest: ~12 bytes of framing per
        // record, one batch header and the request header per request): below the cap, but not far.
        assert.ok(bytesPerSecond <= CAP_KB_S * 1000, "not faster than the cap");
        assert.ok(bytesPerSecond >= CAP_KB_S * 1000 * 0.6, "about the cap");
        assert.ok(perSecond < RATE * 0.8, "slower than the input");
        assertRunning(h);
        await healAndCatchUp(h, heal, `bandwidth cap on the sink`);
        const notes = h.run.stderr().slice(seen).split("\n").filter((l) => FAILURE_LINE.test(l));
        assert.deepEqual(notes, [], "a slow link is not reported as a failure");
      },
    );
    console.log(`  test wall time ${Date.now() - started} ms`);
  },
});

Deno.test({
  name: `Kafka sink on a link slower than one request per request timeout (${CAP_KB_S} KB/s, ` +
    `request-timeout-ms=${SHORT_REQUEST_TIMEOUT_MS}): requests shrink until they get through, nothing lost`,
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const started = Date.now();
    await withRun(
      // Default batch size: while the cap holds the queue back, one request would carry up to 512 KiB,
      // ~32 s at the cap, ten times the request timeout.
      {
        proxied: "sink",
        params: `request-timeout-ms=${SHORT_REQUEST_TIMEOUT_MS}`,
        sinkParams: "compression=none",
      },
      async (h) => {
        await predictionsFlow(h);
        const seen = h.run.stderr().length;
        const heal = await bandwidth("kafka", CAP_KB_S);
        // The fault bit: a request timed out, and the sink cut its requests down.
        const shrunkAt = await watchStderr(
          h,
          seen,
          /kafka sink: a request of \d+ records .* timed out/,
          60_000,
        );
        assert.ok(shrunkAt !== undefined, `no request was cut down; stderr:\n${h.run.stderr().slice(seen)}`);
        // Predictions flow again through the capped link, at about its rate.
        const from = h.output.records.length;
        await waitFor(
          () => h.output.records.length - from >= 300,
          30_000,
          () => `predictions after the requests were cut down; stderr:\n${h.run.stderr().slice(seen)}`,
        );
        const after = h.output.records.slice(from);
        const seconds = (after[after.length - 1].at - shrunkAt) / 1000;
        const bytesPerSecond = after.reduce((n, a) => n + a.bytes, 0) / seconds;
        console.log(
          `slow link (${CAP_KB_S} KB/s, request timeout ${SHORT_REQUEST_TIMEOUT_MS} ms): ` +
            `${after.length} predictions in ${seconds.toFixed(1)} s after the requests were cut ` +
            `(${(bytesPerSecond / 1000).toFixed(1)} KB/s); ` +
            h.run.stderr().slice(seen).split("\n").filter((l) => /kafka sink: a request/.test(l)).length +
            " cut(s)",
        );
        assert.ok(bytesPerSecond <= CAP_KB_S * 1000 * 1.1, "not faster than the cap");
        assertRunning(h);
        await healAndCatchUp(h, heal, `slow link on the sink`);
      },
    );
    console.log(`  test wall time ${Date.now() - started} ms`);
  },
});
