/**
 * kafkajs glue shared by the Kafka source and sink: its logger routed to our stderr format (one
 * line per entry, WARN and above), the client settings that bound how long an unreachable broker
 * is retried, error messages that name the brokers, and one patch of a kafkajs bug.
 */
import { Kafka, type logCreator, type LogEntry, logLevel } from "kafkajs";
// kafkajs internals, for patchKafkajsIdlePolling() only (the module instance kafkajs itself uses).
import RequestQueue from "kafkajs/src/network/requestQueue/index.js";
import { logLine } from "../log.ts";
import type { Backoff, Health } from "../pipeline/health.ts";

/** kafkajs warnings that do not apply to how edgeinfer uses it (see the why beside each). */
const IGNORED = [
  // The sink bounds kafkajs's retries on purpose: it re-sends the same records itself (for ever,
  // before any later ones) and stops at its first fatal failure, so sequence numbers that kafkajs rolls back after a
  // failed request are never reused for other records (the EoS risk this warns about).
  "Limiting retries for the idempotent producer may invalidate EoS guarantees",
];

/**
 * The same line is printed at most once per REPEAT_WINDOW_MS: kafkajs logs every retry of an
 * unreachable broker twice (Connection and BrokerPool), which would bury the one error that
 * explains it.
 */
const REPEAT_WINDOW_MS = 10_000;
const recent = new Map<string, { at: number; suppressed: number }>();

/** kafkajs logCreator: `edgeinfer: kafka: WARN [Namespace] message (error)` on stderr. */
export const kafkaLogCreator: logCreator = () => (entry: LogEntry) => {
  const { message, error } = entry.log;
  if (IGNORED.includes(message)) return;
  // kafkajs's Connection logs every error response (a rebalance, a coordinator still loading) as
  // ERROR before the code that sent the request handles it; whatever is not handled is logged
  // again by that code or reaches us as an error, so these lines only add noise.
  if (entry.namespace === "Connection" && message.startsWith("Response ")) return;
  // An unreachable broker: the source or sink reports the outage once, with how long it lasts.
  if (message.startsWith("Connection error") || message.startsWith("Failed to connect to seed broker")) {
    return;
  }
  if (message.startsWith("Connection timeout") || message.startsWith("Restarting the consumer")) return;
  const ns = entry.namespace ? `[${entry.namespace}] ` : "";
  const detail = error === undefined ? "" : String(error instanceof Error ? error.message : error);
  const line = `${entry.label} ${ns}${message}${detail && !message.includes(detail) ? ` (${detail})` : ""}`;
  const now = Date.now();
  const seen = recent.get(line);
  if (seen !== undefined && now - seen.at < REPEAT_WINDOW_MS) {
    seen.suppressed++;
    return;
  }
  if (recent.size > 100) recent.clear();
  recent.set(line, { at: now, suppressed: 0 });
  const repeats = seen?.suppressed ? ` [repeated ${seen.suppressed} more times]` : "";
  logLine(`kafka: ${line}${repeats}`);
};

/**
 * kafkajs 2.2.4 bug (tulios/kafkajs#1704, #1751, unfixed upstream): after every response each
 * connection's RequestQueue re-arms `setTimeout(check, throttledUntil - Date.now())` even with
 * nothing pending; throttledUntil is -1, so that is a negative delay (Deno/Node print a
 * TimeoutNegativeWarning) that runs every 1 ms forever: ~3 % of a core per idle source+sink here.
 * The patch returns early exactly when nothing is pending and no throttle is in force; every other
 * case runs the original. It checks the original's text first, so a kafkajs upgrade that changes
 * it leaves kafkajs alone (and tests/integration/kafka_test.ts fails, to revisit this).
 */
export function patchKafkajsIdlePolling(): boolean {
  const proto = RequestQueue.prototype as {
    scheduleCheckPendingRequests(this: { pending: unknown[]; throttledUntil: number }): void;
    __edgeinferPatched?: boolean;
  };
  if (proto.__edgeinferPatched) return true;
  const original = proto.scheduleCheckPendingRequests;
  if (!String(original).includes("let scheduleAt = this.throttledUntil - Date.now()")) return false;
  proto.scheduleCheckPendingRequests = function () {
    if (this.pending.length === 0 && this.throttledUntil < Date.now()) return;
    original.call(this);
  };
  proto.__edgeinferPatched = true;
  return true;
}

/**
 * A kafkajs client. Its own retries are short (~1.5 s: backoff 300, 600 ms ±20 %, plus connect
 * attempts): the source and sink retry beyond that themselves, for ever or until --give-up-after,
 * reporting the outage as they go.
 */
export function createKafka(brokers: string[], clientId: string): Kafka {
  patchKafkajsIdlePolling();
  return new Kafka({
    brokers,
    clientId,
    logLevel: logLevel.WARN,
    logCreator: kafkaLogCreator,
    connectionTimeout: 3000,
    retry: { retries: 2, initialRetryTime: 300, maxRetryTime: 2000 },
  });
}

/** The innermost cause of a kafkajs error (they wrap: retries exceeded → connection error). */
function rootCause(e: unknown): unknown {
  let err = e;
  while (err instanceof Error && err.cause instanceof Error) err = err.cause;
  return err;
}

/**
 * Whether a kafkajs error is worth retrying later (connection lost, broker restarting, leader
 * moving) rather than permanent (record too large, not authorised, invalid config).
 */
export function isRetriableKafkaError(e: unknown, options: { unknownTopicIsFatal?: boolean } = {}): boolean {
  const cause = rootCause(e) as { retriable?: boolean; name?: string; type?: string } | undefined;
  if (cause?.name === "KafkaJSNoBrokerAvailableError") return true;
  // Kafka calls it retriable (metadata may lag a topic's creation), but a consumer of a topic that
  // does not exist waits for nothing: the operator must create it.
  if (options.unknownTopicIsFatal && cause?.type === "UNKNOWN_TOPIC_OR_PARTITION") return false;
  // Connection-level failures: refused, reset, timed out, closed while a request was pending.
  if (
    /^KafkaJS(Connection|ConnectionClosed|RequestTimeout|NumberOfRetriesExceeded)Error$/.test(
      cause?.name ?? "",
    )
  ) {
    return true;
  }
  return cause?.retriable === true;
}

/** One-line description of a kafkajs failure that names the brokers and, when known, the fix. */
export function describeKafkaError(e: unknown, brokers: string[], topic: string): string {
  const cause = rootCause(e) as { message?: string; type?: string; name?: string } | undefined;
  const where = `Kafka at ${brokers.join(",")}`;
  const message = cause?.message ?? String(e);
  if (cause?.type === "UNKNOWN_TOPIC_OR_PARTITION") {
    return `topic "${topic}" does not exist on ${where}: create it first (e.g. kafka-topics.sh --create)`;
  }
  if (cause?.name === "KafkaJSConnectionError" || /ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH/.test(message)) {
    return `cannot reach ${where}: ${message}`;
  }
  return `${where}, topic "${topic}": ${message}`;
}

/** The Kafka error code name of a kafkajs failure (e.g. "MESSAGE_TOO_LARGE"), if it has one. */
export function kafkaErrorType(e: unknown): string | undefined {
  return (rootCause(e) as { type?: string } | undefined)?.type;
}

export interface KafkaRetry {
  /** Who waits, for the status line: e.g. "Kafka sink 127.0.0.1:9092". */
  part: string;
  health: Health;
  backoff: Backoff;
  brokers: string[];
  topic: string;
  /** True once retrying must end (closing, or the part failed for good): the last failure is thrown. */
  stopped: () => boolean;
  unknownTopicIsFatal?: boolean;
}

/**
 * Runs `attempt` until it succeeds. A retriable failure is reported to `health` (the part waits) and
 * tried again after the backoff, for ever or until --give-up-after makes it fatal; any other failure
 * is thrown at once.
 */
export async function retryKafka<T>(attempt: () => Promise<T>, r: KafkaRetry): Promise<T> {
  for (;;) {
    try {
      const result = await attempt();
      r.backoff.reset();
      r.health.recovered(r.part);
      return result;
    } catch (e) {
      if (r.stopped() || !isRetriableKafkaError(e, { unknownTopicIsFatal: r.unknownTopicIsFatal })) throw e;
      r.health.waiting(r.part, describeKafkaError(e, r.brokers, r.topic));
      await new Promise((resolve) => setTimeout(resolve, r.backoff.next()));
      if (r.stopped() || r.health.fatalError !== undefined) throw e;
    }
  }
}
