/**
 * Link faults between edgeinfer's MQTT source and the broker: `edgeinfer run` connects THROUGH the
 * Toxiproxy "mqtt" proxy (tests/integration/toxiproxy.ts), the test publishes DIRECTLY to Mosquitto at a
 * steady rate (QoS 1, a persistent session prepared first), and predictions go to a file sink (one JSON
 * line each). Each test sees events flow, applies a fault, proves the fault bit, checks what edgeinfer
 * noticed (stderr lines, timed as they arrive), heals, and checks that every published id was predicted
 * (duplicates allowed, counted).
 *
 *   EDGEINFER_MQTT_URL=mqtt://127.0.0.1:1883 EDGEINFER_TOXIPROXY_PORT=8474 \
 *     deno test --allow-all tests/integration/link_faults_mqtt_test.ts
 */
import assert from "node:assert/strict";
import mqtt, { type MqttClient } from "mqtt";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { type RunningCli, spawnCli } from "../cli/run_cli.ts";
import { MQTT_URL, prepareMqttSession, uniqueName } from "./brokers.ts";
import { bandwidth, blackHole, faultProxy, healAll, latency } from "./toxiproxy.ts";

const proxy = await faultProxy();
if (typeof proxy === "string") console.log("skipping link-fault tests: " + proxy);
const ignore = typeof proxy === "string";

/** Any sign that the source lost (or thought it lost) its connection. */
const LINK_TROUBLE = /connection lost|Keepalive timeout|reconnected to|waiting for MQTT source|ECONN/;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/** Publishes `{"id":i,"a":i,...}` to `topic` at QoS 1 at a steady rate, straight to Mosquitto. */
class Publisher {
  /** id → Date.now() when its PUBLISH was issued. */
  readonly sentAt: number[] = [];
  /** ids the broker acknowledged (PUBACK): these must all be predicted. */
  readonly acked = new Set<number>();
  readonly failures: string[] = [];
  #pending = new Set<Promise<void>>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #rate = 0;
  #stopped = false;

  private constructor(
    private readonly client: MqttClient,
    private readonly topic: string,
    private readonly payload: (id: number) => string,
  ) {}

  static async start(topic: string, perSecond: number, payload: (id: number) => string) {
    const client = await mqtt.connectAsync(MQTT_URL, {
      clientId: uniqueName("edgeinfer-test-pub"),
      reconnectPeriod: 0,
    });
    client.setMaxListeners(0); // many publishes in flight may wait for 'drain' together
    const p = new Publisher(client, topic, payload);
    p.#rate = perSecond;
    p.#run();
    return p;
  }

  /** Publishes at the rate from now on (catching up on timer lateness, not on a pause). */
  #run() {
    const started = Date.now();
    const base = this.sentAt.length;
    this.#timer = setInterval(() => {
      const due = base + Math.floor(((Date.now() - started) * this.#rate) / 1000);
      while (this.sentAt.length < due) this.#publish(this.sentAt.length);
    }, 10);
  }

  pause() {
    clearInterval(this.#timer);
  }

  resume() {
    this.pause();
    this.#run();
  }

  #publish(id: number) {
    this.sentAt.push(Date.now());
    const done = this.client.publishAsync(this.topic, this.payload(id), { qos: 1 }).then(
      () => void this.acked.add(id),
      (e) => void this.failures.push(`id ${id}: ${(e as Error).message}`),
    );
    this.#pending.add(done);
    done.finally(() => this.#pending.delete(done));
  }

  get count(): number {
    return this.sentAt.length;
  }

  /** Ids issued at or after `t`. */
  countSince(t: number): number {
    return this.sentAt.filter((s) => s >= t).length;
  }

  /** Stops publishing and waits for the outstanding PUBACKs. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#timer);
    await Promise.all(this.#pending);
    await this.client.endAsync();
  }
}

interface Prediction {
  id: number;
  /** When the child scored it (its "ts"). */
  ts: number;
  /** When this test saw the line in the file. */
  at: number;
}

interface LogLine {
  text: string;
  at: number;
}

/**
 * One run: a fresh topic and persistent session, `edgeinfer run` through the proxy into a file, and a
 * 20 ms poll that timestamps every new output line and stderr line as it appears.
 */
class Run {
  readonly predictions: Prediction[] = [];
  readonly counts = new Map<number, number>();
  readonly log: LogLine[] = [];
  cli!: RunningCli;
  #file!: Deno.FsFile;
  #partial = "";
  #decoder = new TextDecoder();
  #stderrSeen = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #busy = false;

  private constructor(
    readonly base: string,
    readonly clientId: string,
    readonly outPath: string,
    readonly modelPath: string,
  ) {}

  get topic(): string {
    return `${this.base}/car`;
  }

  static async start(label: string, query: string): Promise<Run> {
    const base = uniqueName(`linkfault-${label}`);
    const clientId = uniqueName("edgeinfer-test");
    // Queued from the first event on, whenever edgeinfer's subscription becomes active.
    await prepareMqttSession(clientId, `${base}/+`);
    const run = new Run(
      base,
      clientId,
      await Deno.makeTempFile({ prefix: "edgeinfer-linkfault-", suffix: ".jsonl" }),
      await linearModelFile({ features: ["a"], weights: [1], bias: 0 }),
    );
    run.#file = await Deno.open(run.outPath, { read: true });
    run.cli = spawnCli([
      "run",
      "--model",
      run.modelPath,
      "--source",
      `mqtt://${(proxy as { mqtt: string }).mqtt}/${base}/+?client-id=${clientId}${query}`,
      "--sink",
      `file:${run.outPath}`,
      "--status-every",
      "60",
    ]);
    run.#timer = setInterval(() => void run.#poll(), 20);
    return run;
  }

  async #poll(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      const at = Date.now();
      const err = this.cli.stderr();
      const end = err.lastIndexOf("\n") + 1;
      if (end > this.#stderrSeen) {
        for (const text of err.slice(this.#stderrSeen, end - 1).split("\n")) this.log.push({ text, at });
        this.#stderrSeen = end;
      }
      const buf = new Uint8Array(64 * 1024);
      while (true) {
        const n = await this.#file.read(buf);
        if (n === null || n === 0) break;
        const lines = (this.#partial + this.#decoder.decode(buf.subarray(0, n), { stream: true })).split(
          "\n",
        );
        this.#partial = lines.pop()!;
        for (const line of lines) {
          const { id, ts } = JSON.parse(line);
          this.predictions.push({ id, ts, at });
          this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
        }
      }
    } finally {
      this.#busy = false;
    }
  }

  /** Polls `cond` every 20 ms; fails after `ms` (or when edgeinfer exits) naming `what`. */
  async waitFor<T>(what: string, cond: () => T | undefined | false, ms: number): Promise<T> {
    const deadline = Date.now() + ms;
    while (true) {
      const value = cond();
      if (value !== undefined && value !== false) return value as T;
      if (Date.now() > deadline || this.cli.exited !== undefined) {
        throw new Error(
          `${this.cli.exited === undefined ? `timed out after ${ms} ms` : "edgeinfer exited"} waiting ` +
            `for ${what}; ${this.predictions.length} predictions; stderr:\n${this.cli.stderr()}`,
        );
      }
      await sleep(20);
    }
  }

  /** The first stderr line matching `pattern` that appeared at or after `since`. */
  line(pattern: RegExp, since = 0): LogLine | undefined {
    return this.log.find((l) => l.at >= since && pattern.test(l.text));
  }

  /** Ids of `ids` with no prediction yet. */
  missing(ids: Iterable<number>): number[] {
    return [...ids].filter((id) => !this.counts.has(id));
  }

  get duplicates(): number {
    return this.predictions.length - this.counts.size;
  }

  /** SIGTERM (SIGKILL after 15 s), then waits for the exit; returns its code. */
  async stop(): Promise<number> {
    if (this.cli.exited === undefined) {
      this.cli.child.kill("SIGTERM");
      const killer = setTimeout(() => {
        try {
          this.cli.child.kill("SIGKILL");
        } catch { /* already gone */ }
      }, 15_000);
      try {
        return await this.cli.exit();
      } finally {
        clearTimeout(killer);
      }
    }
    return await this.cli.exit();
  }

  /** Stops everything this run started; safe to call more than once. */
  async close(): Promise<void> {
    await this.stop();
    if (this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      while (this.#busy) await sleep(5);
      this.#file.close();
      // The persistent session would otherwise keep queueing on the shared broker for a day.
      const c = await mqtt.connectAsync(MQTT_URL, {
        clientId: this.clientId,
        clean: true,
        protocolVersion: 5,
        reconnectPeriod: 0,
      });
      await c.endAsync();
      await Deno.remove(this.outPath).catch(() => {});
      await Deno.remove(this.modelPath).catch(() => {});
    }
  }
}

/** (a) events flow: at least `n` predictions, then the output catches up with the publisher. */
async function waitForFlow(run: Run, pub: Publisher, n = 50): Promise<void> {
  await run.waitFor(`${n} predictions`, () => run.predictions.length >= n, 60_000);
  const target = pub.count;
  await run.waitFor(`a prediction of event ${target}`, () => run.counts.has(target), 5000);
}

/** (e)/(f) after heal: first new prediction, backlog drained, then every acknowledged id predicted. */
async function healAndDrain(run: Run, pub: Publisher) {
  const healAt = Date.now();
  await healAll();
  const firstAfter = await run.waitFor(
    "a prediction after heal",
    () => run.predictions.find((p) => p.at > healAt),
    30_000,
  );
  const beforeHeal = pub.sentAt.flatMap((sent, id) => sent < healAt ? [id] : []);
  const backlogAt = await run.waitFor(
    "the backlog drained",
    () => run.missing(beforeHeal).length === 0 && Date.now(),
    30_000,
  );
  await pub.stop();
  assert.deepEqual(pub.failures, [], "every publish was acknowledged by the broker");
  await run.waitFor(
    `all ${pub.acked.size} events predicted`,
    () => run.missing(pub.acked).length === 0,
    30_000,
  );
  assert.equal(pub.acked.size, pub.count);
  assert.deepEqual(run.missing(pub.acked), [], "no event was lost");
  return { healAt, firstNew: firstAfter.at - healAt, drained: backlogAt - healAt };
}

Deno.test({
  name:
    "MQTT link half-open (black hole): detected within 1.5 x keepalive, redialled after heal, nothing lost",
  ignore,
  async fn() {
    const started = Date.now();
    const keepalive = 2;
    const run = await Run.start("blackhole", `&keepalive=${keepalive}`);
    let pub: Publisher | undefined;
    try {
      pub = await Publisher.start(run.topic, 50, (id) => JSON.stringify({ id, a: id }));
      await waitForFlow(run, pub);

      const faultAt = Date.now();
      await blackHole("mqtt");
      const appliedAt = Date.now();

      // (d) detection: the first sign of a lost link on stderr, timed against the fault.
      const detected = await run.waitFor(
        "the dead link detected",
        () => run.line(/connection lost|Keepalive timeout/, faultAt),
        15_000,
      );
      const detection = detected.at - faultAt;
      console.log(`black hole: dead link detected after ${secs(detection)} ("${detected.text}")`);
      assert.ok(
        detection <= 1500 * keepalive + 1000,
        `detection took ${detection} ms, bound ${1500 * keepalive + 1000} ms`,
      );

      // (c) the fault bit: hold it ~10 s while the publisher goes on; not one event published after the
      // fault was applied may come through, and the output stays flat from detection on.
      const outputAtDetection = run.predictions.length;
      await run.waitFor(
        "10 s of black hole with >= 300 events published into it",
        () => Date.now() - faultAt >= 10_000 && pub!.countSince(appliedAt) >= 300,
        20_000,
      );
      const through = run.predictions.filter((p) => pub!.sentAt[p.id] >= appliedAt);
      assert.deepEqual(through.map((p) => p.id), [], "events got through the black hole");
      assert.equal(run.predictions.length, outputAtDetection, "output grew while black-holed");
      const publishedDuring = pub.countSince(appliedAt);

      // (e)/(f) heal: reconnect (same session), then every event arrives. Toxiproxy closes the black-holed
      // connections when the toxic is removed, so the redial pending since the fault (waiting up to the
      // source's 10 s connect timeout for a CONNACK) ends at once and the next one, 1 s later, succeeds.
      const { healAt, firstNew, drained } = await healAndDrain(run, pub);
      const reconnected = run.line(/mqtt: reconnected to /, healAt);
      assert.ok(reconnected, `no reconnect line after heal:\n${run.cli.stderr()}`);
      assert.match(reconnected.text, /\(session resumed\)/);
      assert.ok(run.line(/recovered after/, healAt), "recovery reported");
      assert.equal(await run.stop(), 0, run.cli.stderr());
      const trouble = run.log.filter((l) => l.at >= faultAt && l.at < healAt).map((l) => l.text);
      console.log(
        `black hole: ${publishedDuring} events published into the hole, output flat at ` +
          `${outputAtDetection}; heal -> reconnect ${secs(reconnected.at - healAt)}, ` +
          `-> first new prediction ${secs(firstNew)}, -> backlog drained ${secs(drained)}; ` +
          `${pub.count} events, ${run.duplicates} duplicates; wall ${secs(Date.now() - started)}\n` +
          `  stderr during the fault: ${JSON.stringify(trouble)}`,
      );
    } finally {
      await healAll();
      await pub?.stop();
      await run.close();
    }
  },
});

Deno.test({
  name:
    "MQTT link with 1.5 s latency each way at the default keepalive: no disconnect (busy or quiet), late but complete",
  ignore,
  async fn() {
    const started = Date.now();
    const run = await Run.start("latency", "");
    let pub: Publisher | undefined;
    try {
      pub = await Publisher.start(run.topic, 50, (id) => JSON.stringify({ id, a: id }));
      await waitForFlow(run, pub);
      // Publish -> scored of the last 25 predictions before the fault (steady state, for comparison).
      const before = run.predictions.slice(-25).map((p) => p.ts - pub!.sentAt[p.id]).sort((a, b) => a - b);

      await latency("mqtt", 1500);
      const appliedAt = Date.now();

      // (c) events keep arriving, each at least the added 1.5 s after it was published: ~8 s of them.
      const late = () => run.predictions.filter((p) => pub!.sentAt[p.id] >= appliedAt);
      await run.waitFor(
        "300 predictions of events published under latency",
        () => late().length >= 300,
        20_000,
      );
      const delays = late().map((p) => p.ts - pub!.sentAt[p.id]).sort((a, b) => a - b);
      const median = (xs: number[]) => xs[Math.floor(xs.length / 2)];
      assert.ok(delays[0] >= 1500, `an event arrived ${delays[0]} ms after publishing, under 1.5 s latency`);

      // (d) no spurious disconnect: not one line about the link during the fault.
      const trouble = () => run.log.filter((l) => LINK_TROUBLE.test(l.text)).map((l) => l.text);
      assert.deepEqual(trouble(), [], "the source reported link trouble under latency");

      // While PUBLISHes arrive they count as signs of life and no PINGREQ is sent at all. So the link
      // also goes quiet under the latency for longer than the keepalive timeout (1.5 x 15 s after the
      // last message arrived, which was up to 1.5 s after it was published): edgeinfer must ping, the
      // PINGRESP comes 3 s later, and neither side may drop the link (Mosquitto drops a client silent
      // for 1.5 x keepalive). Then events published afterwards must still come through.
      pub.pause();
      const quietFrom = Date.now();
      await run.waitFor("25 s of quiet link under latency", () => Date.now() - quietFrom >= 25_000, 30_000);
      assert.deepEqual(trouble(), [], "the source reported link trouble on a quiet link under latency");
      pub.resume();
      const resumedAt = Date.now();
      const afterQuiet = await run.waitFor(
        "a prediction of an event published after the quiet spell",
        () => run.predictions.find((p) => pub!.sentAt[p.id] >= resumedAt),
        10_000,
      );
      assert.ok(afterQuiet.ts - pub.sentAt[afterQuiet.id] >= 1500, "still behind the latency");

      const { firstNew, drained } = await healAndDrain(run, pub);
      assert.deepEqual(trouble(), []);
      assert.equal(await run.stop(), 0, run.cli.stderr());
      console.log(
        `latency: publish -> scored ${median(before)} ms median before; under 1.5 s each way ` +
          `min ${delays[0]} / median ${median(delays)} / max ${
            delays.at(-1)
          } ms (${delays.length} events), ` +
          `no link trouble, also not over ${secs(resumedAt - quietFrom)} without events; ` +
          `heal -> first new prediction ${secs(firstNew)}, -> backlog drained ` +
          `${secs(drained)}; ${pub.count} events, ${run.duplicates} duplicates; wall ${
            secs(Date.now() - started)
          }`,
      );
    } finally {
      await healAll();
      await pub?.stop();
      await run.close();
    }
  },
});

/**
 * Bytes of one event's PUBLISH as the broker sends it to an MQTT 5 subscriber at QoS 1: fixed header,
 * remaining length, topic, packet id, properties length (none), payload.
 */
function publishBytes(topic: string, payload: string): number {
  const remaining = 2 + new TextEncoder().encode(topic).length + 2 + 1 +
    new TextEncoder().encode(payload).length;
  const lengthBytes = remaining < 128 ? 1 : remaining < 16_384 ? 2 : 3;
  return 1 + lengthBytes + remaining;
}

Deno.test({
  name: "MQTT link capped at 8 KB/s: predictions slow to the cap without a disconnect, backlog drains after",
  ignore,
  async fn() {
    const started = Date.now();
    const capKBs = 8; // Toxiproxy's KB is 1000 bytes
    const run = await Run.start("bandwidth", "");
    let pub: Publisher | undefined;
    try {
      const payload = (id: number) => JSON.stringify({ id, a: id, pad: "x".repeat(300) });
      const bytesPerEvent = publishBytes(run.topic, payload(10_000));
      const capEvents = (capKBs * 1000) / bytesPerEvent;
      const rate = 100; // events/s published: ~4 x the cap
      pub = await Publisher.start(run.topic, rate, payload);
      await waitForFlow(run, pub);

      await bandwidth("mqtt", capKBs);
      const appliedAt = Date.now();

      // (c) the fault bit: over 6 s (from 1 s after the cap, once what was past the proxy is out), the
      // output rate is around the cap, far below the publishing rate.
      const from = appliedAt + 1000;
      const to = from + 6000;
      await run.waitFor("6 s of capped output", () => Date.now() >= to + 100, 15_000);
      const inWindow = run.predictions.filter((p) => p.at >= from && p.at < to).length;
      const perSecond = inWindow / 6;
      const bytesPerSecond = perSecond * bytesPerEvent;
      assert.ok(
        bytesPerSecond <= capKBs * 1000 * 1.15,
        `${perSecond.toFixed(1)} events/s x ${bytesPerEvent} B = ${bytesPerSecond.toFixed(0)} B/s over a ` +
          `${capKBs} KB/s cap`,
      );
      assert.ok(perSecond >= capEvents * 0.5, `${perSecond.toFixed(1)} events/s, far below the cap`);
      const trouble = run.log.filter((l) => LINK_TROUBLE.test(l.text)).map((l) => l.text);
      assert.deepEqual(trouble, [], "the source reported link trouble under the bandwidth cap");
      const backlog = pub.count - run.counts.size;

      const { firstNew, drained } = await healAndDrain(run, pub);
      assert.deepEqual(run.log.filter((l) => LINK_TROUBLE.test(l.text)).map((l) => l.text), []);
      assert.equal(await run.stop(), 0, run.cli.stderr());
      console.log(
        `bandwidth: ${bytesPerEvent} B/event, published ${rate}/s (${
          (rate * bytesPerEvent / 1000).toFixed(1)
        } ` +
          `KB/s); under the ${capKBs} KB/s cap ${perSecond.toFixed(1)} events/s = ` +
          `${(bytesPerSecond / 1000).toFixed(2)} KB/s (cap ${capEvents.toFixed(1)} events/s), backlog ` +
          `${backlog} at heal; heal -> first new prediction ${secs(firstNew)}, -> backlog drained ` +
          `${secs(drained)}; ${pub.count} events, ${run.duplicates} duplicates; wall ${
            secs(Date.now() - started)
          }`,
      );
    } finally {
      await healAll();
      await pub?.stop();
      await run.close();
    }
  },
});
