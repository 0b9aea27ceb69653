/**
 * @platformatic/kafka glue shared by the Kafka source and sink: the client settings that bound how
 * long one request may take, the errors it reports read as retriable or fatal, one-line messages
 * that name the brokers, and the retry loop that reports an outage to `health` while it lasts.
 *
 * The library reports failures as trees: a MultipleErrors (one per attempt, or per broker) holding
 * NetworkErrors (connection refused, closed, timed out) and ProtocolErrors (Kafka's error codes, in
 * `apiId`, e.g. "MESSAGE_TOO_LARGE"), each with `canRetry`.
 */
import { type Base, MultipleErrors, stringSerializer } from "@platformatic/kafka";
import { RuntimeError } from "../errors.ts";
import type { Backoff, Health } from "../pipeline/health.ts";
import { fatalTlsReason } from "../config/tls.ts";
import { KAFKA_PASSWORD_ENV, type KafkaSecurity, principalOf, securityClientOptions } from "./security.ts";

/**
 * How long a request may go unanswered before its connection is declared dead, closed and opened anew
 * (`request-timeout-ms=`). It is what detects a half-open link (the broker gone silent while the socket
 * looks open): the source always has a fetch or a heartbeat in flight, the sink a produce while it sends.
 * It must exceed the produce timeout below plus the link's round trip.
 */
export const DEFAULT_REQUEST_TIMEOUT_MS = 15_000;

/** Library settings every client of ours uses; `security` adds TLS and SASL (src/kafka/security.ts). */
export function baseClientOptions(
  brokers: string[],
  clientId: string,
  requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS,
  security?: KafkaSecurity,
) {
  return {
    ...securityClientOptions(security, brokers),
    clientId,
    bootstrapBrokers: brokers,
    connectTimeout: 3000,
    // The broker's time limit for a produce of acks=all to reach the replicas (sent in the request).
    timeout: Math.min(10_000, Math.floor(requestTimeoutMs * 2 / 3)),
    // The client's: a request unanswered this long closes its connection (the library's own default is 30 s).
    requestTimeout: requestTimeoutMs,
    // Metadata is refreshed on errors anyway; 5 s (the library's default) re-asks for it 12×/min.
    metadataMaxAge: 60_000,
  };
}

/**
 * Turns our records' headers into the encoded form the producer sends. Most header values repeat from
 * record to record (the model's name and version): per header name, the last value's encoding is kept
 * and reused while the value stays the same, so only values that change (the event's source) are encoded
 * per record. Names are encoded once.
 */
export class HeaderEncoder {
  private readonly byName = new Map<string, { name: Buffer; value: string; bytes: Buffer }>();

  encode(headers: Record<string, string>): Map<Buffer, Buffer> | undefined {
    let out: Map<Buffer, Buffer> | undefined;
    for (const name in headers) {
      const value = headers[name];
      let slot = this.byName.get(name);
      if (slot === undefined) {
        if (this.byName.size >= 64) this.byName.clear(); // names are few; never grow without bound
        slot = { name: Buffer.from(name), value, bytes: Buffer.from(value) };
        this.byName.set(name, slot);
      } else if (slot.value !== value) {
        slot.value = value;
        slot.bytes = Buffer.from(value);
      }
      (out ??= new Map()).set(slot.name, slot.bytes);
    }
    return out;
  }
}

/** Serializers for records whose key and value are strings and whose headers HeaderEncoder encoded. */
export const recordSerializers = {
  key: stringSerializer,
  value: stringSerializer,
  headerKey: (bytes?: Buffer) => bytes,
  headerValue: (bytes?: Buffer) => bytes,
};

/** Every error in a library failure's tree (MultipleErrors' members and causes), outermost first. */
function* errorsOf(e: unknown, depth = 0): Generator<Record<string, unknown>> {
  if (!(e instanceof Error) || depth > 8) return;
  yield e as unknown as Record<string, unknown>;
  if (e instanceof AggregateError) { for (const inner of e.errors) yield* errorsOf(inner, depth + 1); }
  if (e.cause !== undefined) yield* errorsOf(e.cause, depth + 1);
}

/** The Kafka error code name of one error of the tree, if it has one. */
function typeOf(err: Record<string, unknown>): string | undefined {
  if (typeof err.apiId === "string") return err.apiId;
  // The library's metadata lookup replaces Kafka's UNKNOWN_TOPIC_OR_PARTITION with this UserError.
  if (err.code === "PLT_KFK_USER" && /^Unknown topic /.test(String(err.message))) {
    return "UNKNOWN_TOPIC_OR_PARTITION";
  }
  return undefined;
}

/** The Kafka error code name of a failure (e.g. "MESSAGE_TOO_LARGE"), if it has one. */
export function kafkaErrorType(e: unknown): string | undefined {
  for (const err of errorsOf(e)) {
    const type = typeOf(err);
    if (type !== undefined) return type;
  }
  return undefined;
}

/** Kafka error codes that no retry will heal: the operator must act. */
const FATAL_TYPES = new Set([
  "TOPIC_AUTHORIZATION_FAILED",
  "GROUP_AUTHORIZATION_FAILED",
  "CLUSTER_AUTHORIZATION_FAILED",
  "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
  "SASL_AUTHENTICATION_FAILED",
  "INVALID_TOPIC_EXCEPTION",
  "UNSUPPORTED_VERSION",
  "INVALID_CONFIG",
  "INVALID_REQUEST",
  "INVALID_SESSION_TIMEOUT", // session-timeout-ms= outside the broker's group.min/max.session.timeout.ms
  "INVALID_PRODUCER_EPOCH", // fenced by a newer instance with the same transactional id
  "PRODUCER_FENCED",
  "TRANSACTIONAL_ID_NOT_FOUND",
]);

/**
 * Whether a failure is worth retrying later (connection lost, broker restarting, leader moving, a
 * request timed out) rather than permanent (record too large, not authorised, fenced).
 */
export function isRetriableKafkaError(e: unknown, options: { unknownTopicIsFatal?: boolean } = {}): boolean {
  let network = false;
  let retriable = false;
  for (const err of errorsOf(e)) {
    const type = typeOf(err);
    if (type !== undefined) {
      if (FATAL_TYPES.has(type)) return false;
      // Kafka calls it retriable (metadata may lag a topic's creation), but a consumer of a topic that
      // does not exist waits for nothing: the operator must create it.
      if (type === "UNKNOWN_TOPIC_OR_PARTITION") {
        if (options.unknownTopicIsFatal) return false;
        retriable = true;
        continue;
      }
      if (err.canRetry === false) return false;
      retriable = true;
    }
    if (err.code === "PLT_KFK_AUTHENTICATION") return false;
    if (fatalTlsReason(err as unknown as Error, undefined) !== undefined) return false;
    if (err.closed === true) return false; // our own client was closed
    // Connection refused, reset, closed, or a request that timed out (the library marks timeouts not
    // retriable within one operation; for us the broker is merely unreachable for now).
    if (err.code === "PLT_KFK_NETWORK") network = true;
  }
  return network || retriable;
}

/**
 * Whether a failure is a refused login or a TLS failure no retry heals. The library retries these as
 * network errors (it does not look into a NetworkError's cause), for ever in the consumer's group
 * operations: its retryDelay hooks end the run on them instead.
 */
export function isSecurityFailure(e: unknown): boolean {
  for (const err of errorsOf(e)) {
    if (err.code === "PLT_KFK_AUTHENTICATION" || typeOf(err) === "SASL_AUTHENTICATION_FAILED") return true;
    if (fatalTlsReason(err as unknown as Error, undefined) !== undefined) return true;
  }
  return false;
}

/** Whether a failure is, or holds, a request that went unanswered for the request timeout. */
export function isRequestTimeout(e: unknown): boolean {
  for (const err of errorsOf(e)) if (/Request timed out/.test(String(err.message))) return true;
  return false;
}

/** Whether a failure is the network's (refused, reset, closed, a request timed out), not a broker's answer. */
export function isNetworkKafkaError(e: unknown): boolean {
  for (const err of errorsOf(e)) if (err.code === "PLT_KFK_NETWORK") return true;
  return false;
}

/** The innermost, most specific message of a failure. */
function innermostMessage(e: unknown): string {
  let message = e instanceof Error ? e.message : String(e);
  for (const err of errorsOf(e)) {
    if (err instanceof MultipleErrors) continue;
    const m = String(err.message ?? "");
    if (m !== "") message = m;
    const type = typeOf(err);
    if (type !== undefined) return `${type}: ${m}`;
  }
  return message;
}

/** The Kafka error codes of refused permissions, and what the principal lacks. */
const AUTHORIZATION: Record<string, string> = {
  TOPIC_AUTHORIZATION_FAILED: "may not use the topic (Read for a source, Write for a sink)",
  GROUP_AUTHORIZATION_FAILED: "may not use the consumer group (Read on group=)",
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "may not use the transactional id (Write on transactional-id=)",
  CLUSTER_AUTHORIZATION_FAILED: "may not produce idempotently (IdempotentWrite on the cluster)",
};

/**
 * One-line description of a Kafka failure that names the brokers and, when known, the fix. `security`
 * (the endpoint's TLS and SASL settings) lets TLS, login and permission failures name the parameter to fix.
 */
export function describeKafkaError(
  e: unknown,
  brokers: string[],
  topic: string,
  security?: KafkaSecurity,
): string {
  const where = `Kafka at ${brokers.join(",")}`;
  const type = kafkaErrorType(e);
  if (type === "UNKNOWN_TOPIC_OR_PARTITION") {
    return `topic "${topic}" does not exist on ${where}: create it first (e.g. kafka-topics.sh --create)`;
  }
  if (type !== undefined && type in AUTHORIZATION) {
    return `${where}: ${principalOf(security)} ${AUTHORIZATION[type]}, topic "${topic}" (${type}): ` +
      `grant it with kafka-acls.sh, or use a principal that has it`;
  }
  for (const err of errorsOf(e)) {
    const tls = fatalTlsReason(err as unknown as Error, security?.tls, security?.flag);
    if (tls !== undefined) return `${where}: ${tls}`;
  }
  const sasl = security?.sasl;
  if (sasl && [...errorsOf(e)].some((err) => err.code === "PLT_KFK_AUTHENTICATION")) {
    // The broker's own words (e.g. "invalid credentials with SASL mechanism SCRAM-SHA-512"), when it gave any.
    const said = [...errorsOf(e)].map((err) => (err.response as { errorMessage?: unknown })?.errorMessage)
      .find((m) => typeof m === "string" && m !== "");
    return `${where}: SASL ${sasl.mechanism} login as ${sasl.username} refused (${
      said ?? innermostMessage(e)
    }): ` +
      `check ${
        security!.flag
      } username= and the password (${KAFKA_PASSWORD_ENV} or password-file=), and that ` +
      `the listener offers sasl=${sasl.mechanism.toLowerCase()}` +
      (security!.tls ? "" : " without TLS (else add tls=true)");
  }
  const message = innermostMessage(e);
  if (type === undefined && [...errorsOf(e)].some((err) => err.code === "PLT_KFK_NETWORK")) {
    const cause = [...errorsOf(e)].map((err) => String((err as { code?: unknown }).code ?? ""))
      .find((code) => /^E[A-Z]+$/.test(code));
    return `cannot reach ${where}: ${message}${cause ? ` (${cause})` : ""}`;
  }
  return `${where}, topic "${topic}": ${message}`;
}

/**
 * A TLS 1.3 broker refuses a missing or untrusted client certificate only after the handshake, with an
 * alert the library turns into a bare "Connection closed" (and retries for ever). Each new connection's own
 * error is watched here instead, and a TLS failure no retry can heal is handed to `fatal`.
 */
export function watchTlsAlerts(
  client: Pick<Base, "on">,
  security: KafkaSecurity | undefined,
  brokers: string[],
  fatal: (reason: string) => void,
): void {
  if (!security?.tls) return;
  client.on(
    "client:broker:connect",
    ({ connection }: { connection: { on(e: "error", f: (e: Error) => void): void } }) => {
      connection.on("error", (err: Error) => {
        for (const inner of errorsOf(err)) {
          const reason = fatalTlsReason(inner as unknown as Error, security.tls, security.flag);
          if (reason !== undefined) return fatal(`Kafka at ${brokers.join(",")}: ${reason}`);
        }
      });
    },
  );
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

/**
 * At start, before any event flows: `topic` must exist or be creatable. Unknown with auto-creation
 * off (or not authorised) is fatal; an unreachable broker is waited out by `withRetry`.
 */
export async function ensureTopic(
  client: Pick<Base, "metadata">,
  withRetry: <T>(attempt: () => Promise<T>) => Promise<T>,
  brokers: string[],
  topic: string,
  who: string,
): Promise<void> {
  const lookup = (autocreateTopics: boolean) =>
    withRetry(async () => {
      try {
        await client.metadata({ topics: [topic], autocreateTopics, forceUpdate: true, retries: 0 });
        return true;
      } catch (e) {
        const type = kafkaErrorType(e);
        if (type === "UNKNOWN_TOPIC_OR_PARTITION") return false;
        // Just created: it has no leader for a moment. Sends wait for it.
        if (autocreateTopics && type === "LEADER_NOT_AVAILABLE") return true;
        throw e;
      }
    });
  if (await lookup(false)) return;
  // Asking with auto-creation creates it where the broker allows, but the answer says unknown until
  // the controller has made it (a few ms): look again for a while before calling it missing.
  for (let i = 0; i < 15; i++) {
    if (await lookup(true)) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new RuntimeError(
    `${who}: topic "${topic}" does not exist on Kafka at ${brokers.join(",")} and the broker does ` +
      `not create topics (auto.create.topics.enable=false): create it first (e.g. kafka-topics.sh --create)`,
  );
}
