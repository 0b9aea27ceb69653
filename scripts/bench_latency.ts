/**
 * Latency and memory of `edgeinfer run`, MQTT (QoS 1) → car model → Kafka, at a steady offered rate.
 *
 *   deno run -A scripts/bench_latency.ts [--rate 10000] [--duration 30] [--warmup 5] [--json]
 *       [--batch-size N] [--linger-ms N] [--max-in-flight N] [--extra "more run flags"]
 *       [--publishers 2] [--cars 1000] [--tick-ms 2] [--partitions 1] [--drain 20]
 *       [--mqtt 127.0.0.1:1883] [--kafka 127.0.0.1:9092] [--keep-topic] [--root DIR]
 *
 * What it does (needs the brokers: scripts/services.sh up):
 * 1. Creates a new output topic (--partitions, replication 1) and starts a @platformatic/kafka consumer
 *    on it (read_committed, maxWaitTime 10 ms, so that the consumer adds little).
 * 2. Starts `edgeinfer run --source mqtt://…/<unique>/+/sensors?qos=1 --key-field car --passthrough
 *    ts:event_ts,ts_us --sink kafka://…/<topic>` as a child (plus --batch-size/--linger-ms/--max-in-flight
 *    when given, else run's defaults; --extra adds more), the way the `edgeinfer` task of --root's
 *    deno.json starts it (same permissions and V8 heap flags; --root defaults to this checkout). Waits
 *    for its "subscribed" line, then publishes probe events until one comes out of the topic, then lets
 *    it sit idle for 3 s (idle RSS).
 * 3. A worker thread publishes simulated car events (src/sim/fleet.ts) at --rate events/s, paced in
 *    bursts every --tick-ms, QoS 1, round-robin over --publishers MQTT clients, for --warmup + --duration
 *    seconds. Each event carries `ts` = Date.now() and `ts_us` = µs wall clock at publish time, and a
 *    sequence number as `id`.
 * 4. Per prediction consumed: latency = consume time − ts_us. That is an UPPER BOUND of publish →
 *    durable: it includes the consumer's fetch (and the bench process's own scheduling). Broken down
 *    with the record's own timestamps (ms resolution): event ts → scored (the record's `ts`, taken by
 *    edgeinfer after inference: MQTT hop, source, batching linger, decode, model), scored → record batch
 *    built (the Kafka record timestamp, CreateTime, set by the producer when it encodes the request:
 *    the sink's queue behind the request in flight), batch built → consumed (produce round trip, append,
 *    fetch). Events published during the warm-up are excluded from the figures, not from the loss count.
 * 5. edgeinfer's RSS is read from /proc/PID/status every second: idle (before load), peak (sampled, and
 *    the kernel's VmHWM), at the end.
 *
 * Human-readable report on stdout (progress on stderr); --json prints one JSON object instead.
 */
import { parseArgs } from "node:util";
import mqtt from "mqtt";
import {
  Admin,
  Consumer,
  FetchIsolationLevels,
  MessagesStreamModes,
  stringDeserializers,
} from "@platformatic/kafka";
import { DEFAULT_FAILURE_RATES, DEFAULT_INITIAL_FAILURES, Fleet } from "../src/sim/fleet.ts";
import { parseRunSummary } from "../src/bench/end_to_end.ts";

// ---------------------------------------------------------------------------------------------
// Publisher (runs in a worker thread, so that publishing and consuming do not delay each other)
// ---------------------------------------------------------------------------------------------

interface LoadSpec {
  mqttUrl: string;
  /** Topic prefix: events go to `<base>/<car>/sensors`. */
  base: string;
  rate: number;
  warmupS: number;
  seconds: number;
  clients: number;
  cars: number;
  seed: number;
  tickMs: number;
  /** Unacknowledged QoS 1 publishes per client before that client is skipped. */
  maxInFlight: number;
}

interface PublisherDone {
  type: "done";
  /** Wall clock (µs) when publishing started; events with ts_us < startUs + warmup are warm-up. */
  startUs: number;
  published: number;
  acked: number;
  failed: number;
  seconds: number;
  /** Largest number of events that were due but not yet published at a tick. */
  maxBacklog: number;
  /** Ticks at which every client had a full window (publishing waited for PUBACKs). */
  blockedTicks: number;
  ticks: number;
  /** Publish → PUBACK, ms: p50, p99, max (after the warm-up). */
  ackMs: [number, number, number];
}

const now_us = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Nearest-rank percentile of a sorted array. */
function pct(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

async function publisher(spec: LoadSpec, post: (m: unknown) => void): Promise<void> {
  const clients = await Promise.all(
    Array.from({ length: spec.clients }, (_, i) =>
      mqtt.connectAsync(spec.mqttUrl, {
        clientId: `bench-latency-pub-${i}-${crypto.randomUUID().slice(0, 6)}`,
        clean: true,
        reconnectPeriod: 1000,
      })),
  );
  const inFlight = new Array(spec.clients).fill(0);
  const fleet = new Fleet({
    cars: spec.cars,
    seed: spec.seed,
    interval: spec.cars / spec.rate, // simulated time runs at about wall-clock speed
    startTs: Date.now(),
    failureRates: DEFAULT_FAILURE_RATES,
    initialFailures: DEFAULT_INITIAL_FAILURES,
  });
  const total = Math.ceil(spec.rate * (spec.warmupS + spec.seconds));
  const ackMs = new Float32Array(total).fill(NaN);
  let acked = 0;
  let failed = 0;
  let sent = 0;
  let maxBacklog = 0;
  let blockedTicks = 0;
  let ticks = 0;
  let next = 0; // round-robin client
  post({ type: "ready" });
  await new Promise<void>((resolve) => {
    // deno-lint-ignore no-explicit-any
    (self as any).onmessage = () => resolve();
  });
  const startUs = now_us();
  const start = performance.now();
  const end = start + (spec.warmupS + spec.seconds) * 1000;
  const warmEnd = start + spec.warmupS * 1000;
  let lastProgress = start;
  while (true) {
    const t = performance.now();
    if (t >= end) break;
    ticks++;
    const due = Math.min(total, Math.floor(((t - start) * spec.rate) / 1000));
    let n = due - sent;
    if (n > maxBacklog && t > start + 1000) maxBacklog = n;
    while (n > 0) {
      let c = -1;
      for (let k = 0; k < spec.clients; k++) {
        const i = (next + k) % spec.clients;
        if (inFlight[i] < spec.maxInFlight) {
          c = i;
          break;
        }
      }
      if (c < 0) {
        blockedTicks++;
        break;
      }
      next = (c + 1) % spec.clients;
      const event = fleet.next() as unknown as Record<string, unknown>;
      const seq = sent++;
      n--;
      event.ts = Date.now();
      event.ts_us = now_us();
      event.id = seq;
      const t0 = performance.now();
      inFlight[c]++;
      clients[c].publish(`${spec.base}/${event.car}/sensors`, JSON.stringify(event), { qos: 1 }, (err) => {
        inFlight[c]--;
        if (err) failed++;
        else {
          acked++;
          if (t0 >= warmEnd) ackMs[seq] = performance.now() - t0;
        }
      });
    }
    if (t - lastProgress >= 1000) {
      lastProgress = t;
      post({ type: "progress", published: sent, acked });
    }
    await sleep(spec.tickMs);
  }
  const seconds = (performance.now() - start) / 1000;
  // Every PUBACK (bounded wait), then disconnect.
  for (let waited = 0; acked + failed < sent && waited < 30_000; waited += 20) await sleep(20);
  await Promise.all(clients.map((c) => c.endAsync()));
  const acks = ackMs.filter((x) => !Number.isNaN(x)).sort();
  const done: PublisherDone = {
    type: "done",
    startUs,
    published: sent,
    acked,
    failed,
    seconds,
    maxBacklog,
    blockedTicks,
    ticks,
    ackMs: [pct(acks, 0.5), pct(acks, 0.99), acks.length ? acks[acks.length - 1] : NaN],
  };
  post(done);
}

// deno-lint-ignore no-explicit-any
if (typeof (globalThis as any).WorkerGlobalScope !== "undefined") {
  // In the worker: the first message is the load spec.
  // deno-lint-ignore no-explicit-any
  const scope = self as any;
  scope.onmessage = (e: MessageEvent<LoadSpec>) => {
    publisher(e.data, (m) => scope.postMessage(m)).catch((err) => {
      scope.postMessage({ type: "error", message: String(err?.stack ?? err) });
    }).finally(() => scope.close());
  };
} else {
  await main();
}

// ---------------------------------------------------------------------------------------------
// Main: topic, consumer, edgeinfer child, RSS sampling, report
// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values: f } = parseArgs({
    args: Deno.args,
    options: {
      rate: { type: "string", default: "10000" },
      duration: { type: "string", default: "30" },
      warmup: { type: "string", default: "5" },
      "batch-size": { type: "string" },
      "linger-ms": { type: "string" },
      "max-in-flight": { type: "string" },
      extra: { type: "string", default: "" },
      publishers: { type: "string", default: "2" },
      cars: { type: "string", default: "1000" },
      "tick-ms": { type: "string", default: "2" },
      partitions: { type: "string", default: "1" },
      drain: { type: "string", default: "20" },
      mqtt: { type: "string", default: "127.0.0.1:1883" },
      kafka: { type: "string", default: "127.0.0.1:9092" },
      root: { type: "string" },
      "keep-topic": { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (f.help) {
    console.log(
      "deno run -A scripts/bench_latency.ts [--rate 10000] [--duration 30] [--warmup 5] [--json]\n" +
        "  [--batch-size N] [--linger-ms N] [--max-in-flight N] [--extra 'run flags'] [--publishers 2]\n" +
        "  [--cars 1000] [--tick-ms 2] [--partitions 1] [--drain 20] [--mqtt H:P] [--kafka H:P] [--keep-topic]\n" +
        "  [--root DIR: the checkout whose edgeinfer is run]",
    );
    return;
  }
  const num = (name: keyof typeof f, min: number) => {
    const v = Number(f[name]);
    if (!Number.isFinite(v) || v < min) {
      console.error(`bench_latency: --${name} must be a number >= ${min}, got ${f[name]}`);
      Deno.exit(2);
    }
    return v;
  };
  const rate = num("rate", 1);
  const duration = num("duration", 1);
  const warmup = num("warmup", 0);
  const clients = num("publishers", 1);
  const cars = num("cars", 1);
  const tickMs = num("tick-ms", 1);
  const partitions = num("partitions", 1);
  const drainS = num("drain", 1);
  const say = (m: string) => console.error(`bench_latency: ${m}`);

  const id = crypto.randomUUID().slice(0, 8);
  const base = `bench-latency-${id}`;
  const topic = `bench-latency-out-${id}`;
  const brokers = f.kafka!.split(",");

  // 1. Output topic and consumer.
  const admin = new Admin({ clientId: "bench-latency", bootstrapBrokers: brokers });
  await admin.createTopics({ topics: [topic], partitions, replicas: 1 });
  const consumer = new Consumer({
    clientId: "bench-latency",
    bootstrapBrokers: brokers,
    groupId: `bench-latency-${id}`,
    deserializers: stringDeserializers,
    autocommit: false,
    maxWaitTime: 10,
    isolationLevel: FetchIsolationLevels.READ_COMMITTED,
  });
  const capacity = Math.ceil(rate * (warmup + duration)) + 16;
  const e2eUs = new Float64Array(capacity).fill(NaN); // consume − ts_us
  const tsUs = new Float64Array(capacity).fill(NaN);
  const toScored = new Float64Array(capacity).fill(NaN); // record ts − event ts (ms)
  const toBuilt = new Float64Array(capacity).fill(NaN); // Kafka CreateTime − record ts (ms)
  const toConsumed = new Float64Array(capacity).fill(NaN); // consume − CreateTime (ms)
  let received = 0;
  let duplicates = 0;
  let probesSeen = 0;
  let unexpected = 0;
  const stream = await consumer.consume({ topics: [topic], mode: MessagesStreamModes.EARLIEST });
  stream.on("data", (m) => {
    const consumedMs = performance.timeOrigin + performance.now();
    const r = JSON.parse(m.value) as { id?: unknown; ts: number; event_ts: number; ts_us: number };
    if (typeof r.id === "string" && r.id.startsWith("probe")) {
      probesSeen++;
      return;
    }
    const seq = r.id;
    if (typeof seq !== "number" || seq < 0 || seq >= capacity) {
      unexpected++;
      return;
    }
    if (!Number.isNaN(e2eUs[seq])) {
      duplicates++;
      return;
    }
    received++;
    const created = Number(m.timestamp);
    e2eUs[seq] = consumedMs * 1000 - r.ts_us;
    tsUs[seq] = r.ts_us;
    toScored[seq] = r.ts - r.event_ts;
    toBuilt[seq] = created - r.ts;
    toConsumed[seq] = consumedMs - created;
  });
  stream.on("error", (e) => say(`consumer error: ${e}`));

  // 2. edgeinfer run.
  const runArgs = [
    "run",
    "--model",
    "models/car-anomaly.onnx",
    "--source",
    `mqtt://${f.mqtt}/${base}/+/sensors?qos=1`,
    "--key-field",
    "car",
    "--passthrough",
    "ts:event_ts,ts_us",
    "--sink",
    `kafka://${brokers.join(",")}/${topic}`,
    "--status-every",
    "5",
  ];
  for (const flag of ["batch-size", "linger-ms", "max-in-flight"] as const) {
    if (f[flag] !== undefined) runArgs.push(`--${flag}`, f[flag]!);
  }
  runArgs.push(...f.extra!.split(" ").filter((a) => a !== ""));
  // Started the way `deno task edgeinfer` starts it (same permissions and V8 heap flags), from --root.
  const root = f.root ?? new URL("../", import.meta.url).pathname;
  const task = (JSON.parse(Deno.readTextFileSync(`${root}/deno.json`)).tasks?.edgeinfer ?? "") as string;
  const taskArgs = task.split(/\s+/).filter((a) => a !== "");
  if (taskArgs[0] !== "deno" || taskArgs.at(-1) !== "main.ts") {
    console.error(
      `bench_latency: ${root}/deno.json has no "edgeinfer" task of the form "deno run … main.ts"`,
    );
    Deno.exit(2);
  }
  say(`${task} ${runArgs.join(" ")}   (in ${root})`);
  const child = new Deno.Command(Deno.execPath(), {
    args: [...taskArgs.slice(1), ...runArgs],
    cwd: root,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const stderrDone = (async () => {
    const d = new TextDecoder();
    let carry = "";
    for await (const chunk of child.stderr) {
      const text = d.decode(chunk, { stream: true });
      stderr += text;
      const lines = (carry + text).split("\n");
      carry = lines.pop()!;
      for (const line of lines) console.error(`  [run] ${line.replace(/^edgeinfer: /, "")}`);
    }
  })();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });

  // RSS sampling, every second from the start.
  const rss = (): { rss: number; hwm: number } => {
    try {
      const s = Deno.readTextFileSync(`/proc/${child.pid}/status`);
      const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? NaN);
      return { rss: kb("VmRSS") / 1024, hwm: kb("VmHWM") / 1024 };
    } catch {
      return { rss: NaN, hwm: NaN };
    }
  };
  /** CPU seconds used by edgeinfer (utime + stime), and by the whole machine (busy, all cores). */
  const cpu = (): { child: number; busy: number; total: number } => {
    try {
      const stat = Deno.readTextFileSync(`/proc/${child.pid}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const sys = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
      const idleTicks = sys[3] + sys[4];
      const total = sys.reduce((a, b) => a + b, 0);
      return {
        child: (Number(fields[11]) + Number(fields[12])) / 100,
        busy: (total - idleTicks) / 100,
        total: total / 100,
      };
    } catch {
      return { child: NaN, busy: NaN, total: NaN };
    }
  };
  type Phase = "start" | "idle" | "load" | "drain";
  let phase: Phase = "start";
  /** Time some task waited for a CPU, µs since boot (Linux PSI); NaN where unavailable. */
  const cpuPressureUs = () => {
    try {
      return Number(/^some .*total=(\d+)/m.exec(Deno.readTextFileSync("/proc/pressure/cpu"))?.[1] ?? NaN);
    } catch {
      return NaN;
    }
  };
  const samples: { t: number; phase: Phase; rss: number; at: number; stallMs: number }[] = [];
  let lastPressure = cpuPressureUs();
  const t0 = performance.now();
  let lastHwm = NaN;
  const sampler = setInterval(() => {
    if (exited) return;
    const r = rss();
    const pressure = cpuPressureUs();
    const stallMs = (pressure - lastPressure) / 1000;
    lastPressure = pressure;
    if (!Number.isNaN(r.rss)) {
      const t = Math.round((performance.now() - t0) / 100) / 10;
      samples.push({ t, phase, rss: r.rss, at: Date.now(), stallMs: Math.round(stallMs) });
      lastHwm = r.hwm;
    }
  }, 1000);

  const fail = async (message: string): Promise<never> => {
    say(message);
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    clearInterval(sampler);
    await status;
    await stderrDone;
    Deno.exit(1);
  };

  for (let waited = 0; !/mqtt: subscribed to/.test(stderr); waited += 50) {
    if (exited || waited > 60_000) {
      await fail("edgeinfer did not subscribe within 60 s (see its lines above)");
    }
    await sleep(50);
  }
  // 3. Probes until one comes out on the output topic.
  const probeClient = await mqtt.connectAsync(`mqtt://${f.mqtt}`, { clientId: `bench-latency-probe-${id}` });
  const probeFleet = new Fleet({
    cars: 1,
    seed: 99,
    interval: 1,
    startTs: Date.now(),
    failureRates: DEFAULT_FAILURE_RATES,
    initialFailures: 0,
  });
  for (let k = 0; probesSeen === 0; k++) {
    if (exited || k > 240) await fail("no probe came out on the output topic within 60 s");
    if (k % 4 === 0) {
      const event = probeFleet.next() as unknown as Record<string, unknown>;
      event.ts = Date.now();
      event.ts_us = now_us();
      event.id = `probe-${k}`;
      await probeClient.publishAsync(`${base}/${event.car}/sensors`, JSON.stringify(event), { qos: 1 });
    }
    await sleep(250);
  }
  await probeClient.endAsync();
  say(`ready: a probe went through; idle for 3 s`);
  phase = "idle";
  await sleep(3000);
  const idle = rss();

  // 4. Load.
  const spec: LoadSpec = {
    mqttUrl: `mqtt://${f.mqtt}`,
    base,
    rate,
    warmupS: warmup,
    seconds: duration,
    clients,
    cars,
    seed: 2001,
    tickMs,
    maxInFlight: 5000,
  };
  const worker = new Worker(import.meta.url, { type: "module" });
  let pub: PublisherDone | undefined;
  let workerError: string | undefined;
  const ready = Promise.withResolvers<void>();
  const finished = Promise.withResolvers<void>();
  let lastProgressLine = 0;
  worker.onmessage = (e: MessageEvent) => {
    const m = e.data;
    if (m.type === "ready") ready.resolve();
    else if (m.type === "progress") {
      if (performance.now() - lastProgressLine >= 5000) {
        lastProgressLine = performance.now();
        say(`published ${m.published} (PUBACKed ${m.acked}), predictions consumed ${received}`);
      }
    } else if (m.type === "done") {
      pub = m;
      finished.resolve();
    } else if (m.type === "error") {
      workerError = m.message;
      ready.resolve();
      finished.resolve();
    }
  };
  worker.postMessage(spec);
  await ready.promise;
  if (workerError) await fail(`publisher failed: ${workerError}`);
  say(`publishing ${rate} events/s for ${warmup} s warm-up + ${duration} s over ${clients} MQTT clients`);
  phase = "load";
  const cpuStart = cpu();
  const loadStart = performance.now();
  const loadavgStart = Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
  lastProgressLine = performance.now();
  worker.postMessage("go");
  await finished.promise;
  if (workerError || !pub) return await fail(`publisher failed: ${workerError}`);
  const cpuEnd = cpu();
  const loadSeconds = (performance.now() - loadStart) / 1000;
  const loadavgEnd = Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
  phase = "drain";
  say(
    `published ${pub.published} in ${pub.seconds.toFixed(1)} s (${
      Math.round(pub.published / pub.seconds)
    }/s), PUBACKed ${pub.acked}; waiting for the rest (at most ${drainS} s without progress)`,
  );
  for (let last = received, still = 0; received < pub.acked && still < drainS * 1000; still += 100) {
    await sleep(100);
    if (received !== last) {
      last = received;
      still = 0;
    }
  }
  const endRss = rss();
  child.kill("SIGTERM");
  const exit = await status;
  clearInterval(sampler);
  await stderrDone;
  const summary = parseRunSummary(stderr);
  await stream.close();
  await consumer.close();
  if (!f["keep-topic"]) await admin.deleteTopics({ topics: [topic] }).catch(() => {});
  await admin.close();

  // 5. Figures.
  const warmUs = pub.startUs + warmup * 1e6;
  const pick = (a: Float64Array) => {
    const out: number[] = [];
    for (let i = 0; i < capacity; i++) if (!Number.isNaN(a[i]) && tsUs[i] >= warmUs) out.push(a[i]);
    return Float64Array.from(out).sort();
  };
  const e2e = pick(e2eUs).map((x) => x / 1000);
  const stat = (s: Float64Array) => ({
    count: s.length,
    p50: round(pct(s, 0.5)),
    p99: round(pct(s, 0.99)),
    p999: round(pct(s, 0.999)),
    max: round(s.length ? s[s.length - 1] : NaN),
  });
  const round = (x: number) => Math.round(x * 100) / 100;
  // p99 per 5 s window of publish time (after the warm-up): is it steady?
  const windows: { from: number; count: number; p50: number; p99: number; max: number }[] = [];
  for (let w = 0; w * 5 < duration; w++) {
    const lo = warmUs + w * 5e6, hi = lo + 5e6;
    const xs: number[] = [];
    for (let i = 0; i < capacity; i++) if (tsUs[i] >= lo && tsUs[i] < hi) xs.push(e2eUs[i] / 1000);
    const s = Float64Array.from(xs).sort();
    windows.push({
      from: warmup + w * 5,
      count: s.length,
      p50: round(pct(s, 0.5)),
      p99: round(pct(s, 0.99)),
      max: round(s.length ? s[s.length - 1] : NaN),
    });
  }
  // Per second of publish time (after the warm-up): the worst latency, to line stalls up with other events.
  const perSecondMax: number[] = new Array(Math.ceil(duration)).fill(0);
  for (let i = 0; i < capacity; i++) {
    const sec = Math.floor((tsUs[i] - warmUs) / 1e6);
    if (sec >= 0 && sec < perSecondMax.length) {
      perSecondMax[sec] = Math.max(perSecondMax[sec], e2eUs[i] / 1000);
    }
  }
  const during = (p: Phase) => samples.filter((s) => s.phase === p).map((s) => s.rss);
  const loadRss = during("load");
  const result = {
    settings: {
      rate,
      duration,
      warmup,
      publishers: clients,
      tickMs,
      partitions,
      runFlags: runArgs.slice(runArgs.indexOf("--status-every") + 2),
    },
    publisher: {
      published: pub.published,
      pubacked: pub.acked,
      failed: pub.failed,
      seconds: round(pub.seconds),
      eventsPerSecond: Math.round(pub.published / pub.seconds),
      maxBacklogEvents: pub.maxBacklog,
      blockedTicks: pub.blockedTicks,
      meanBurst: round(pub.published / pub.ticks),
      pubackMs: { p50: round(pub.ackMs[0]), p99: round(pub.ackMs[1]), max: round(pub.ackMs[2]) },
    },
    predictions: {
      received,
      lost: pub.acked - received,
      duplicates,
      unexpected,
    },
    latencyMs: {
      endToEnd: stat(e2e),
      eventToScored: stat(pick(toScored)),
      scoredToBatchBuilt: stat(pick(toBuilt)),
      batchBuiltToConsumed: stat(pick(toConsumed)),
      windows,
      /** Wall clock (ms) of the first measured second, and the worst latency per second from there. */
      measuredFromMs: Math.round(warmUs / 1000),
      perSecondMax: perSecondMax.map(round),
    },
    rssMB: {
      idle: round(idle.rss),
      peakSampled: round(Math.max(...loadRss, ...during("drain"))),
      peakHwm: round(lastHwm),
      end: round(endRss.rss),
      loadFirst10s: round(Math.max(...loadRss.slice(0, 10))),
      loadLast10s: round(Math.max(...loadRss.slice(-10))),
      samples: samples.map((s) => [s.t, s.phase, round(s.rss)]),
    },
    /**
     * Per RSS sample (every second): wall clock (ms) and the ms some task on the machine waited for a CPU
     * during the second before it (Linux /proc/pressure/cpu "some"), to line latency spikes up with CPU
     * contention from other processes.
     */
    cpuStallMs: samples.filter((s) => s.phase === "load" || s.phase === "drain").map((
      s,
    ) => [s.at, s.stallMs]),
    cpu: {
      /** edgeinfer's CPU use while publishing, in % of one core. */
      edgeinferPercentOfCore: Math.round((100 * (cpuEnd.child - cpuStart.child)) / loadSeconds),
      /** The whole machine (brokers, bench, anything else running) while publishing, % of all cores. */
      machineBusyPercent: Math.round((100 * (cpuEnd.busy - cpuStart.busy)) / (cpuEnd.total - cpuStart.total)),
      cores: navigator.hardwareConcurrency,
      loadavg1: [Number(loadavgStart), Number(loadavgEnd)],
    },
    edgeinfer: { exitCode: exit.code, summary },
  };
  if (f.json) {
    console.log(JSON.stringify(result));
    return;
  }
  const l = result.latencyMs;
  const line = (s: ReturnType<typeof stat>) =>
    `${s.p50} / ${s.p99} / ${s.p999} / ${s.max} ms  (n=${s.count})`;
  const p = result.publisher;
  console.log(`
bench_latency: MQTT QoS 1 → edgeinfer run (car model) → Kafka, ${rate} events/s offered, ${duration} s measured
  run flags                   ${result.settings.runFlags.join(" ") || "(run's defaults)"}
  published                   ${p.published} (${p.eventsPerSecond}/s, mean burst ${p.meanBurst}, max backlog ${p.maxBacklogEvents}), PUBACKed ${p.pubacked}, failed ${p.failed}
  publish → PUBACK            p50 ${p.pubackMs.p50} / p99 ${p.pubackMs.p99} / max ${p.pubackMs.max} ms
  predictions                 ${received} received, ${result.predictions.lost} lost, ${duplicates} duplicates
  latency p50/p99/p99.9/max   ${line(l.endToEnd)}
    (event ts → prediction consumed from Kafka: an upper bound of → durable; includes the consumer's fetch)
    event ts → scored         ${line(l.eventToScored)}
    scored → batch built      ${line(l.scoredToBatchBuilt)}
    batch built → consumed    ${line(l.batchBuiltToConsumed)}
  p99 per 5 s                 ${windows.map((w) => w.p99).join(" ")} ms
  CPU while publishing        edgeinfer ${result.cpu.edgeinferPercentOfCore}% of a core; machine ${result.cpu.machineBusyPercent}% busy of ${result.cpu.cores} cores (load ${
    result.cpu.loadavg1.join(" → ")
  })
  RSS idle / peak / end       ${result.rssMB.idle} / ${result.rssMB.peakSampled} (VmHWM ${result.rssMB.peakHwm}) / ${result.rssMB.end} MB
  edgeinfer                   exit ${exit.code}; ${
    summary
      ? `${summary.acked} acked, ${summary.batches} batches (mean ${summary.meanBatch}), peak ${summary.peakInFlightBatches} batches in flight`
      : "no summary line"
  }`);
}
