/** Shared helpers for tests against the real brokers started by scripts/services.sh. */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Consumer, Kafka, KafkaMessage } from "kafkajs";
import mqtt from "mqtt";
import { testKafka } from "./kafkajs.ts";

export const KAFKA_BROKERS = (Deno.env.get("EDGEINFER_KAFKA_BROKERS") ?? "127.0.0.1:9092").split(",");
export const MQTT_URL = Deno.env.get("EDGEINFER_MQTT_URL") ?? "mqtt://127.0.0.1:1883";
/** host:port form for edgeinfer URLs. */
export const MQTT_HOSTPORT = MQTT_URL.replace(/^mqtt:\/\//, "");

export const kafka = testKafka(KAFKA_BROKERS, "edgeinfer-tests");

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` every 10 ms until it holds; throws naming `what` after `timeoutMs`. */
export async function until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** A loopback port nobody listens on (the OS picks it; closed again before use). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
}

export async function createTopic(
  topic: string,
  numPartitions: number,
  client: Kafka = kafka,
): Promise<void> {
  const admin = client.admin();
  await admin.connect();
  try {
    await admin.createTopics({
      topics: [{ topic, numPartitions, replicationFactor: 1 }],
      waitForLeaders: true,
    });
  } finally {
    await admin.disconnect();
  }
}

export async function produce(
  topic: string,
  messages: { key?: string; value: string; partition?: number }[],
  client: Kafka = kafka,
): Promise<void> {
  const producer = client.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  try {
    await producer.send({ topic, messages, acks: -1 });
  } finally {
    await producer.disconnect();
  }
}

export interface ConsumedRecord {
  key: string | null;
  value: string;
  partition: number;
  offset: string;
  headers: Record<string, string>;
}

/** Reads `topic` from the beginning until `count` records arrived or `timeoutMs` passed. */
export async function consume(
  topic: string,
  count: number,
  timeoutMs = 30_000,
  client: Kafka = kafka,
): Promise<ConsumedRecord[]> {
  const consumer = client.consumer({ groupId: uniqueName("reader") });
  const records: ConsumedRecord[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    let done: () => void;
    const finished = new Promise<void>((resolve) => done = resolve);
    await consumer.run({
      eachMessage: ({ message, partition }) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
        records.push({
          key: message.key?.toString() ?? null,
          value: message.value?.toString() ?? "",
          partition,
          offset: message.offset,
          headers,
        });
        if (records.length >= count) done();
        return Promise.resolve();
      },
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([finished, new Promise<void>((resolve) => timer = setTimeout(resolve, timeoutMs))]);
    clearTimeout(timer);
  } finally {
    await consumer.disconnect();
  }
  return records;
}

/** Committed offsets of a consumer group on a topic, by partition (-1 = none). */
export async function committedOffsets(
  groupId: string,
  topic: string,
  client: Kafka = kafka,
): Promise<Map<number, number>> {
  const admin = client.admin();
  await admin.connect();
  try {
    const [result] = await admin.fetchOffsets({ groupId, topics: [topic] });
    return new Map(result.partitions.map((p) => [p.partition, Number(p.offset)]));
  } finally {
    await admin.disconnect();
  }
}

/**
 * Polls until `group` has committed every offset of `topic` up to its end (`end`, default: the topic's
 * ends now), or fails after `ms`.
 */
export async function waitForCommittedEnd(
  group: string,
  topic: string,
  end?: Map<number, number>,
  ms = 60_000,
): Promise<void> {
  const ends = end ?? await topicEnds(topic);
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const committed = await committedOffsets(group, topic);
    if ([...ends].every(([partition, offset]) => committed.get(partition) === offset)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`group ${group} did not commit up to the end of ${topic} within ${ms} ms`);
}

/** The end (high watermark) of each partition of a topic. */
export async function topicEnds(topic: string, client: Kafka = kafka): Promise<Map<number, number>> {
  const admin = client.admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return new Map(offsets.map((p) => [p.partition, Number(p.high)]));
  } finally {
    await admin.disconnect();
  }
}

/**
 * Creates a persistent MQTT 5 session for `clientId` subscribed to `filter` at QoS 1, then
 * disconnects: the broker queues matching messages until edgeinfer connects with that id.
 */
export async function prepareMqttSession(clientId: string, filter: string): Promise<void> {
  const client = await mqtt.connectAsync(MQTT_URL, {
    clientId,
    clean: false,
    protocolVersion: 5,
    properties: { sessionExpiryInterval: 600 },
    reconnectPeriod: 0,
  });
  await client.subscribeAsync(filter, { qos: 1 });
  await client.endAsync();
}

export async function publishMqtt(topic: string, payloads: string[], qos: 0 | 1 = 1): Promise<void> {
  const client = await mqtt.connectAsync(MQTT_URL, { reconnectPeriod: 0 });
  await Promise.all(payloads.map((p) => client.publishAsync(topic, p, { qos })));
  await client.endAsync();
}

/**
 * Messages still queued for a persistent MQTT session (never PUBACKed), counted for `waitMs`. The
 * listener is attached before connecting: the broker resends them right behind its CONNACK.
 */
export async function queuedForSession(clientId: string, waitMs = 1000, url = MQTT_URL): Promise<number> {
  const client = mqtt.connect(url, {
    clientId,
    clean: false,
    protocolVersion: 5,
    properties: { sessionExpiryInterval: 0 },
    reconnectPeriod: 0,
  });
  let count = 0;
  client.on("message", () => count++);
  await new Promise<void>((resolve, reject) => {
    client.once("connect", () => resolve());
    client.once("error", reject);
  });
  await new Promise((r) => setTimeout(r, waitMs));
  await client.endAsync();
  return count;
}

/** scripts/services.sh's state directory (the broker's log dir is under it). */
export const SERVICES_STATE = Deno.env.get("EDGEINFER_STATE") ?? "/tmp/edgeinfer-services";

/**
 * The codec of every record batch in partition 0's first segment, or undefined when the broker's log
 * dir is not on this machine. Batch layout: baseOffset int64, batchLength int32, leaderEpoch int32,
 * magic int8, crc int32, attributes int16 (low 3 bits: codec), …
 */
export async function batchCodecs(topic: string): Promise<number[] | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(`${SERVICES_STATE}/kafka/data/${topic}-0/00000000000000000000.log`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  const b = Buffer.from(bytes);
  const codecs: number[] = [];
  for (let at = 0; at + 23 <= b.length; at += 12 + b.readInt32BE(at + 8)) {
    assert.equal(b[at + 16], 2, "record batch magic v2");
    codecs.push(b.readInt16BE(at + 21) & 7);
  }
  return codecs;
}

/**
 * Feeds `topic` at a steady `rate` of events/s until stopped (kafkajs, acks=-1): event `id` (from
 * `firstId` on) is {"id":id,"a":id % 100}, keyed k<id>, to partition id % `partitions`.
 */
export class SteadyFeed {
  readonly firstId: number;
  /** When the broker acknowledged each event, by id - firstId. */
  readonly sentAt: number[] = [];
  #stopped = false;
  #error: unknown;
  #done: Promise<void>;

  constructor(
    topic: string,
    options: { rate: number; tickMs: number; partitions: number; firstId?: number },
    client: Kafka = kafka,
  ) {
    const firstId = this.firstId = options.firstId ?? 0;
    const producer = client.producer();
    this.#done = (async () => {
      await producer.connect();
      try {
        const perTick = (options.rate * options.tickMs) / 1000;
        const start = performance.now();
        let id = firstId;
        for (let tick = 0; !this.#stopped; tick++) {
          const wait = start + tick * options.tickMs - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          const messages = [];
          for (let i = 0; i < perTick; i++, id++) {
            messages.push({
              key: `k${id}`,
              value: JSON.stringify({ id, a: id % 100 }),
              partition: id % options.partitions,
            });
          }
          await producer.send({ topic, messages, acks: -1 });
          const now = Date.now();
          for (let i = 0; i < messages.length; i++) this.sentAt.push(now);
        }
      } finally {
        await producer.disconnect();
      }
    })().catch((e) => {
      this.#error = e;
    });
  }

  /** Events fed so far. */
  get count(): number {
    return this.sentAt.length;
  }

  /** Ids fed so far: firstId … end - 1. */
  get end(): number {
    return this.firstId + this.sentAt.length;
  }

  /** How many events the broker had acknowledged at or before `t`. */
  sentBy(t: number): number {
    let lo = 0, hi = this.sentAt.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.sentAt[mid] <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  get failed(): unknown {
    return this.#error;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#done;
    if (this.#error !== undefined) throw this.#error;
  }
}

/**
 * A topic of predictions read live from its beginning by kafkajs: `read` turns each record into what the
 * test keeps (with the event's `id`); `counts` has the predictions per id.
 */
export class LiveOutput<T extends { id: number }> {
  readonly records: T[] = [];
  readonly counts = new Map<number, number>();
  #covered = 0;

  private constructor(private readonly consumer: Consumer) {}

  static async start<T extends { id: number }>(
    topic: string,
    read: (message: KafkaMessage) => T,
    client: Kafka = kafka,
  ): Promise<LiveOutput<T>> {
    const consumer = client.consumer({ groupId: uniqueName("live-verifier"), maxWaitTimeInMs: 100 });
    const output = new LiveOutput<T>(consumer);
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({
        eachMessage: ({ message }) => {
          const record = read(message);
          output.records.push(record);
          output.counts.set(record.id, (output.counts.get(record.id) ?? 0) + 1);
          return Promise.resolve();
        },
      });
    } catch (e) {
      await consumer.disconnect();
      throw e;
    }
    return output;
  }

  get count(): number {
    return this.records.length;
  }

  /** The number of ids 0 … n-1 that all have a prediction (the longest such prefix). */
  covered(): number {
    while (this.counts.has(this.#covered)) this.#covered++;
    return this.#covered;
  }

  /** Predictions beyond the first of each id. */
  duplicates(): number {
    let n = 0;
    for (const c of this.counts.values()) n += c - 1;
    return n;
  }

  stop(): Promise<void> {
    return this.consumer.disconnect();
  }
}

/**
 * scripts/services.sh kafka-up | kafka-stop | kafka-down on a private Kafka (its own state dir and ports,
 * topics not created on first use), for tests that stop the broker without touching the shared one.
 */
export function privateKafkaServices(state: string, port: number) {
  return async (command: "kafka-up" | "kafka-stop" | "kafka-down"): Promise<void> => {
    const out = await new Deno.Command("bash", {
      args: ["scripts/services.sh", command],
      cwd: new URL("../../", import.meta.url).pathname,
      env: {
        EDGEINFER_STATE: state,
        EDGEINFER_KAFKA_PORT: String(port),
        EDGEINFER_KAFKA_CONTROLLER_PORT: String(port + 1),
        EDGEINFER_KAFKA_AUTO_CREATE: "false",
        EDGEINFER_KAFKA_HEAP: "-Xms128m -Xmx512m",
        EDGEINFER_KAFKA_SECURE: "0", // no secured listeners / ACLs: starts as fast as before
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`services.sh ${command} failed:\n${new TextDecoder().decode(out.stderr)}`);
    }
  };
}
