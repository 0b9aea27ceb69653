/** The kafka:// URL's parameters, read into the Kafka source and sink options. */
import { type Endpoint, parseEndpoint } from "../config/endpoint.ts";
import { integerIn, oneOf, readQuery } from "../config/query.ts";
import { UsageError } from "../errors.ts";
import type { Health } from "../pipeline/health.ts";
import type { Logger } from "../log.ts";
import type { Sink, Source } from "../pipeline/types.ts";
import type { SourceLimits } from "../connectors.ts";
import { type Compression, COMPRESSIONS, createKafkaSink, DEFAULT_MAX_RECORD_BYTES } from "./sink.ts";
import { createKafkaSource, DEFAULT_SESSION_TIMEOUT_MS } from "./source.ts";
import { DEFAULT_REQUEST_TIMEOUT_MS } from "./client.ts";
import { KafkaTransactions } from "./transactions.ts";
import { kafkaSecurity, SECURITY_PARAMS } from "./security.ts";

type KafkaEndpoint = Extract<Endpoint, { kind: "kafka" }>;

/**
 * The sink URL's codec when it names none. zstd: on the car stream it sends 11× fewer bytes under load
 * (6.6× at 3000 events/s) for at most ~1.3 µs more CPU per event than none (README, "Compression").
 */
export const DEFAULT_COMPRESSION: Compression = "zstd";

/** `request-timeout-ms=`: how long an unanswered request may take before its connection is dropped. */
function requestTimeoutMs(flag: string, q: Map<string, string>): number {
  return integerIn(flag, "request-timeout-ms", q.get("request-timeout-ms"), {
    min: 1000,
    max: 300_000,
    fallback: DEFAULT_REQUEST_TIMEOUT_MS,
    meaning: "milliseconds a Kafka request may go unanswered before the connection is declared dead",
  });
}

/** `session-timeout-ms=`: how long a silent group member keeps its partitions (the takeover time). */
function sessionTimeoutMs(flag: string, q: Map<string, string>): number {
  return integerIn(flag, "session-timeout-ms", q.get("session-timeout-ms"), {
    min: 1000,
    max: 300_000,
    fallback: DEFAULT_SESSION_TIMEOUT_MS,
    meaning: "milliseconds a silent consumer group member keeps its partitions; within the broker's " +
      "group.min/max.session.timeout.ms",
  });
}

export function kafkaSource(flag: string, endpoint: KafkaEndpoint, limits: SourceLimits): Source {
  const q = readQuery(flag, endpoint.params, [
    "group",
    "from",
    "client-id",
    "request-timeout-ms",
    "session-timeout-ms",
    ...SECURITY_PARAMS,
  ]);
  return createKafkaSource({
    brokers: endpoint.brokers,
    topic: endpoint.topic,
    groupId: q.get("group") ?? "edgeinfer",
    clientId: q.get("client-id") ?? "edgeinfer",
    fromBeginning: oneOf(flag, "from", q.get("from"), ["earliest", "latest"], "earliest") === "earliest",
    requestTimeoutMs: requestTimeoutMs(flag, q),
    sessionTimeoutMs: sessionTimeoutMs(flag, q),
    security: kafkaSecurity(flag, q),
    ...limits,
  });
}

export function kafkaSink(
  flag: string,
  endpoint: KafkaEndpoint,
  options: { health?: Health; logger?: Logger },
): Sink {
  const q = readQuery(flag, endpoint.params, [
    "client-id",
    "max-record-bytes",
    "compression",
    "request-timeout-ms",
    ...SECURITY_PARAMS,
  ]);
  const maxRecordBytes = q.get("max-record-bytes");
  if (maxRecordBytes !== undefined && !/^[1-9]\d*$/.test(maxRecordBytes)) {
    throw new UsageError(
      `${flag} parameter max-record-bytes=${maxRecordBytes} must be a positive integer (the topic's ` +
        `max.message.bytes, default ${DEFAULT_MAX_RECORD_BYTES})`,
    );
  }
  return createKafkaSink({
    brokers: endpoint.brokers,
    topic: endpoint.topic,
    clientId: q.get("client-id") ?? "edgeinfer",
    maxRecordBytes: maxRecordBytes === undefined ? undefined : Number(maxRecordBytes),
    compression: oneOf(flag, "compression", q.get("compression"), [...COMPRESSIONS], DEFAULT_COMPRESSION),
    health: options.health,
    logger: options.logger,
    requestTimeoutMs: requestTimeoutMs(flag, q),
    security: kafkaSecurity(flag, q),
  });
}

/** The parts of an exactly-once Kafka → Kafka run (--exactly-once). */
export interface ExactlyOnce {
  source: Source;
  sink: Sink;
  deadLetter: Sink | undefined;
  /** For the pipeline: commit a transaction every intervalMs. */
  transaction: { intervalMs: number; commit(): Promise<"committed" | "rewound"> };
  transactions: KafkaTransactions;
}

/** How often a transaction is committed (Kafka Streams' default commit.interval.ms with exactly-once). */
export const TRANSACTION_INTERVAL_MS = 100;

/**
 * Builds the source, sink and dead-letter sink of an exactly-once run. Throws UsageError unless all
 * are Kafka topics on the same brokers (a transaction spans one cluster).
 */
export function exactlyOnce(
  urls: { source: string; sink: string; dlq: string | undefined },
  limits: SourceLimits & { health: Health },
): ExactlyOnce {
  const refuse = (flag: string, what: string) =>
    new UsageError(
      `--exactly-once needs ${flag} to be ${what}: a Kafka transaction commits the output records and the ` +
        `input offsets together, which MQTT and files cannot take part in (without --exactly-once, delivery ` +
        `is at least once)`,
    );
  const source = parseEndpoint("--source", urls.source);
  if (source.kind !== "kafka") throw refuse("--source", "a Kafka topic (kafka://…)");
  const sink = parseEndpoint("--sink", urls.sink);
  if (sink.kind !== "kafka") throw refuse("--sink", "a Kafka topic (kafka://…)");
  const dlq = urls.dlq === undefined ? undefined : parseEndpoint("--dlq", urls.dlq);
  if (dlq !== undefined && dlq.kind !== "kafka") throw refuse("--dlq", "a Kafka topic (kafka://…) or absent");
  const cluster = (brokers: string[]) => [...brokers].sort().join(",");
  for (const [flag, e] of [["--sink", sink], ["--dlq", dlq]] as const) {
    if (e?.kind === "kafka" && cluster(e.brokers) !== cluster(source.brokers)) {
      throw new UsageError(
        `--exactly-once needs ${flag} on the source's brokers (${
          source.brokers.join(",")
        }): one transaction ` +
          `spans one Kafka cluster`,
      );
    }
  }
  const sq = readQuery("--source", source.params, [
    "group",
    "from",
    "client-id",
    "request-timeout-ms",
    "session-timeout-ms",
    ...SECURITY_PARAMS,
  ]);
  const q = readQuery("--sink", sink.params, [
    "client-id",
    "max-record-bytes",
    "compression",
    "transactional-id",
    "request-timeout-ms",
    ...SECURITY_PARAMS,
  ]);
  if (dlq?.kind === "kafka") {
    // One producer writes both topics: the dead-letter URL may repeat the sink's security, not differ.
    const dq = readQuery("--dlq", dlq.params, SECURITY_PARAMS);
    const differing = SECURITY_PARAMS.find((name) => dq.has(name) && dq.get(name) !== q.get(name));
    if (differing) {
      throw new UsageError(
        `--exactly-once writes --dlq with --sink's connection: its ${differing}= must be the same as --sink's, or left out`,
      );
    }
  }
  const groupId = sq.get("group") ?? "edgeinfer";
  const kafkaSource = createKafkaSource({
    brokers: source.brokers,
    topic: source.topic,
    groupId,
    clientId: sq.get("client-id") ?? "edgeinfer",
    fromBeginning:
      oneOf("--source", "from", sq.get("from"), ["earliest", "latest"], "earliest") === "earliest",
    requestTimeoutMs: requestTimeoutMs("--source", sq),
    sessionTimeoutMs: sessionTimeoutMs("--source", sq),
    security: kafkaSecurity("--source", sq),
    ...limits,
    transactional: true,
  });
  const maxRecordBytes = q.get("max-record-bytes");
  let streamsSeen = 1; // the first stream
  const transactions = new KafkaTransactions({
    brokers: sink.brokers,
    clientId: q.get("client-id") ?? "edgeinfer",
    // Stable across restarts (the new process fences the old one), different for every gateway.
    transactionalId: q.get("transactional-id") ?? `edgeinfer-${groupId}-${source.topic}-${Deno.hostname()}`,
    compression: oneOf("--sink", "compression", q.get("compression"), [...COMPRESSIONS], DEFAULT_COMPRESSION),
    maxRecordBytes: maxRecordBytes === undefined ? undefined : Number(maxRecordBytes),
    health: limits.health,
    requestTimeoutMs: requestTimeoutMs("--sink", q),
    security: kafkaSecurity("--sink", q),
  });
  return {
    source: kafkaSource,
    sink: transactions.sink(sink.topic),
    deadLetter: dlq?.kind === "kafka" ? transactions.sink(dlq.topic) : undefined,
    transaction: {
      intervalMs: TRANSACTION_INTERVAL_MS,
      commit: async () => {
        // A new stream since the last commit (a rebalance, an outage): the acknowledgements of the
        // events whose records are in this transaction may have been forgotten, so committing could
        // write their records twice. Abort instead, and read again from the committed offsets. The
        // same when the broker declared the transaction abortable.
        const rewind = async () => {
          await transactions.abort();
          kafkaSource.rewind();
          streamsSeen = kafkaSource.streams;
          return "rewound" as const;
        };
        if (kafkaSource.streams !== streamsSeen || transactions.doomed) return await rewind();
        // The consumer does not know its group coordinator or membership right now (the library forgets
        // the coordinator on a network error, e.g. a broker restart, until its next heartbeat finds it):
        // the offsets of the events whose records are in this transaction cannot be committed with them.
        // Committing the records alone would write them a second time when those events are read again
        // (after a crash or rebalance before the next commit). Abort and read them again instead.
        const offsets = kafkaSource.takeTransactionOffsets();
        if (offsets === undefined && transactions.open) return await rewind();
        if (await transactions.commit(offsets) === "committed") return "committed";
        // Aborted: the group moved on (a stall past the session timeout). Read again, as after a rebalance.
        kafkaSource.rewind();
        streamsSeen = kafkaSource.streams;
        return "rewound";
      },
    },
    transactions,
  };
}
