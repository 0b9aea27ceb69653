/**
 * Kafka sink: an idempotent kafkajs producer with acks=all; send() resolves once Kafka has
 * acknowledged every record (or refused one for good, see below).
 *
 * Sends are serialised: kafkajs does not keep the call order of concurrent send()s (a failed
 * request rolls back its sequence numbers and is retried *after* a later call's request went
 * out), and per-key order must survive retries. While one request is in flight, later batches
 * queue up and go out together in the next request, so throughput still grows with load.
 *
 * Failures:
 * - retriable (broker down or restarting, leader moving, timeout): the same request is sent again,
 *   before any later one, for ever with capped backoff (or until --give-up-after), reported to
 *   `health`; the idempotent producer makes the broker drop what an earlier attempt already wrote.
 *   Starting while Kafka is down is the same case.
 * - one record refused for good (larger than the topic accepts, invalid for it): a poison pill
 *   must not stop the stream. Records over `maxRecordBytes` are refused before sending; when the
 *   broker refuses a request for such a reason, its records are sent one by one to find the
 *   culprits. send() resolves with the refused records (the pipeline dead-letters them).
 * - anything else (not authorised, topic missing while the broker does not create topics): fatal,
 *   reported to `health` at once — at start too, before any event flows — and send() rejects.
 */
import { ConfigResourceTypes, type Message, Partitioners } from "kafkajs";
import { RuntimeError } from "../errors.ts";
import { createKafka, describeKafkaError, kafkaErrorType, retryKafka } from "./client.ts";
import { logLine } from "../log.ts";
import { Backoff, Health } from "../pipeline/health.ts";
import type { OutRecord, Refusal, Sink } from "../pipeline/types.ts";

export interface KafkaSinkOptions {
  /** Bootstrap brokers as host:port. Example: `["127.0.0.1:9092"]`. */
  brokers: string[];
  /** Topic to write to. Created on first use if the broker allows it. Example: `"cars.predictions"`. */
  topic: string;
  /** Client id shown in broker logs and metrics. Example: `"edgeinfer"`. */
  clientId: string;
  /**
   * Largest record sent (key + value + headers, approx.); larger ones are refused without trying.
   * Kafka's default `max.message.bytes` is 1 MiB for a whole record batch. Default 1,000,000.
   */
  maxRecordBytes?: number;
  /** Where outages and fatal failures are reported. */
  health?: Health;
}

/**
 * Rough bytes per produce request. Kafka refuses a partition's record batch above its
 * `max.message.bytes` (1 MiB by default); staying well below keeps a large pipeline batch to a
 * one-partition topic within it. A bigger send() is split into several requests, in order.
 */
const MAX_REQUEST_BYTES = 512 * 1024;
export const DEFAULT_MAX_RECORD_BYTES = 1_000_000;

/** Broker answers that condemn a record (or the batch holding it), not the connection. */
const RECORD_ERRORS = new Set([
  "MESSAGE_TOO_LARGE",
  "RECORD_LIST_TOO_LARGE",
  "INVALID_RECORD",
  "CORRUPT_MESSAGE",
]);

interface Pending {
  records: OutRecord[];
  next: number; // index of the first record not yet in a request
  refused: Refusal[];
  resolve: (refused: Refusal[]) => void;
  reject: (e: Error) => void;
}

/** Approximate size of a record on the wire (ASCII-ish text assumed). */
function approxSize(r: OutRecord): number {
  let n = 32 + r.value.length + (r.key?.length ?? 0);
  for (const k in r.headers) n += k.length + r.headers[k].length + 4;
  return n;
}

export function createKafkaSink(options: KafkaSinkOptions): Sink {
  const { brokers, topic } = options;
  const maxRecordBytes = options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
  const health = options.health ?? new Health(undefined, logLine);
  const part = `Kafka sink ${brokers.join(",")}`;
  const kafka = createKafka(brokers, options.clientId);
  const producer = kafka.producer({
    idempotent: true, // the broker drops duplicates of retried requests
    // kafkajs implements KIP-98's first idempotent producer, which assumes one request in flight
    // (it also serialises produce requests per broker with a lock).
    maxInFlightRequests: 1,
    // Explicit: Kafka's Java-compatible murmur2 key partitioning (and no kafkajs v2 warning).
    createPartitioner: Partitioners.DefaultPartitioner,
    // Bounded like the client's, unlike kafkajs's default for idempotent producers (forever):
    // withRetry() retries beyond that, with health reporting and --give-up-after.
    retry: { retries: 3, initialRetryTime: 300, maxRetryTime: 2000 },
  });
  const backoff = new Backoff(health.retry);
  let failure: Error | undefined;
  const fail = (e: unknown): Error => {
    failure ??= e instanceof RuntimeError
      ? e
      : new RuntimeError(`Kafka sink: ${describeKafkaError(e, brokers, topic)}`);
    health.fatal(failure);
    return failure;
  };
  const queue: Pending[] = [];
  let draining: Promise<void> | undefined; // drain() while it runs
  let closed = false;

  const withRetry = <T>(attempt: () => Promise<T>) =>
    retryKafka(attempt, {
      part,
      health,
      backoff,
      brokers,
      topic,
      stopped: () => closed || failure !== undefined,
    });

  /**
   * At start, before any event flows: the topic must exist or be creatable, and be ours to write.
   * (Unknown with auto-creation off, or not authorised, is fatal; an unreachable broker is waited out.)
   */
  async function checkTopic(): Promise<void> {
    const admin = kafka.admin();
    await withRetry(() => admin.connect());
    try {
      const known = await withRetry(async () => {
        try {
          await admin.fetchTopicMetadata({ topics: [topic] });
          return true;
        } catch (e) {
          if (kafkaErrorType(e) === "UNKNOWN_TOPIC_OR_PARTITION") return false;
          throw e;
        }
      });
      if (known) return;
      const cluster = await withRetry(() => admin.describeCluster());
      const configs = await withRetry(() =>
        admin.describeConfigs({
          resources: [{
            type: ConfigResourceTypes.BROKER,
            name: String(cluster.controller ?? cluster.brokers[0].nodeId),
          }],
          includeSynonyms: false,
        })
      );
      const entry = configs.resources[0]?.configEntries.find((c) =>
        c.configName === "auto.create.topics.enable"
      );
      if (entry?.configValue === "false") {
        throw new RuntimeError(
          `Kafka sink: topic "${topic}" does not exist on Kafka at ${
            brokers.join(",")
          } and the broker does ` +
            `not create topics (auto.create.topics.enable=false): create it first (e.g. kafka-topics.sh --create)`,
        );
      }
    } finally {
      await admin.disconnect().catch(() => {});
    }
  }

  // Connect eagerly, so that the first send does not pay for it and a fatal problem surfaces now.
  const connected = (async () => {
    await withRetry(() => producer.connect());
    await checkTopic();
  })().catch((e) => {
    if (!closed) fail(e);
  });

  /** Sends one request's messages; resolves with those (indices into `messages`) refused for good. */
  async function sendRequest(messages: Message[]): Promise<Refusal[]> {
    try {
      await withRetry(() => producer.send({ topic, messages, acks: -1 }));
      return [];
    } catch (e) {
      const type = kafkaErrorType(e) ?? "";
      if (!RECORD_ERRORS.has(type) || closed) throw e;
      if (messages.length === 1) return [{ index: 0, reason: `Kafka refused the record: ${type}` }];
      // Find the culprits: one record per request, in order (keeps per-key order).
      const refused: Refusal[] = [];
      for (let i = 0; i < messages.length; i++) {
        for (const r of await sendRequest([messages[i]])) refused.push({ index: i, reason: r.reason });
      }
      return refused;
    }
  }

  /** Sends queued records, one request at a time, until the queue is empty. */
  async function drain(): Promise<void> {
    await connected;
    while (queue.length > 0 && failure === undefined) {
      const messages: Message[] = [];
      const origins: { p: Pending; index: number }[] = [];
      const done: Pending[] = [];
      let bytes = 0;
      while (queue.length > 0 && bytes < MAX_REQUEST_BYTES) {
        const p = queue[0];
        while (p.next < p.records.length && bytes < MAX_REQUEST_BYTES) {
          const index = p.next++;
          const r = p.records[index];
          const size = approxSize(r);
          if (size > maxRecordBytes) {
            p.refused.push({
              index,
              reason: `record of ~${size} bytes exceeds the Kafka sink's limit of ${maxRecordBytes} ` +
                `(max-record-bytes; Kafka's max.message.bytes)`,
            });
            continue;
          }
          bytes += size;
          messages.push({ key: r.key ?? null, value: r.value, headers: r.headers });
          origins.push({ p, index });
        }
        if (p.next < p.records.length) break; // the rest goes in the next request
        done.push(queue.shift()!);
      }
      try {
        const refused = messages.length === 0 ? [] : await sendRequest(messages);
        for (const { index: i, reason } of refused) {
          const { p, index } = origins[i];
          p.refused.push({ index, reason });
        }
        for (const p of done) p.resolve(p.refused);
      } catch (e) {
        const err = fail(e);
        for (const p of done) p.reject(err);
      }
    }
    for (const p of queue.splice(0)) p.reject(failure!); // only left when failed
    draining = undefined; // no await since the loop's last check: nothing queued meanwhile
  }

  return {
    description: `kafka://${brokers.join(",")}/${topic}`,

    send(records: OutRecord[]): Promise<Refusal[]> {
      if (closed) return Promise.reject(new Error("KafkaSink.send() after close()"));
      if (failure !== undefined) return Promise.reject(failure);
      if (records.length === 0) return Promise.resolve([]);
      return new Promise((resolve, reject) => {
        queue.push({ records, next: 0, refused: [], resolve, reject });
        draining ??= drain();
      });
    },

    async close() {
      if (closed) return;
      closed = true; // ends retries: what is not durable now stays unacknowledged
      await connected;
      await draining;
      await producer.disconnect();
    },
  };
}
