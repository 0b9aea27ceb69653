/**
 * Kafka sink: an idempotent kafkajs producer with acks=all; send() resolves once Kafka has
 * acknowledged every record.
 *
 * Sends are serialised: kafkajs does not keep the call order of concurrent send()s (a failed
 * request rolls back its sequence numbers and is retried *after* a later call's request went
 * out), and per-key order must survive retries. While one request is in flight, later batches
 * queue up and go out together in the next request, so throughput still grows with load.
 *
 * A request that fails for a transient reason (broker restarting, connection lost) is sent again,
 * the same records before any later ones, for up to DELIVERY_TIMEOUT_MS; the idempotent producer
 * makes the broker drop what an earlier attempt already wrote. After that, or on a permanent error
 * (record too large, not authorised), the send fails and the sink refuses every later send:
 * writing later batches after a lost one would reorder them, and the pipeline stops anyway.
 */
import { type Message, Partitioners } from "kafkajs";
import { RuntimeError } from "../errors.ts";
import { createKafka, describeKafkaError, isRetriableKafkaError } from "../kafka_client.ts";
import { logLine } from "../log.ts";
import type { OutRecord, Sink } from "../pipeline/types.ts";

export interface KafkaSinkOptions {
  /** Bootstrap brokers as host:port. Example: `["127.0.0.1:9092"]`. */
  brokers: string[];
  /** Topic to write to. Created on first use if the broker allows it. Example: `"cars.predictions"`. */
  topic: string;
  /** Client id shown in broker logs and metrics. Example: `"edgeinfer"`. */
  clientId: string;
}

/**
 * Rough bytes per produce request. Kafka refuses a partition's record batch above its
 * `max.message.bytes` (1 MiB by default); staying well below keeps a large pipeline batch to a
 * one-partition topic within it. A bigger send() is split into several requests, in order.
 */
const MAX_REQUEST_BYTES = 512 * 1024;
/** How long a request is retried through a transient failure (cf. Java's delivery.timeout.ms). */
const DELIVERY_TIMEOUT_MS = 30_000;
const RETRY_PAUSE_MS = 1000;

interface Pending {
  records: OutRecord[];
  next: number; // index of the first record not yet in a request
  resolve: () => void;
  reject: (e: Error) => void;
}

/** Approximate size of a record on the wire, for MAX_REQUEST_BYTES (ASCII-ish text assumed). */
function approxSize(r: OutRecord): number {
  let n = 32 + r.value.length + (r.key?.length ?? 0);
  for (const k in r.headers) n += k.length + r.headers[k].length + 4;
  return n;
}

export function createKafkaSink(options: KafkaSinkOptions): Sink {
  const { brokers, topic } = options;
  const producer = createKafka(brokers, options.clientId).producer({
    idempotent: true, // the broker drops duplicates of retried requests
    // kafkajs implements KIP-98's first idempotent producer, which assumes one request in flight
    // (it also serialises produce requests per broker with a lock).
    maxInFlightRequests: 1,
    // Explicit: Kafka's Java-compatible murmur2 key partitioning (and no kafkajs v2 warning).
    createPartitioner: Partitioners.DefaultPartitioner,
    // Bounded like the client's (~6 s), unlike kafkajs's default for idempotent producers
    // (forever); sendWithRetry() retries beyond that.
    retry: { retries: 5, initialRetryTime: 300, maxRetryTime: 2000 },
  });
  let failure: Error | undefined;
  const fail = (e: unknown) => {
    failure ??= new RuntimeError(`Kafka sink: ${describeKafkaError(e, brokers, topic)}`);
  };
  // Connect eagerly so the first send does not pay for it; a failure surfaces at that send.
  const connected = producer.connect().catch(fail);
  const queue: Pending[] = [];
  let draining: Promise<void> | undefined; // drain() while it runs
  let closed = false;

  async function sendWithRetry(messages: Message[]): Promise<void> {
    const deadline = Date.now() + DELIVERY_TIMEOUT_MS;
    for (;;) {
      try {
        return void await producer.send({ topic, messages, acks: -1 });
      } catch (e) {
        if (closed || Date.now() + RETRY_PAUSE_MS >= deadline || !isRetriableKafkaError(e)) throw e;
        logLine(`kafka: send failed, retrying: ${describeKafkaError(e, brokers, topic)}`);
        await new Promise((r) => setTimeout(r, RETRY_PAUSE_MS));
      }
    }
  }

  /** Sends queued records, one request at a time, until the queue is empty. */
  async function drain(): Promise<void> {
    await connected;
    while (queue.length > 0 && failure === undefined) {
      const messages: Message[] = [];
      const done: Pending[] = [];
      let bytes = 0;
      while (queue.length > 0 && bytes < MAX_REQUEST_BYTES) {
        const p = queue[0];
        while (p.next < p.records.length && bytes < MAX_REQUEST_BYTES) {
          const r = p.records[p.next++];
          bytes += approxSize(r);
          messages.push({ key: r.key ?? null, value: r.value, headers: r.headers });
        }
        if (p.next < p.records.length) break; // the rest goes in the next request
        done.push(queue.shift()!);
      }
      try {
        await sendWithRetry(messages);
        for (const p of done) p.resolve();
      } catch (e) {
        fail(e);
        for (const p of done) p.reject(failure!);
      }
    }
    for (const p of queue.splice(0)) p.reject(failure!); // only left when failed
    draining = undefined; // no await since the loop's last check: nothing queued meanwhile
  }

  return {
    description: `kafka://${brokers.join(",")}/${topic}`,

    send(records: OutRecord[]): Promise<void> {
      if (closed) return Promise.reject(new Error("KafkaSink.send() after close()"));
      if (failure !== undefined) return Promise.reject(failure);
      if (records.length === 0) return Promise.resolve();
      return new Promise((resolve, reject) => {
        queue.push({ records, next: 0, resolve, reject });
        draining ??= drain();
      });
    },

    async close() {
      if (closed) return;
      closed = true;
      await connected;
      // Let queued sends finish: the pipeline closes the sink after its sends resolved, but a
      // caller that did not wait must not see its records dropped silently.
      await draining;
      await producer.disconnect();
    },
  };
}
