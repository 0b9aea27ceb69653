/**
 * Kafka sink: an idempotent @platformatic/kafka producer with acks=all; send() resolves once Kafka
 * has acknowledged every record (or refused one for good, see below).
 *
 * Requests go one at a time (the idempotent producer's rule), in call order. While one is in flight,
 * later batches queue up and go out together in the next request (up to MAX_REQUEST_BYTES), so
 * throughput grows with load.
 *
 * Failures:
 * - retriable (broker down or restarting, leader moving): the library sends the same request again,
 *   with the same sequence numbers (the broker drops what an earlier attempt already wrote), twice,
 *   then this sink goes on for ever with capped backoff (the library then starts a new idempotent
 *   session: a request that had in fact been written is written again — duplicates, never loss), each
 *   retry reported to `health`; --give-up-after makes it fatal. Starting while Kafka is down is the same.
 * - a slow link: a request that times out (its bytes take longer than the request timeout to cross
 *   the link) would time out again for ever if sent again as it is. Its records are sent again in
 *   requests of a quarter of the size, down to MIN_REQUEST_BYTES; answers well within the timeout
 *   double the size again, up to MAX_REQUEST_BYTES.
 * - one record refused for good (larger than the topic accepts, invalid for it): a poison pill
 *   must not stop the stream. Records over `maxRecordBytes` are refused before sending; when the
 *   broker refuses a request for such a reason, its records are sent one by one to find the
 *   culprits. send() resolves with the refused records (the pipeline dead-letters them).
 * - anything else (not authorised, topic missing while the broker does not create topics): fatal,
 *   reported to `health` at once — at start too, before any event flows — and send() rejects.
 */
import { compatibilityPartitioner, type MessageToProduce, ProduceAcks, Producer } from "@platformatic/kafka";
import { RuntimeError } from "../errors.ts";
import { type Logger, rootLogger } from "../log.ts";
import { Backoff, Health } from "../pipeline/health.ts";
import type { OutRecord, Refusal, Sink } from "../pipeline/types.ts";
import {
  baseClientOptions,
  DEFAULT_REQUEST_TIMEOUT_MS,
  describeKafkaError,
  ensureTopic,
  HeaderEncoder,
  isRequestTimeout,
  isRetriableKafkaError,
  isSecurityFailure,
  kafkaErrorType,
  recordSerializers,
  retryKafka,
  watchTlsAlerts,
} from "./client.ts";
import { describeSecurity, type KafkaSecurity } from "./security.ts";

type Message = MessageToProduce<string, string, Buffer, Buffer>;

/** Compression codecs of the Kafka sink (`compression=`): all built into the client (wasm or zlib). */
export const COMPRESSIONS = ["none", "gzip", "snappy", "lz4", "zstd"] as const;
export type Compression = typeof COMPRESSIONS[number];

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
  /** Record batch compression. Default "none". */
  compression?: Compression;
  /** Where outages and fatal failures are reported. */
  health?: Health;
  /** Where its own lines go; default: the root logger. */
  logger?: Logger;
  /** A request unanswered this long closes its connection (DEFAULT_REQUEST_TIMEOUT_MS). */
  requestTimeoutMs?: number;
  /** TLS and SASL (the URL's tls=, sasl=, …); plaintext without it. */
  security?: KafkaSecurity;
}

/**
 * Rough bytes per produce request. Kafka refuses a partition's record batch above its
 * `max.message.bytes` (1 MiB by default); staying well below keeps a large pipeline batch to a
 * one-partition topic within it. A bigger send() is split into several requests, in order.
 */
const MAX_REQUEST_BYTES = 512 * 1024;
/** The smallest request size a slow link brings it down to (one record may still be larger). */
const MIN_REQUEST_BYTES = 16 * 1024;
/** The library's own attempts at one request before it gives it back to us (2 retries: 3 attempts). */
const LIBRARY_PRODUCE_RETRIES = 2;

/** A request timed out and holds several records: they are sent again in smaller requests. */
class SlowLink extends Error {}

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

/**
 * Why record `r` is refused before sending (larger than `maxRecordBytes`), or undefined: a record the
 * topic cannot take is a poison pill for the producer, not a reason to stop.
 */
export function oversizeReason(r: OutRecord, maxRecordBytes: number): string | undefined {
  const size = approxSize(r);
  if (size <= maxRecordBytes) return undefined;
  return `record of ~${size} bytes exceeds the Kafka sink's limit of ${maxRecordBytes} ` +
    `(max-record-bytes; Kafka's max.message.bytes)`;
}

export function createKafkaSink(options: KafkaSinkOptions): Sink {
  const { brokers, topic } = options;
  const maxRecordBytes = options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
  const log = options.logger ?? rootLogger;
  const health = options.health ?? new Health(undefined, log);
  const part = `Kafka sink ${brokers.join(",")}`;
  const backoff = new Backoff(health.retry);
  const headerEncoder = new HeaderEncoder();
  const producer = new Producer({
    ...baseClientOptions(brokers, options.clientId, options.requestTimeoutMs, options.security),
    serializers: recordSerializers,
    // The broker drops duplicates of a retried request (same producer id and sequence numbers). The
    // library then sends one request at a time per broker, and keeps call order.
    idempotent: true,
    acks: ProduceAcks.ALL,
    // Kafka's Java-compatible murmur2 key partitioning: a key lands where a Java producer puts it.
    partitioner: compatibilityPartitioner,
    // A topic that does not exist yet is created on first use where the broker allows it (checkTopic
    // found out at start); without this the library waits for it for ever.
    autocreateTopics: true,
    compression: options.compression === "none" ? undefined : options.compression,
    // The library retries a failed produce request itself, with the same sequence numbers, so that the
    // broker deduplicates (for an idempotent producer without limit, unless told: see the header). Each
    // retry is reported here: the status line shows the outage, and --give-up-after ends it (close()
    // aborts the retries).
    retries: LIBRARY_PRODUCE_RETRIES,
    retryDelay: (_client: unknown, _operation: string, _attempt: number, _retries: number, error: Error) => {
      if (!closed && isSecurityFailure(error)) fail(error); // retried for ever by the library otherwise
      else if (!closed && isRetriableKafkaError(error)) {
        health.waiting(part, describeKafkaError(error, brokers, topic, options.security));
      }
      return backoff.next();
    },
  });
  let failure: Error | undefined;
  const fail = (e: unknown): Error => {
    failure ??= health.fatalError ??
      (e instanceof RuntimeError
        ? e
        : new RuntimeError(`Kafka sink: ${describeKafkaError(e, brokers, topic, options.security)}`));
    health.fatal(failure);
    return failure;
  };
  let producerClosed: Promise<void> | undefined;
  const closeProducer = () => producerClosed ??= producer.close().catch(() => {});
  // A fatal failure anywhere ends the run: stop the library's retries now.
  health.onFatal(() => void closeProducer());
  watchTlsAlerts(
    producer,
    options.security,
    brokers,
    (reason) => fail(new RuntimeError(`Kafka sink: ${reason}`)),
  );
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

  // Connect eagerly, so that the first send does not pay for it and a fatal problem surfaces now.
  const connected = (async () => {
    await ensureTopic(producer, withRetry, brokers, topic, "Kafka sink");
  })().catch((e) => {
    if (!closed) fail(e);
  });

  /** Bytes per request: MAX_REQUEST_BYTES, less on a slow link (see the header). */
  let requestBytes = MAX_REQUEST_BYTES;
  const requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;

  /** Sends one request's messages; resolves with those (indices into `messages`) refused for good. */
  async function sendRequest(messages: Message[], sizes: number[]): Promise<Refusal[]> {
    try {
      await withRetry(async () => {
        const started = performance.now();
        try {
          await producer.send({ messages });
        } catch (e) {
          if (messages.length > 1 && isRequestTimeout(e)) {
            throw new SlowLink(describeKafkaError(e, brokers, topic, options.security));
          }
          throw e;
        }
        if (performance.now() - started < requestTimeoutMs / 8) {
          requestBytes = Math.min(MAX_REQUEST_BYTES, requestBytes * 2);
        }
      });
      return [];
    } catch (e) {
      if (e instanceof SlowLink && !closed) {
        const bytes = sizes.reduce((a, b) => a + b, 0);
        requestBytes = Math.max(MIN_REQUEST_BYTES, Math.min(requestBytes, Math.floor(bytes / 4)));
        log.warn(
          `kafka sink: a request of ${messages.length} records (~${bytes} bytes) timed out (${e.message}): ` +
            `sending them in requests of at most ${requestBytes} bytes`,
        );
        return await sendInRequests(messages, sizes);
      }
      const type = kafkaErrorType(e) ?? "";
      if (!RECORD_ERRORS.has(type) || closed) throw e;
      if (messages.length === 1) return [{ index: 0, reason: `Kafka refused the record: ${type}` }];
      // Find the culprits: one record per request, in order (keeps per-key order).
      const refused: Refusal[] = [];
      for (let i = 0; i < messages.length; i++) {
        for (const r of await sendRequest([messages[i]], [sizes[i]])) {
          refused.push({ index: i, reason: r.reason });
        }
      }
      return refused;
    }
  }

  /** Sends `messages` in order, in requests of at most `requestBytes` (one record at least). */
  async function sendInRequests(messages: Message[], sizes: number[]): Promise<Refusal[]> {
    const refused: Refusal[] = [];
    for (let start = 0; start < messages.length;) {
      let end = start + 1;
      let bytes = sizes[start];
      while (end < messages.length && bytes + sizes[end] <= requestBytes) bytes += sizes[end++];
      const part = await sendRequest(messages.slice(start, end), sizes.slice(start, end));
      for (const { index, reason } of part) refused.push({ index: start + index, reason });
      start = end;
    }
    return refused;
  }

  /** Sends queued records, one request at a time, until the queue is empty. */
  async function drain(): Promise<void> {
    await connected;
    while (queue.length > 0 && failure === undefined) {
      const messages: Message[] = [];
      const sizes: number[] = [];
      const origins: { p: Pending; index: number }[] = [];
      const done: Pending[] = [];
      let bytes = 0;
      while (queue.length > 0 && bytes < requestBytes) {
        const p = queue[0];
        while (p.next < p.records.length && bytes < requestBytes) {
          const index = p.next++;
          const r = p.records[index];
          const reason = oversizeReason(r, maxRecordBytes);
          if (reason !== undefined) {
            p.refused.push({ index, reason });
            continue;
          }
          const size = approxSize(r);
          bytes += size;
          sizes.push(size);
          messages.push({ topic, key: r.key, value: r.value, headers: headerEncoder.encode(r.headers) });
          origins.push({ p, index });
        }
        if (p.next < p.records.length) break; // the rest goes in the next request
        done.push(queue.shift()!);
      }
      try {
        const refused = messages.length === 0 ? [] : await sendRequest(messages, sizes);
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
    description: `kafka://${brokers.join(",")}/${topic}${describeSecurity(options.security)}`,

    send(records: OutRecord[]): Promise<Refusal[]> {
      if (closed) return Promise.reject(new Error("KafkaSink.send() after close()"));
      if (failure !== undefined) return Promise.reject(failure);
      if (records.length === 0) return Promise.resolve([]);
      return new Promise((resolve, reject) => {
        queue.push({ records, next: 0, refused: [], resolve, reject });
        draining ??= drain();
      });
    },

    refuses: (record) => oversizeReason(record, maxRecordBytes),

    async close() {
      if (closed) return;
      closed = true;
      // Normally nothing is pending here (the pipeline closes sinks after the last ack). At a
      // shutdown timeout a request may still be retried: closing the producer ends its retries, and what
      // is not durable now stays unacknowledged.
      if (draining !== undefined) await closeProducer();
      await connected;
      await draining;
      await closeProducer();
    },
  };
}
