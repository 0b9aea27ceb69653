/**
 * The MQTT source against a real Mosquitto (EDGEINFER_MQTT_URL, default mqtt://127.0.0.1:1883; start
 * it with `scripts/services.sh up`). Every test uses its own topics and client ids, so the broker
 * can be shared. The broker must allow anonymous clients and have max_inflight_messages >= 256 (the
 * services config sets 1000) for the batching test.
 *
 *   .tools/node_modules/.bin/deno test -A tests/integration/mqtt_source_test.ts
 */
import assert from "node:assert/strict";
import { Buffer as NodeBuffer } from "node:buffer";
import mqtt, { type IPublishPacket, type MqttClient, type Packet } from "mqtt";
import { sleep } from "./brokers.ts";
import {
  createMqttSource,
  holdBackAcks,
  type MqttSourceOptions,
  PINNED_MQTT_VERSION,
} from "../../src/mqtt/source.ts";
import type { Source, SourceEvent } from "../../src/pipeline/types.ts";
import { describePayloadDigest } from "../../src/codecs/dead_letter.ts";
import { Health } from "../../src/pipeline/health.ts";

const URL = Deno.env.get("EDGEINFER_MQTT_URL") ?? "mqtt://127.0.0.1:1883";
const TIMEOUT = Symbol("timeout");

/** A fresh topic prefix and the options of a source subscribed to `<prefix>/#`. */
function setup(overrides: Partial<MqttSourceOptions> = {}) {
  const id = crypto.randomUUID().slice(0, 13);
  const prefix = `edgeinfer-test/${id}`;
  const options: MqttSourceOptions = {
    brokerUrl: URL,
    topicFilter: `${prefix}/#`,
    qos: 1,
    clientId: `edgeinfer-test-${id}`,
    protocolVersion: 4,
    ...overrides,
  };
  return { prefix, options };
}

/** Pulls chunks from a source with timeouts, keeping one pending next() across calls. */
class Consumer {
  readonly source: Source;
  #ac = new AbortController();
  #it: AsyncIterator<SourceEvent[]>;
  #pending: Promise<IteratorResult<SourceEvent[]>> | undefined;

  constructor(source: Source) {
    this.source = source;
    this.#it = source.events(this.#ac.signal)[Symbol.asyncIterator]();
  }

  /** The next chunk, or undefined if none arrives within `ms`. */
  async next(ms: number): Promise<SourceEvent[] | undefined> {
    this.#pending ??= this.#it.next();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<typeof TIMEOUT>((resolve) => timer = setTimeout(() => resolve(TIMEOUT), ms));
    const result = await Promise.race([this.#pending, timeout]);
    clearTimeout(timer);
    if (result === TIMEOUT) return undefined;
    this.#pending = undefined;
    return result.done ? undefined : result.value;
  }

  /** Exactly `n` events (fails if fewer arrive within `ms`); `ack` acknowledges each chunk as it comes. */
  async take(n: number, ms = 5000, ack = false): Promise<SourceEvent[]> {
    const out: SourceEvent[] = [];
    const deadline = Date.now() + ms;
    while (out.length < n) {
      const chunk = await this.next(Math.max(1, deadline - Date.now()));
      if (!chunk) break;
      out.push(...chunk);
      if (ack) { for (const e of chunk) e.ack(); }
    }
    assert.equal(out.length, n, `expected ${n} events within ${ms} ms, got ${out.length}`);
    return out;
  }

  /** Publishes to `<prefix>/ready` until the subscription delivers it (then acks it). */
  async ready(prefix: string, ms = 5000): Promise<void> {
    const pub = await publisher();
    try {
      const deadline = Date.now() + ms;
      while (Date.now() < deadline) {
        await pub.publishAsync(`${prefix}/ready`, "ready", { qos: 1 });
        const chunk = await this.next(100);
        if (chunk) {
          for (const e of chunk) {
            assert.equal(e.key, `${prefix}/ready`);
            e.ack();
          }
          return;
        }
      }
      assert.fail(`subscription on ${prefix}/# not active after ${ms} ms`);
    } finally {
      await pub.endAsync();
    }
  }

  /** Stops iterating and closes the source. */
  async close(): Promise<void> {
    this.#ac.abort();
    if (this.#pending) await this.#pending;
    await this.source.close();
  }
}

function publisher(protocolVersion: 4 | 5 = 4): Promise<MqttClient> {
  return mqtt.connectAsync(URL, {
    clientId: `edgeinfer-test-pub-${crypto.randomUUID().slice(0, 8)}`,
    protocolVersion,
  });
}

async function publishAll(topic: string, payloads: (string | Uint8Array)[], qos: 0 | 1 | 2 = 1) {
  const pub = await publisher();
  try {
    await Promise.all(payloads.map((p) => pub.publishAsync(topic, p as string, { qos })));
  } finally {
    await pub.endAsync();
  }
}

/** Removes the persistent session a test left on the (possibly shared) broker. */
async function discardSession(options: Pick<MqttSourceOptions, "clientId" | "protocolVersion">) {
  const { clientId, protocolVersion } = options;
  const c = await mqtt.connectAsync(URL, { clientId, protocolVersion, clean: true, reconnectPeriod: 0 });
  await c.endAsync();
}

const text = (e: SourceEvent) => new TextDecoder().decode(e.payload);

Deno.test("MQTT source delivers QoS 1 messages with payload, key and origin intact", async () => {
  const { prefix, options } = setup();
  const consumer = new Consumer(createMqttSource(options));
  try {
    await consumer.ready(prefix);
    const binary = new Uint8Array([0, 1, 2, 250, 255, 10, 13]);
    await publishAll(`${prefix}/car-1/sensors`, ['{"speed":1}', binary]);
    await publishAll(`${prefix}/car-2/sensors`, ['{"speed":2}']);
    const before = Date.now();
    const events = await consumer.take(3);
    const enc = (s: string) => Array.from(new TextEncoder().encode(s));
    assert.deepEqual(events.map((e) => [e.key, e.origin, Array.from(e.payload)]), [
      [`${prefix}/car-1/sensors`, { kind: "mqtt", topic: `${prefix}/car-1/sensors` }, enc('{"speed":1}')],
      [`${prefix}/car-1/sensors`, { kind: "mqtt", topic: `${prefix}/car-1/sensors` }, Array.from(binary)],
      [`${prefix}/car-2/sensors`, { kind: "mqtt", topic: `${prefix}/car-2/sensors` }, enc('{"speed":2}')],
    ]);
    for (const e of events) {
      assert.ok(e.payload instanceof Uint8Array);
      assert.ok(Math.abs(e.receivedAt - before) < 5000, "receivedAt is Date.now() at receipt");
      e.ack();
    }
    assert.equal(consumer.source.description, `${URL}/${prefix}/#`);
  } finally {
    await consumer.close();
    await discardSession(options);
  }
});

Deno.test("MQTT source sends no PUBACK before ack(): un-acked messages are redelivered next session, acked ones not", async () => {
  const { prefix, options } = setup();
  const first = new Consumer(createMqttSource(options));
  let firstClosed = false;
  try {
    await first.ready(prefix);
    await publishAll(`${prefix}/t`, ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"]);
    const events = await first.take(8);
    assert.deepEqual(events.map(text), ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"]);
    for (const e of events) if (Number(text(e).slice(1)) % 2 === 0) e.ack(); // ack m0, m2, m4, m6
    await first.close(); // graceful: the 4 PUBACKs go out before DISCONNECT, the others never
    firstClosed = true;

    const second = new Consumer(createMqttSource(options)); // same clientId, clean=false
    try {
      const redelivered = await second.take(4);
      assert.deepEqual(redelivered.map(text).sort(), ["m1", "m3", "m5", "m7"]);
      for (const e of redelivered) e.ack();
      assert.equal(await second.next(300), undefined, "acked messages must not be redelivered");
    } finally {
      await second.close();
    }

    const third = new Consumer(createMqttSource(options));
    try {
      assert.equal(await third.next(300), undefined, "everything was acked in the second session");
    } finally {
      await third.close();
    }
  } finally {
    if (!firstClosed) await first.close();
    await discardSession(options);
  }
});

for (const protocolVersion of [4, 5] as const) {
  Deno.test(`MQTT source withholds QoS 2 PUBREC until ack() (MQTT ${protocolVersion === 5 ? "5" : "3.1.1"}): un-acked messages are redelivered`, async () => {
    const { prefix, options } = setup({ qos: 2, protocolVersion });
    const first = new Consumer(createMqttSource(options));
    let firstClosed = false;
    try {
      await first.ready(prefix);
      await publishAll(`${prefix}/t`, ["q0", "q1", "q2"], 2);
      const events = await first.take(3);
      events[0].ack();
      // Closing right away is fine: once the broker has our PUBREC, q0 is ours; an unfinished
      // PUBREL/PUBCOMP exchange is completed in the next session without re-sending q0.
      await first.close();
      firstClosed = true;

      const second = new Consumer(createMqttSource(options));
      try {
        const redelivered = await second.take(2);
        assert.deepEqual(redelivered.map(text).sort(), ["q1", "q2"]);
        for (const e of redelivered) e.ack();
      } finally {
        await second.close();
      }
      const third = new Consumer(createMqttSource(options));
      try {
        assert.equal(await third.next(300), undefined, "acked QoS 2 messages must not be redelivered");
      } finally {
        await third.close();
      }
    } finally {
      if (!firstClosed) await first.close();
      await discardSession(options);
    }
  });
}

Deno.test(`mqtt.js ${PINNED_MQTT_VERSION} internals: holdBackAcks swallows PUBACKs without blocking the packet loop`, async () => {
  // Fails when mqtt.js changes how (or whether through _sendPacket) its publish handler writes
  // PUBACKs: then a PUBACK would be seen on the wire before we release it, or the loop would stall.
  assert.equal(
    mqtt.MqttClient.VERSION,
    PINNED_MQTT_VERSION,
    "mqtt.js version changed: re-check holdBackAcks",
  );
  const topic = `edgeinfer-test/${crypto.randomUUID()}/hook`;
  const client = await mqtt.connectAsync(URL, {
    clientId: `edgeinfer-test-hook-${crypto.randomUUID().slice(0, 8)}`,
  });
  try {
    const prototypeSend = mqtt.MqttClient.prototype["_sendPacket" as keyof MqttClient];
    const send = holdBackAcks(client);
    assert.notEqual(
      (client as unknown as Record<string, unknown>)._sendPacket,
      prototypeSend,
      "hook installed",
    );

    const written: Packet[] = [];
    const received: number[] = [];
    client.on("packetsend", (p: Packet) => {
      if (p.cmd === "puback") written.push(p);
    });
    client.on("packetreceive", (p: Packet) => {
      if (p.cmd === "publish") received.push((p as IPublishPacket).messageId!);
    });
    await client.subscribeAsync(topic, { qos: 1 });
    await publishAll(topic, ["a", "b", "c", "d", "e"]);
    for (let i = 0; i < 100 && received.length < 5; i++) await sleep(20);
    assert.equal(received.length, 5, "all 5 PUBLISHes processed while none was acked");
    assert.equal(written.length, 0, "no PUBACK written by mqtt.js");

    for (const messageId of received) send({ cmd: "puback", messageId } as Packet);
    assert.deepEqual(written.map((p) => (p as { messageId: number }).messageId), received);
  } finally {
    await client.endAsync();
  }
});

Deno.test("MQTT source delivers whole batches before any ack (deferred acks do not serialise)", async () => {
  const { prefix, options } = setup();
  const consumer = new Consumer(createMqttSource(options));
  const timers = new Set<ReturnType<typeof setTimeout>>();
  try {
    await consumer.ready(prefix);
    const n = 2000;
    const publishing = publishAll(`${prefix}/t`, Array.from({ length: n }, (_, i) => `m${i}`));
    const seen = new Set<string>();
    let acked = 0;
    let maxUnacked = 0;
    let batch: SourceEvent[] = [];
    let chunks = 0;
    // Like the pipeline: batches of 256, each acked after a simulated async sink write of 5 ms,
    // while the next batch is being filled.
    const ackLater = (b: SourceEvent[]) => {
      const t = setTimeout(() => {
        timers.delete(t);
        for (const e of b) e.ack();
        acked += b.length;
      }, 5);
      timers.add(t);
    };
    while (seen.size < n) {
      const chunk = await consumer.next(5000);
      assert.ok(chunk, `stalled after ${seen.size} events`);
      chunks++;
      for (const e of chunk) {
        assert.ok(!seen.has(text(e)), `duplicate ${text(e)}`);
        seen.add(text(e));
        batch.push(e);
        if (batch.length === 256) {
          ackLater(batch);
          batch = [];
        }
      }
      maxUnacked = Math.max(maxUnacked, seen.size - acked);
    }
    ackLater(batch);
    await publishing;
    assert.ok(
      maxUnacked >= 256,
      `a whole batch must be delivered before its ack; max un-acked was ${maxUnacked}`,
    );
    assert.ok(chunks < n / 2, `events should arrive in chunks, got ${chunks} chunks for ${n} events`);
    // (Throughput itself is measured by scripts/bench_mqtt_source.ts, not asserted here.)
    await sleep(20);
  } finally {
    for (const t of timers) clearTimeout(t);
    await consumer.close();
    await discardSession(options);
  }
});

Deno.test("MQTT 5 shared subscription spreads messages over the group's sources", async () => {
  const { prefix, options } = setup({
    protocolVersion: 5,
    shareGroup: `g${crypto.randomUUID().slice(0, 8)}`,
  });
  const a = new Consumer(createMqttSource({ ...options, clientId: `${options.clientId}-a` }));
  const b = new Consumer(createMqttSource({ ...options, clientId: `${options.clientId}-b` }));
  try {
    assert.match(a.source.description, /\/\$share\/g[0-9a-f]+\/edgeinfer-test\//);
    await a.ready(prefix);
    await b.ready(prefix);
    await publishAll(`${prefix}/t`, Array.from({ length: 100 }, (_, i) => `s${i}`));
    const got = { a: [] as string[], b: [] as string[] };
    const deadline = Date.now() + 5000;
    while (got.a.length + got.b.length < 100 && Date.now() < deadline) {
      for (const [name, c] of [["a", a], ["b", b]] as const) {
        for (const e of (await c.next(20)) ?? []) {
          if (e.key === `${prefix}/t`) got[name].push(text(e)); // (not the ready() probes)
          e.ack();
        }
      }
    }
    assert.equal(got.a.length + got.b.length, 100);
    assert.equal(new Set([...got.a, ...got.b]).size, 100, "each message goes to exactly one member");
    assert.ok(
      got.a.length > 0 && got.b.length > 0,
      `both members get messages (a=${got.a.length}, b=${got.b.length})`,
    );
  } finally {
    await a.close();
    await b.close();
    await discardSession({ ...options, clientId: `${options.clientId}-a` });
    await discardSession({ ...options, clientId: `${options.clientId}-b` });
  }
});

Deno.test("MQTT source rejects a shared subscription on MQTT 3.1.1", () => {
  assert.throws(
    () => createMqttSource({ ...setup().options, shareGroup: "g", protocolVersion: 4 }),
    /shared subscriptions .* need MQTT protocol version 5/,
  );
});

Deno.test("MQTT source waits for an unreachable broker, reporting it, until --give-up-after", async () => {
  // A loopback port nobody listens on.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const lines: string[] = [];
  const health = new Health(
    { initialBackoffMs: 100, maxBackoffMs: 1000, giveUpAfterMs: 1500 },
    (l) => lines.push(l),
  );
  const source = createMqttSource({ ...setup().options, brokerUrl: `mqtt://127.0.0.1:${port}`, health });
  const started = Date.now();
  try {
    await assert.rejects(
      async () => {
        for await (const _ of source.events(new AbortController().signal)) { /* none */ }
      },
      (err: Error) => {
        assert.equal(err.name, "RuntimeError");
        assert.match(
          err.message,
          new RegExp(
            `MQTT source mqtt://127\\.0\\.0\\.1:${port}: gave up after .* s \\(--give-up-after\\): .*ECONNREFUSED`,
          ),
        );
        return true;
      },
    );
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 1500, `retried for the whole --give-up-after (${elapsed} ms)`);
    assert.match(lines[0], /ECONNREFUSED.*; retrying/, "the outage is reported while it lasts");
  } finally {
    await source.close();
  }
});

Deno.test("MQTT source fails clearly when the broker refuses the credentials", async () => {
  // A stand-in broker on a loopback port that answers every CONNECT with CONNACK return code 5
  // ("not authorized"), as Mosquitto does for wrong credentials.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const serving = (async () => {
    const conn = await listener.accept();
    await conn.read(new Uint8Array(1024)); // the CONNECT packet
    await conn.write(new Uint8Array([0x20, 0x02, 0x00, 0x05]));
    await conn.read(new Uint8Array(1024)).catch(() => null); // until the client closes
    conn.close();
  })();
  const source = createMqttSource({
    ...setup().options,
    brokerUrl: `mqtt://127.0.0.1:${port}`,
    username: "edgeinfer",
    password: "secret",
  });
  try {
    await assert.rejects(
      async () => {
        for await (const _ of source.events(new AbortController().signal)) { /* none */ }
      },
      (err: Error) => {
        assert.equal(err.name, "RuntimeError");
        assert.equal(
          err.message,
          `MQTT broker mqtt://127.0.0.1:${port} refused the connection: Connection refused: Not authorized`,
        );
        return true;
      },
    );
  } finally {
    await source.close();
    await serving;
    listener.close();
  }
});

Deno.test("MQTT source rejects options it cannot use", () => {
  assert.throws(() => createMqttSource({ ...setup().options, clientId: "" }), /client id must not be empty/);
  assert.throws(
    () => createMqttSource({ ...setup().options, brokerUrl: "127.0.0.1:1883" }),
    /must look like mqtt:\/\/host:port/,
  );
  assert.throws(
    () => createMqttSource({ ...setup().options, maxInFlight: 0 }),
    /max in-flight must be an integer in 1\.\.65535/,
  );
});

Deno.test("MQTT source reconnects and re-subscribes after the broker dropped its session", async () => {
  const { prefix, options } = setup();
  const consumer = new Consumer(createMqttSource(options));
  try {
    await consumer.ready(prefix);
    // Another client with the same id and a clean session takes the session over (the broker
    // disconnects us and discards the session), then leaves.
    const intruder = await mqtt.connectAsync(URL, {
      clientId: options.clientId,
      clean: true,
      reconnectPeriod: 0,
    });
    await intruder.endAsync();
    // Our client reconnects (reconnectPeriod 1 s) to a broker without a session for it.
    await consumer.ready(prefix, 10_000);
    await publishAll(`${prefix}/after`, ["after-reconnect"]);
    const [event] = await consumer.take(1);
    assert.equal(text(event), "after-reconnect");
    event.ack();
  } finally {
    await consumer.close();
    await discardSession(options);
  }
});

/** A loopback TCP proxy to the broker whose connections can be cut, to simulate a network failure. */
class CuttableProxy {
  readonly url: string;
  #listener: Deno.Listener;
  #conns: Deno.Conn[] = [];
  #pumps: Promise<void>[] = [];
  #accepting: Promise<void>;
  #closed = false;

  constructor(brokerUrl: string) {
    const target = new globalThis.URL(brokerUrl);
    const listener = this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.url = `mqtt://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
    this.#accepting = (async () => {
      for await (const down of listener) {
        const up = await Deno.connect({ hostname: target.hostname, port: Number(target.port || 1883) });
        this.#conns.push(down, up);
        this.#pumps.push(pump(down, up), pump(up, down));
      }
    })().catch(() => {});
  }

  cut() {
    for (const c of this.#conns.splice(0)) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
  }

  async close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#listener.close();
    await this.#accepting;
    this.cut();
    await Promise.all(this.#pumps);
  }
}

async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(65536);
  try {
    for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
      await to.write(buf.subarray(0, n));
    }
  } catch { /* cut */ }
  try {
    to.close();
  } catch { /* already closed */ }
}

Deno.test("MQTT source resumes the session after a network failure and drops acks of earlier deliveries", async () => {
  const { prefix, options } = setup();
  const proxy = new CuttableProxy(URL);
  const consumer = new Consumer(createMqttSource({ ...options, brokerUrl: proxy.url }));
  let consumerClosed = false;
  try {
    await consumer.ready(prefix);
    await publishAll(`${prefix}/t`, ["m0", "m1", "m2"]);
    const before = await consumer.take(3);
    proxy.cut(); // the broker keeps the session and re-sends the un-acked m0..m2 on reconnect
    const again = await consumer.take(3, 10_000);
    assert.deepEqual(again.map(text), ["m0", "m1", "m2"]);
    // Acks of the first deliveries belong to a dead connection: they must not be sent (their packet
    // ids now name the re-sent copies, and after those are acked, possibly other messages).
    for (const e of before) e.ack();
    await consumer.close();
    consumerClosed = true;

    const next = new Consumer(createMqttSource(options));
    try {
      const redelivered = await next.take(3);
      assert.deepEqual(redelivered.map(text).sort(), ["m0", "m1", "m2"], "stale acks were not sent");
      for (const e of redelivered) e.ack();
    } finally {
      await next.close();
    }
  } finally {
    if (!consumerClosed) await consumer.close();
    await proxy.close();
    await discardSession(options);
  }
});

Deno.test("MQTT source close() returns promptly while the broker is unreachable", async () => {
  const { prefix, options } = setup();
  const proxy = new CuttableProxy(URL);
  const consumer = new Consumer(createMqttSource({ ...options, brokerUrl: proxy.url }));
  try {
    await consumer.ready(prefix);
    await proxy.close(); // connection cut and nothing listens any more: mqtt.js keeps retrying
    await sleep(1500);
    const started = Date.now();
    await consumer.close();
    // Promptly: mqtt.js's reconnect loop must not hold close() (a generous bound for loaded CI).
    assert.ok(Date.now() - started < 3000, `close() took ${Date.now() - started} ms`);
  } finally {
    await consumer.close();
    await proxy.close();
    await discardSession(options);
  }
});

Deno.test("MQTT source pause() stops delivery and resume() delivers what arrived meanwhile", async () => {
  const { prefix, options } = setup({ maxInFlight: 50 });
  const consumer = new Consumer(createMqttSource(options));
  try {
    await consumer.ready(prefix);
    consumer.source.pause();
    consumer.source.pause(); // idempotent
    await publishAll(`${prefix}/t`, Array.from({ length: 300 }, (_, i) => `p${i}`), 0);
    assert.equal(await consumer.next(300), undefined, "nothing is delivered while paused");
    consumer.source.resume();
    consumer.source.resume();
    // Acked as they come: 50 held events is the source's bound (at QoS 0 too).
    const events = await consumer.take(300, 5000, true);
    assert.deepEqual(events.map(text), Array.from({ length: 300 }, (_, i) => `p${i}`));
  } finally {
    await consumer.close();
    await discardSession(options);
  }
});

/** Receives chunks until `n` events arrived in all (no ack), failing after `ms`. */
async function receiveHeld(consumer: Consumer, n: number, ms = 5000): Promise<SourceEvent[]> {
  const out: SourceEvent[] = [];
  const deadline = Date.now() + ms;
  while (out.length < n && Date.now() < deadline) {
    for (const e of await consumer.next(100) ?? []) {
      if (e.key?.endsWith("/ready")) e.ack(); // a late copy of consumer.ready()'s probe
      else out.push(e);
    }
  }
  assert.equal(out.length, n, `expected ${n} events within ${ms} ms`);
  return out;
}

for (const qos of [0, 1] as const) {
  Deno.test(`MQTT source holds at most maxInFlight unacknowledged events, whatever arrives (QoS ${qos})`, async () => {
    const { prefix, options } = setup({ maxInFlight: 100, qos });
    const consumer = new Consumer(createMqttSource(options));
    try {
      await consumer.ready(prefix);
      // 3000 messages offered at once; nothing acknowledged.
      const published = publishAll(`${prefix}/t`, Array.from({ length: 3000 }, (_, i) => `p${i}`), qos);
      const held = await receiveHeld(consumer, 100);
      // The positive signal came (100 events); now nothing more may come while none is acked.
      assert.equal(await consumer.next(700), undefined, "a 101st event arrived while 100 were held");
      // Acking frees room: exactly that many more arrive, in order.
      for (const e of held.slice(0, 40)) e.ack();
      const more = await receiveHeld(consumer, 40);
      assert.equal(await consumer.next(500), undefined, "more events than acks made room for");
      assert.deepEqual([...held, ...more].map(text), Array.from({ length: 140 }, (_, i) => `p${i}`));
      // Then everything flows when acked as it comes.
      for (const e of [...held.slice(40), ...more]) e.ack();
      const rest = await consumer.take(2860, 20_000, true);
      assert.equal(text(rest.at(-1)!), "p2999");
      await published;
    } finally {
      await consumer.close();
      await discardSession(options);
    }
  });
}

Deno.test("MQTT source bounds the payload bytes it holds, and cuts an oversized payload on arrival", async () => {
  const { prefix, options } = setup({
    maxInFlight: 1000,
    maxHeldBytes: 10_000,
    maxPayloadBytes: 100_000,
    keepOversizeBytes: 500,
  });
  const consumer = new Consumer(createMqttSource(options));
  try {
    await consumer.ready(prefix);
    const big = new Uint8Array(3_000_000).fill(0x61);
    big[1] = 0x62;
    const payloads = Array.from({ length: 30 }, (_, i) => `${i}:`.padEnd(1000, "x"));
    const pub = await publisher();
    await pub.publishAsync(`${prefix}/t`, NodeBuffer.from(big), { qos: 1 });
    await Promise.all(payloads.map((p) => pub.publishAsync(`${prefix}/t`, p, { qos: 1 })));
    await pub.endAsync();
    // The 3 MB payload is held as its first 500 bytes, with its size and digest; then 1000-byte
    // payloads up to the 10,000-byte bound: 500 + 10 x 1000 >= 10,000 after the 10th.
    const [first, ...held] = await receiveHeld(consumer, 11);
    assert.equal(first.payload.length, 500);
    assert.deepEqual(first.oversize, describePayloadDigest(big));
    assert.equal(await consumer.next(700), undefined, "payload bytes held went past the bound");
    first.ack();
    for (const e of held) e.ack();
    const rest = await consumer.take(20, 5000, true);
    assert.deepEqual([...held, ...rest].map(text), payloads);
  } finally {
    await consumer.close();
    await discardSession(options);
  }
});

Deno.test("MQTT source keeps a busy connection whose broker has a backlog (no keepalive timeout)", async () => {
  // Keepalive 2 s: mqtt.js declares the link dead 3 s after its last sign of life. The broker holds a
  // backlog for us the whole time (we ack slowly), so its PINGRESP queues behind our messages; the
  // messages themselves must count as signs of life.
  const { prefix, options } = setup({ maxInFlight: 20, keepaliveSeconds: 2, protocolVersion: 5 });
  const lines: string[] = [];
  const consumer = new Consumer(
    createMqttSource({ ...options, health: new Health(undefined, (l) => lines.push(l)) }),
  );
  try {
    await consumer.ready(prefix);
    await publishAll(`${prefix}/t`, Array.from({ length: 20_000 }, (_, i) => `p${i}`), 1);
    const until = Date.now() + 8000;
    let taken = 0;
    while (Date.now() < until) {
      const chunk = await consumer.next(200) ?? [];
      taken += chunk.length;
      await new Promise((r) => setTimeout(r, 20)); // slow: the broker keeps a backlog
      for (const e of chunk) e.ack();
    }
    assert.ok(taken > 100 && taken < 20_000, `a backlog remained throughout (${taken} taken)`);
    assert.deepEqual(lines, [], "no connection loss in 8 s of a busy link");
  } finally {
    await consumer.close();
    await discardSession(options);
  }
});
