/**
 * Store and forward (`--buffer DIR`) on real brokers, through uplink outages: a private Kafka (own state
 * dir and ports, auto.create.topics.enable=false) stopped and started with scripts/services.sh kafka-stop /
 * kafka-up, and a private Mosquitto started by each test with STOCK queue limits (no max_queued_messages:
 * 1000 messages queued per session, beyond which Mosquitto silently drops new ones for that session). The
 * shared brokers are never touched. edgeinfer runs as a process, as an operator runs it.
 */
import assert from "node:assert/strict";
import { Kafka, logLevel } from "kafkajs";
import mqtt from "mqtt";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { type RunningCli, spawnCli } from "../cli/run_cli.ts";
import {
  createTopic,
  freePort,
  LiveOutput,
  privateKafkaServices,
  queuedForSession,
  uniqueName,
} from "./brokers.ts";
import { patchKafkajsIdlePolling, registerKafkajsCodecs } from "./kafkajs.ts";

const KAFKA_PORT = Number(Deno.env.get("EDGEINFER_BUFFER_KAFKA_PORT") ?? 19392);
const BROKER = `127.0.0.1:${KAFKA_PORT}`;
/** Mosquitto's stock max_queued_messages: what a disconnected or stalled session can hold. */
const STOCK_QUEUE = 1000;

patchKafkajsIdlePolling();
registerKafkajsCodecs(); // edgeinfer's sink compresses with zstd
/** Silent: the tests read the output only while Kafka is up, but a client may still meet an outage. */
const privateKafka = new Kafka({
  clientId: "edgeinfer-buffer-tests",
  brokers: [BROKER],
  logLevel: logLevel.NOTHING,
  connectionTimeout: 3000,
  retry: { retries: 2, initialRetryTime: 300, maxRetryTime: 2000 },
});

/** scripts/services.sh kafka-up | kafka-stop | kafka-down on the private Kafka. */
const services = privateKafkaServices(
  Deno.env.get("EDGEINFER_BUFFER_STATE") ?? "/tmp/edgeinfer-buffer-kafka",
  KAFKA_PORT,
);

const json = (id: number) => JSON.stringify({ id, a: id % 100 });
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 50 ms until it returns true; fails after `ms` with `what()` in the message. */
async function waitFor(check: () => boolean, ms: number, what: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what()}`);
    await sleep(50);
  }
}

function assertRunning(run: RunningCli, name: string) {
  assert.equal(run.exited, undefined, `${name} exited (${run.exited}):\n${run.stderr()}`);
}

/** Stops a run (SIGTERM, then SIGKILL after 20 s) and waits for it; returns its exit code. */
async function stop(run: RunningCli): Promise<number> {
  if (run.exited === undefined) {
    try {
      run.child.kill("SIGTERM");
    } catch { /* exited meanwhile */ }
  }
  const timer = setTimeout(() => {
    try {
      run.child.kill("SIGKILL");
    } catch { /* exited meanwhile */ }
  }, 20_000);
  try {
    return await run.exit();
  } finally {
    clearTimeout(timer);
  }
}

/** Wall time of a test's phases, for its summary line. */
class Phases {
  #t0 = Date.now();
  #last = this.#t0;
  #marks: string[] = [];
  mark(name: string): void {
    const now = Date.now();
    this.#marks.push(`${name} ${((now - this.#last) / 1000).toFixed(1)}`);
    this.#last = now;
  }
  toString(): string {
    return `${((Date.now() - this.#t0) / 1000).toFixed(1)} s (${this.#marks.join(", ")})`;
  }
}

/** Reads the predictions in `topic` from its beginning (kafkajs, a consumer group of its own). */
function readOutput(topic: string): Promise<LiveOutput<Prediction>> {
  return LiveOutput.start(topic, readPrediction, privateKafka);
}

// ------------------------------------------------------------------------------------ the status line

interface Status {
  acked: number;
  /** Records in the buffer (0 when "buffer empty"); undefined without --buffer. */
  records: number | undefined;
  /** Records removed by drop-oldest so far. */
  dropped: number;
  waitingForSink: boolean;
  /** Batches awaiting a durable write. */
  inFlight: number;
  line: string;
}

const STATUS = /^edgeinfer: status: (\d+) events acked.*$/gm;

/** Every status line in `stderr`, parsed, oldest first. */
function statuses(stderr: string): Status[] {
  return [...stderr.matchAll(STATUS)].map((m) => {
    const line = m[0];
    const buffered = /; buffer (?:empty|\d+ % of [^(]+\((\d+) records\))/.exec(line);
    return {
      acked: Number(m[1]),
      records: buffered === null ? undefined : Number(buffered[1] ?? 0),
      dropped: Number(/, (\d+) dropped \(drop-oldest\)/.exec(line)?.[1] ?? 0),
      waitingForSink: /waiting for Kafka sink /.test(line),
      inFlight: Number(/, (\d+) in flight/.exec(line)?.[1] ?? -1),
      line,
    };
  });
}

/** The last status line printed after the first `from` characters of stderr. */
function lastStatus(run: RunningCli, from = 0): Status | undefined {
  return statuses(run.stderr().slice(from)).at(-1);
}

/** Waits for a status line (printed after `from`) that satisfies `check`, and returns it. */
async function waitForStatus(
  run: RunningCli,
  check: (s: Status) => boolean,
  ms: number,
  what: string,
  from = 0,
): Promise<Status> {
  let found: Status | undefined;
  await waitFor(
    () => {
      assertRunning(run, "edgeinfer");
      found = statuses(run.stderr().slice(from)).find(check);
      return found !== undefined;
    },
    ms,
    () => `${what}; last status: ${lastStatus(run)?.line}`,
  );
  return found!;
}

/** The status lines of a run (printed after `from`), each with the time the test saw it (polled every 10 ms). */
class StatusWatch {
  readonly seen: { at: number; status: Status }[] = [];
  #timer: ReturnType<typeof setInterval>;

  constructor(run: RunningCli, from: number) {
    this.#timer = setInterval(() => {
      const all = statuses(run.stderr().slice(from));
      for (let i = this.seen.length; i < all.length; i++) this.seen.push({ at: Date.now(), status: all[i] });
    }, 10);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

// ------------------------------------------------------------------------------- a private Mosquitto

/** A Mosquitto process of its own on a free loopback port, with stock queue limits. */
class PrivateMosquitto {
  private constructor(
    readonly port: number,
    private readonly child: Deno.ChildProcess,
    private readonly dir: string,
  ) {}

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<PrivateMosquitto> {
    const binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
      .find((p) => {
        try {
          return Deno.statSync(p).isFile;
        } catch {
          return false;
        }
      }) ?? "mosquitto";
    const port = Number(Deno.env.get("EDGEINFER_BUFFER_MQTT_PORT") ?? freePort());
    const dir = await Deno.makeTempDir({ prefix: "edgeinfer-buffer-mosquitto-" });
    // Stock limits: no max_queued_messages, max_queued_bytes or max_inflight_messages line.
    await Deno.writeTextFile(
      `${dir}/mosquitto.conf`,
      `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\n`,
    );
    const child = new Deno.Command(binary, {
      args: ["-c", `${dir}/mosquitto.conf`],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let log = "";
    const drain = async (stream: ReadableStream<Uint8Array>) => {
      const d = new TextDecoder();
      for await (const chunk of stream) log += d.decode(chunk, { stream: true });
    };
    drain(child.stdout);
    drain(child.stderr);
    let exited = false;
    child.status.then(() => exited = true);
    const broker = new PrivateMosquitto(port, child, dir);
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (exited) throw new Error(`mosquitto exited at start:\n${log}`);
      try {
        const c = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0, connectTimeout: 1000 });
        await c.endAsync();
        return broker;
      } catch (e) {
        if (Date.now() > deadline) {
          await broker.stop();
          throw new Error(`mosquitto did not answer on ${broker.url}: ${e}\n${log}`);
        }
        await sleep(100);
      }
    }
  }

  async stop(): Promise<void> {
    try {
      this.child.kill("SIGTERM");
    } catch { /* exited already */ }
    await this.child.status;
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  /** Messages queued for a persistent session (see brokers.ts). */
  queuedForSession(clientId: string, waitMs = 1000): Promise<number> {
    return queuedForSession(clientId, waitMs, this.url);
  }
}

/**
 * Publishes events `from` … `to` - 1 at QoS 1 to `topic` at `rate` events/s (ticks of 50 ms); `published`
 * counts those the broker PUBACKed. `stop()` ends it early.
 */
class Publisher {
  published = 0;
  readonly from: number;
  #stopped = false;
  readonly done: Promise<void>;

  constructor(url: string, topic: string, from: number, to: number, rate: number) {
    this.from = from;
    this.done = (async () => {
      const client = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
      try {
        const tickMs = 50;
        const perTick = Math.max(1, Math.round(rate * tickMs / 1000));
        const start = performance.now();
        for (let id = from, tick = 0; id < to && !this.#stopped; tick++) {
          const wait = start + tick * tickMs - performance.now();
          if (wait > 0) await sleep(wait);
          const ids = range(id, Math.min(to, id + perTick));
          await Promise.all(ids.map((i) => client.publishAsync(topic, json(i), { qos: 1 })));
          this.published += ids.length;
          id += ids.length;
        }
      } finally {
        await client.endAsync();
      }
    })();
  }

  /** The id after the last one published. */
  get end(): number {
    return this.from + this.published;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.done;
  }
}

/** Publishes all of `ids` at once (QoS 1, every PUBACK awaited). */
async function publishAll(url: string, topic: string, ids: number[]): Promise<void> {
  const client = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
  try {
    await Promise.all(ids.map((i) => client.publishAsync(topic, json(i), { qos: 1 })));
  } finally {
    await client.endAsync();
  }
}

interface Prediction {
  id: number;
  score: number;
}

const readPrediction = (message: { value: { toString(): string } | null }): Prediction => {
  const v = JSON.parse(message.value!.toString());
  return { id: v.id, score: v.score };
};

/** Every prediction is for an id in [0, total) and has the model's score (a = id % 100). */
function assertReal(output: LiveOutput<Prediction>, total: number) {
  for (const p of output.records) {
    assert.ok(Number.isInteger(p.id) && p.id >= 0 && p.id < total, `unexpected id ${p.id}`);
    assert.equal(p.score, p.id % 100, `score of id ${p.id}`);
  }
}

function missingIds(output: LiveOutput<Prediction>, total: number): number[] {
  return range(0, total).filter((id) => !output.counts.has(id));
}

function edgeinferArgs(
  model: string,
  mosquitto: PrivateMosquitto,
  filter: string,
  clientId: string,
  out: string,
  extra: string[] = [],
  statusEvery = "0.25",
): string[] {
  return [
    "run",
    "--model",
    model,
    "--source",
    `mqtt://127.0.0.1:${mosquitto.port}/${filter}?client-id=${clientId}`,
    "--sink",
    `kafka://${BROKER}/${out}`,
    "--status-every",
    statusEvery,
    "--retry-max-backoff",
    "1s",
    ...extra,
  ];
}

/** Bytes of the buffer's SQLite files (database and write-ahead log) in `dir`. */
async function bufferFileBytes(dir: string): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.startsWith("edgeinfer-buffer.db")) n += (await Deno.stat(`${dir}/${e.name}`)).size;
  }
  return n;
}

const MiB = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

Deno.test({
  name: "--buffer: MQTT → Kafka through a long Kafka outage on a stock Mosquitto (1000 queued at most), " +
    "with a SIGKILL and a restart on the same DIR mid-outage: every event delivered; drain at 1000/s",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const phases = new Phases();
    await services("kafka-down").catch(() => {});
    await services("kafka-up");
    const out = uniqueName("buffer-out");
    await createTopic(out, 1, privateKafka);
    phases.mark("kafka-up");
    const mosquitto = await PrivateMosquitto.start();
    const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
    const dir = await Deno.makeTempDir({ prefix: "edgeinfer-buffer-" });
    const base = uniqueName("buffer");
    const topic = `${base}/car`;
    const clientId = uniqueName("edgeinfer-buffer");
    // Status lines every 0.05 s: they time the drain.
    const args = edgeinferArgs(model, mosquitto, `${base}/+`, clientId, out, ["--buffer", dir], "0.05");
    const runs: RunningCli[] = [];
    let output: LiveOutput<Prediction> | undefined;
    let feed: Publisher | undefined;
    let kafkaDown = false;
    try {
      // 1. Kafka up: predictions flow through the buffer (acknowledged, then forwarded and removed).
      const first = spawnCli(args);
      runs.push(first);
      await first.waitForStderr(/status: /);
      const FLOW = 200;
      await publishAll(mosquitto.url, topic, range(0, FLOW));
      await waitForStatus(first, (s) => s.acked === FLOW && s.records === 0, 30_000, `${FLOW} forwarded`);
      phases.mark("flow");

      // 2. Kafka down; 4000 events at 1000/s, 4x what the stock Mosquitto queue holds for a session.
      const seen = first.stderr().length;
      await services("kafka-stop");
      kafkaDown = true;
      const downAt = Date.now();
      const OUTAGE = 4000;
      await new Publisher(mosquitto.url, topic, FLOW, FLOW + OUTAGE, 1000).done;
      const publishSeconds = (Date.now() - downAt) / 1000;
      // The fault bit: the sink is down (the run says so), yet every event is acknowledged, into the buffer:
      // none is left to the broker's queue.
      await first.waitForStderr(/Kafka sink 127\.0\.0\.1:\d+: .*retrying until it recovers/, 30_000);
      const peak = await waitForStatus(
        first,
        (s) => s.acked === FLOW + OUTAGE && s.records === OUTAGE,
        30_000,
        `all ${FLOW + OUTAGE} events acked and ${OUTAGE} records buffered`,
        seen,
      );
      assert.ok(peak.waitingForSink, `the status line shows the outage: ${peak.line}`);
      const growth = statuses(first.stderr().slice(seen)).map((s) => s.records ?? 0);
      assert.ok(growth.some((r) => r > 0 && r < OUTAGE), `the buffer grew as events came: ${growth}`);
      console.log(
        `Kafka down: ${OUTAGE} events published in ${publishSeconds.toFixed(1)} s, all acked into the ` +
          `buffer (${/; (buffer [^;]*)/.exec(peak.line)![1]}; ${MiB(await bufferFileBytes(dir))} on disk)`,
      );
      phases.mark("outage");

      // 3. SIGKILL while Kafka is down; 300 more events (the broker queues them for the session).
      first.child.kill("SIGKILL");
      await first.exit();
      const AFTER_KILL = 300;
      let next = FLOW + OUTAGE;
      await publishAll(mosquitto.url, topic, range(next, next + AFTER_KILL));
      next += AFTER_KILL;

      // 4. A new run on the same DIR, Kafka still down: it finds the buffer and buffers the queued events.
      const second = spawnCli(args);
      runs.push(second);
      await second.waitForStderr(/buffer: \d+ records .* left by an earlier run/, 30_000);
      const left = Number(/buffer: (\d+) records .* left by an earlier run/.exec(second.stderr())![1]);
      assert.equal(left, OUTAGE, "the new run found every record the killed one had buffered");
      const restarted = await waitForStatus(
        second,
        (s) => s.acked >= AFTER_KILL && s.records === OUTAGE + s.acked,
        30_000,
        `the ${AFTER_KILL} events queued by the broker acked into the buffer`,
      );
      assert.ok(restarted.waitingForSink, restarted.line);
      phases.mark("kill+restart");

      // 5. Kafka back, with events still arriving at 1000/s (from before kafka-up on): the buffer drains.
      // Kafka is "up" when its port accepts connections (kafka-up returns later: it checks readiness with
      // a JVM tool, by which time the buffer may be empty already).
      const watch = new StatusWatch(second, second.stderr().length);
      feed = new Publisher(mosquitto.url, topic, next, next + 60_000, 1000);
      let portOpenAt: number | undefined;
      let polling = true;
      const portPoll = (async () => {
        while (polling && portOpenAt === undefined) {
          try {
            (await Deno.connect({ hostname: "127.0.0.1", port: KAFKA_PORT })).close();
            portOpenAt = Date.now();
          } catch {
            await sleep(10);
          }
        }
      })();
      let upAt: number;
      try {
        await services("kafka-up");
        kafkaDown = false;
        upAt = Date.now();
        await second.waitForStderr(/Kafka sink 127\.0\.0\.1:\d+: recovered after/, 30_000);
        await waitFor(
          () => watch.seen.some((s) => s.at > upAt && s.status.records! < 200),
          60_000,
          () => `the buffer to drain; last status: ${lastStatus(second)?.line}`,
        );
      } finally {
        watch.stop();
        polling = false;
        await portPoll;
      }
      await feed.stop();
      next = feed.end;
      // The peak: the last status line before the buffer shrank; the end: the first one under 200 records
      // after it. Forwarded meanwhile: what the buffer held, plus what arrived, minus what is left.
      const lines = watch.seen;
      const peakAt = lines.reduce(
        (best, s, i) => s.status.records! >= lines[best].status.records! ? i : best,
        0,
      );
      const peak2 = lines[peakAt];
      const end = lines.find((s, i) => i > peakAt && s.status.records! < 200)!;
      const up = lines.filter((s) => s.at <= portOpenAt!).at(-1) ?? lines[0];
      const forwarded = (from: typeof up) =>
        from.status.records! + (end.status.acked - from.status.acked) - end.status.records!;
      const peakBytes = await bufferFileBytes(dir); // the files stay near their peak size
      const fromUp = (end.at - portOpenAt!) / 1000;
      const fromPeak = (end.at - peak2.at) / 1000;
      console.log(
        `Kafka up: buffer peak ${peak2.status.records} records (${
          MiB(peakBytes)
        } on disk), events arriving ` +
          `at 1000/s throughout; empty (< 200 records) ${fromUp.toFixed(2)} s after Kafka's port opened ` +
          `(kafka-up returned at ${((upAt - portOpenAt!) / 1000).toFixed(2)} s): ${forwarded(up)} records ` +
          `forwarded, ${Math.round(forwarded(up) / fromUp)} records/s including the sink's reconnect; ` +
          `${forwarded(peak2)} in ${fromPeak.toFixed(2)} s once draining: ~` +
          `${Math.round(forwarded(peak2) / fromPeak)} records/s (status lines every 0.05 s)`,
      );
      phases.mark("drain");

      // 6. Every published id reached the output topic; the run empties its buffer and stops cleanly.
      const total = next;
      const secondAcked = total - FLOW - OUTAGE;
      await waitForStatus(second, (s) => s.records === 0 && s.acked >= secondAcked, 30_000, "empty");
      output = await readOutput(out);
      const got = output;
      await waitFor(
        () => got.covered() >= total,
        60_000,
        () => `all ${total} ids in the output; missing e.g. ${missingIds(got, total).slice(0, 10)}`,
      );
      assertReal(output, total);
      assert.equal(await stop(second), 0, second.stderr());
      assert.equal(await mosquitto.queuedForSession(clientId), 0, "every MQTT event PUBACKed");
      phases.mark("verify");
      console.log(
        `--buffer: ${total} events published (${OUTAGE + AFTER_KILL} during a ` +
          `${Math.round((upAt - downAt) / 1000)} s outage, over 4x the broker's queue), all ${total} ` +
          `delivered, none lost, ${output.duplicates()} duplicates; test ${phases}`,
      );
    } finally {
      await feed?.stop().catch(() => {});
      for (const run of runs) await stop(run);
      await output?.stop().catch(() => {});
      if (kafkaDown) await services("kafka-up").catch(() => {});
      await mosquitto.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await Deno.remove(model).catch(() => {});
    }
  },
});

Deno.test({
  name: "Without --buffer, the same outage on a stock Mosquitto loses events: the broker drops what " +
    "exceeds its queue while edgeinfer holds its in-memory batches",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const phases = new Phases();
    await services("kafka-up");
    const out = uniqueName("nobuffer-out");
    await createTopic(out, 1, privateKafka);
    const mosquitto = await PrivateMosquitto.start();
    const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
    const base = uniqueName("nobuffer");
    const topic = `${base}/car`;
    const clientId = uniqueName("edgeinfer-nobuffer");
    let run: RunningCli | undefined;
    let output: LiveOutput<Prediction> | undefined;
    let kafkaDown = false;
    try {
      run = spawnCli(edgeinferArgs(model, mosquitto, `${base}/+`, clientId, out));
      await run.waitForStderr(/status: /);
      const FLOW = 100;
      await publishAll(mosquitto.url, topic, range(0, FLOW));
      // Without a buffer, acknowledged = in Kafka.
      await waitForStatus(run, (s) => s.acked === FLOW, 30_000, `${FLOW} events in Kafka`);
      phases.mark("flow");

      const seen = run.stderr().length;
      await services("kafka-stop");
      kafkaDown = true;
      const OUTAGE = 3000;
      await new Publisher(mosquitto.url, topic, FLOW, FLOW + OUTAGE, 1000).done;
      const total = FLOW + OUTAGE;
      // The fault bit: the run waits for Kafka and holds what it took (in memory, unacknowledged).
      const held = await waitForStatus(
        run,
        (s) => s.waitingForSink && s.acked === FLOW && s.inFlight > 0,
        30_000,
        "waiting for the Kafka sink, batches held",
        seen,
      );
      assert.equal(held.records, undefined, "no buffer");
      phases.mark("outage");
      await services("kafka-up");
      kafkaDown = false;
      // What edgeinfer held and what the broker queued arrives: wait until the run has caught up (nothing in
      // flight), stop it, and count what the broker still queues for the session (not lost, not delivered).
      await waitForStatus(
        run,
        (s) => !s.waitingForSink && s.inFlight === 0 && s.acked >= FLOW + STOCK_QUEUE,
        60_000,
        "the run caught up after the outage",
        seen,
      );
      assert.equal(await stop(run), 0, run.stderr());
      const acked = Number(/done: (\d+) events acked/.exec(run.stderr())![1]);
      const stillQueued = await mosquitto.queuedForSession(clientId);
      phases.mark("recovery");
      output = await readOutput(out);
      const got = output;
      await waitFor(
        () => got.counts.size >= acked,
        30_000,
        () => `${acked} acked events in the output (${got.counts.size})`,
      );
      assertReal(output, total);
      const arrived = output.counts.size;
      const lost = total - arrived - stillQueued;
      phases.mark("verify");
      console.log(
        `without --buffer: ${OUTAGE} events published during the outage, ${arrived - FLOW} arrived ` +
          `(held by edgeinfer + queued by the broker), ${stillQueued} still queued, ${lost} lost (dropped ` +
          `by Mosquitto's stock ${STOCK_QUEUE}-message queue), ${output.duplicates()} duplicates; ` +
          `test ${phases}`,
      );
      assert.equal(arrived, acked, "what was acknowledged is what arrived");
      assert.ok(lost > 0, `events were lost (${arrived} of ${total} arrived, ${stillQueued} still queued)`);
      assert.ok(arrived - FLOW >= STOCK_QUEUE, `at least the broker's queue arrived (${arrived - FLOW})`);
    } finally {
      if (run) await stop(run);
      await output?.stop().catch(() => {});
      if (kafkaDown) await services("kafka-up").catch(() => {});
      await mosquitto.stop();
      await Deno.remove(model).catch(() => {});
    }
  },
});

Deno.test({
  name: "--buffer-when-full drop-oldest with a 20000-byte buffer through a Kafka outage: events keep being " +
    "acknowledged, the oldest records are dropped and counted, the newest arrive",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const phases = new Phases();
    await services("kafka-up");
    const out = uniqueName("dropoldest-out");
    await createTopic(out, 1, privateKafka);
    const mosquitto = await PrivateMosquitto.start();
    const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
    const dir = await Deno.makeTempDir({ prefix: "edgeinfer-buffer-" });
    const base = uniqueName("dropoldest");
    const topic = `${base}/car`;
    const clientId = uniqueName("edgeinfer-dropoldest");
    const MAX_BYTES = 20_000;
    let run: RunningCli | undefined;
    let output: LiveOutput<Prediction> | undefined;
    let kafkaDown = false;
    try {
      run = spawnCli(
        edgeinferArgs(model, mosquitto, `${base}/+`, clientId, out, [
          "--buffer",
          dir,
          "--buffer-max-bytes",
          String(MAX_BYTES),
          "--buffer-when-full",
          "drop-oldest",
        ]),
      );
      await run.waitForStderr(/status: /);
      const FLOW = 100;
      await publishAll(mosquitto.url, topic, range(0, FLOW));
      await waitForStatus(run, (s) => s.acked === FLOW && s.records === 0, 30_000, `${FLOW} forwarded`);
      phases.mark("flow");

      const seen = run.stderr().length;
      await services("kafka-stop");
      kafkaDown = true;
      const OUTAGE = 3000;
      const total = FLOW + OUTAGE;
      await new Publisher(mosquitto.url, topic, FLOW, total, 1000).done;
      // The fault bit: every event acknowledged (none left to the broker's queue) while the buffer is full
      // and drops its oldest records, and says so.
      const full = await waitForStatus(
        run,
        (s) => s.waitingForSink && s.acked === total && s.dropped > 0,
        30_000,
        `all ${total} events acked with records dropped`,
        seen,
      );
      assert.match(
        run.stderr(),
        /buffer: full \(20 KiB\): dropped the \d+ oldest records \(--buffer-when-full drop-oldest; \d+ so far\)/,
      );
      const fullLines = run.stderr().match(/^edgeinfer: buffer: full \(/gm)!.length;
      assert.ok(fullLines <= 3, `a few "full" lines, not one per batch (${fullLines})`);
      const dropped = full.dropped;
      phases.mark("outage");
      await services("kafka-up");
      kafkaDown = false;
      await waitForStatus(
        run,
        (s) => s.records === 0 && !s.waitingForSink && s.acked === total && s.dropped === dropped,
        60_000,
        "the buffer forwarded (and the count of dropped records still shown)",
        seen,
      );
      assert.equal(await stop(run), 0, run.stderr());
      phases.mark("recovery");
      // What arrives: the oldest records, those the forwarder had taken (in flight) when Kafka went down, and
      // the newest; the dropped ones are the records between (contiguous), as many as the run counted.
      output = await readOutput(out);
      const got = output;
      await waitFor(
        () => got.counts.size + dropped >= total,
        30_000,
        () => `${total - dropped} ids in the output (${got.counts.size})`,
      );
      assertReal(output, total);
      const arrived = output.counts.size;
      const missing = missingIds(output, total);
      phases.mark("verify");
      console.log(
        `drop-oldest (--buffer-max-bytes ${MAX_BYTES}): ${OUTAGE} events during the outage, all acked ` +
          `(then: ${/; (buffer [^;]*)/.exec(full.line)![1]}); ${dropped} dropped (ids ${missing[0]}…` +
          `${missing.at(-1)}), ${arrived - FLOW} arrived (the first ${missing[0] - FLOW} of the outage, ` +
          `already sent and in flight, and the newest ${total - 1 - missing.at(-1)!}), ${
            total - arrived - dropped
          } ` +
          `unaccounted, ${output.duplicates()} duplicates; test ${phases}`,
      );
      assert.equal(arrived + dropped, total, "every event arrived or was counted as dropped");
      assert.equal(missing.length, dropped);
      assert.equal(missing.at(-1)! - missing[0] + 1, dropped, `the dropped ones are contiguous: ${missing}`);
      assert.ok(missing.at(-1)! < total - 1, "the newest arrived");
      assert.ok(missing[0] >= FLOW, "only records of the outage were dropped");
      assert.equal(await mosquitto.queuedForSession(clientId), 0, "every MQTT event PUBACKed");
    } finally {
      if (run) await stop(run);
      await output?.stop().catch(() => {});
      if (kafkaDown) await services("kafka-up").catch(() => {});
      await mosquitto.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await Deno.remove(model).catch(() => {});
    }
  },
});

Deno.test({
  name: "--buffer DIR is one process's: a second run on the same DIR exits 1 at once with a clear message",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const mosquitto = await PrivateMosquitto.start();
    const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
    const dir = await Deno.makeTempDir({ prefix: "edgeinfer-buffer-" });
    const base = uniqueName("lock");
    const args = (clientId: string) => [
      "run",
      "--model",
      model,
      "--source",
      `mqtt://127.0.0.1:${mosquitto.port}/${base}/+?client-id=${clientId}`,
      "--sink",
      "-",
      "--buffer",
      dir,
      "--status-every",
      "0.25",
    ];
    let first: RunningCli | undefined;
    let second: RunningCli | undefined;
    try {
      first = spawnCli(args(uniqueName("edgeinfer-lock")));
      await first.waitForStderr(/status: .*buffer empty/);
      const started = Date.now();
      second = spawnCli(args(uniqueName("edgeinfer-lock")));
      let timer: ReturnType<typeof setTimeout> | undefined;
      const code = await Promise.race([
        second.exit(),
        new Promise<string>((resolve) => timer = setTimeout(() => resolve("still running"), 20_000)),
      ]);
      clearTimeout(timer);
      const elapsed = Date.now() - started;
      assert.equal(code, 1, second.stderr());
      assert.ok(elapsed < 15_000, `exited after ${elapsed} ms`);
      const errors = second.stderr().split("\n").filter((l) => l.startsWith("edgeinfer: error:"));
      assert.equal(errors.length, 1, second.stderr());
      assert.match(errors[0], /--buffer .* is in use by another edgeinfer process/);
      assert.doesNotMatch(second.stderr(), /^\s+at /m, "no stack trace");
      // The first run is unaffected and still works.
      await publishAll(mosquitto.url, `${base}/car`, range(0, 10));
      await first.waitForStderr(/status: 10 events acked.*buffer empty/);
      assertRunning(first, "the first run");
      assert.equal(await stop(first), 0, first.stderr());
      assert.equal(first.stdout().trim().split("\n").length, 10);
      console.log(`a second run on the same --buffer DIR exited 1 after ${elapsed} ms`);
    } finally {
      if (first) await stop(first);
      if (second) await stop(second);
      await mosquitto.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await Deno.remove(model).catch(() => {});
      // The last test of the file: leave no private Kafka behind.
      await services("kafka-down").catch(() => {});
    }
  },
});
