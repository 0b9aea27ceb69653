/**
 * Kafka source: a consumer group member on @platformatic/kafka. The messages of one fetch response
 * become one chunk of events. Offsets are committed per partition up to the highest contiguous
 * acknowledged offset, every COMMIT_INTERVAL_MS and at close; nothing else commits (autocommit off).
 *
 * One MessagesStream per group generation: after every (re)join the library restarts every assigned
 * partition from its committed offset. Rather than sorting stale messages (fetched for the previous
 * generation, still buffered or in flight) from fresh ones in one stream, the source opens a new stream
 * and drops the old one with everything it still holds. Events in flight at that moment are delivered
 * again (at least once); their late acks are ignored (OffsetTracker tickets).
 *
 * Failures: a retriable one (broker unreachable at start or gone later, leader moving, timeout) ends
 * the stream; the source reports it to `health`, waits its backoff and opens a new one, for ever (or
 * until --give-up-after). A fatal one (unknown topic, not authorised) ends the run at once.
 *
 * Memory: the events held (fetched, not yet acknowledged) and their bytes are bounded: once either
 * limit is reached the stream is paused (the library fetches no more). One fetch response (`maxBytes`,
 * a quarter of the byte bound, at most 1 MiB) may come on top.
 */
import {
  Consumer,
  type Message,
  type MessagesStream,
  MessagesStreamFallbackModes,
  MessagesStreamModes,
} from "@platformatic/kafka";
import { RuntimeError } from "../errors.ts";
import { type Logger, rootLogger } from "../log.ts";
import { Backoff, Health } from "../pipeline/health.ts";
import { cutOversize, HeldBudget } from "../pipeline/held.ts";
import type { Origin, Source, SourceEvent } from "../pipeline/types.ts";
import {
  baseClientOptions,
  describeKafkaError,
  isNetworkKafkaError,
  isRetriableKafkaError,
  isSecurityFailure,
  retryKafka,
  watchTlsAlerts,
} from "./client.ts";
import { describeSecurity, type KafkaSecurity } from "./security.ts";
import { OffsetTracker, type PartitionOffset } from "./offset_tracker.ts";

export interface KafkaSourceOptions {
  /** Bootstrap brokers as host:port. Example: `["127.0.0.1:9092"]`. */
  brokers: string[];
  /** Topic to consume; must exist (otherwise events() fails at once). Example: `"cars.telemetry"`. */
  topic: string;
  /** Consumer group; instances with the same group share the partitions. Example: `"edgeinfer"`. */
  groupId: string;
  /** Client id shown in broker logs and metrics. Example: `"edgeinfer"`. */
  clientId: string;
  /** Where a group without a committed offset starts: earliest (true) or latest (false). */
  fromBeginning: boolean;
  /** Events held (fetched, not acknowledged) at which fetching stops. Default 1280. */
  maxHeldEvents?: number;
  /** Payload bytes held at which fetching stops. Default 64 MiB. */
  maxHeldBytes?: number;
  /** Payloads larger than this are cut to `keepOversizeBytes` (they are dead-lettered). */
  maxPayloadBytes?: number;
  keepOversizeBytes?: number;
  /** Where outages and fatal failures are reported. */
  health?: Health;
  /** Where its own lines go; default: the root logger. */
  logger?: Logger;
  /** A request unanswered this long closes its connection (DEFAULT_REQUEST_TIMEOUT_MS). */
  requestTimeoutMs?: number;
  /** TLS and SASL (the URL's tls=, sasl=, …); plaintext without it. */
  security?: KafkaSecurity;
  /** The group session: a member silent this long is expelled and its partitions reassigned. */
  sessionTimeoutMs?: number;
  /**
   * Exactly once: the source commits nothing itself; the acknowledged offsets go into the sink's
   * Kafka transaction (takeTransactionOffsets), committed with the records they produced.
   */
  transactional?: boolean;
}

/** What a transaction needs to commit a consumer group's offsets (and fence a stale member). */
export interface GroupOffsets {
  groupId: string;
  generationId: number;
  memberId: string;
  coordinatorId: number;
  topic: string;
  offsets: PartitionOffset[];
}

export interface KafkaSource extends Source {
  /** Offsets acknowledged since the last call; undefined while the source has no group generation. */
  takeTransactionOffsets(): GroupOffsets | undefined;
  /**
   * Counts the streams opened (one per group generation, outage or rewind): when it changed, events
   * acknowledged since were forgotten and will be read again.
   */
  readonly streams: number;
  /** Forgets everything not committed and reads again from the committed offsets (a new stream). */
  rewind(): void;
}

type RawMessage = Message<Buffer, Buffer, Buffer, Buffer>;
type RawStream = MessagesStream<Buffer, Buffer, Buffer, Buffer>;

/** How often acknowledged offsets are committed (and at close). */
const COMMIT_INTERVAL_MS = 500;
/** Broker long-poll time for an empty fetch: bounds how soon an idle source sees a new event. */
const MAX_WAIT_MS = 250;

const EMPTY = new Uint8Array(0);
const utf8 = new TextDecoder();

/**
 * A message key as text. Keys are short and mostly ASCII (device ids): those are decoded here, which is
 * cheaper than a call into the runtime's decoder per event.
 */
function decodeKey(bytes: Uint8Array): string {
  if (bytes.length > 64) return utf8.decode(bytes);
  for (let i = 0; i < bytes.length; i++) if (bytes[i] > 0x7f) return utf8.decode(bytes);
  return String.fromCharCode.apply(null, bytes as unknown as number[]);
}

/** A fetched message. A class, so ack() is one shared method rather than a closure per event. */
class KafkaEvent implements SourceEvent {
  oversize?: { bytes: number; sha256: string };
  constructor(
    readonly payload: Uint8Array,
    readonly key: string | undefined,
    readonly receivedAt: number,
    readonly origin: Origin & { kind: "kafka" },
    private readonly tracker: OffsetTracker,
    private readonly ticket: number,
    private readonly release: (event: KafkaEvent) => void,
  ) {}

  ack(): void {
    this.tracker.ack(this.origin.partition, this.ticket);
    this.release(this);
  }
}

/**
 * @platformatic/kafka 2.12.1 answers a commit refused because the group is rebalancing (or this member's
 * generation is over) by calling the public `joinGroup({})` itself (Consumer#commit). When the rejoin that
 * the heartbeat started on seeing the same rebalance has already completed, that second JoinGroup starts
 * another rebalance; a heartbeat armed by the first join then fails in the middle of it and rejoins again,
 * and a group of two went on rebalancing every 3 s with one member scoring nothing (~1 run in 8 of
 * tests/integration/failover_kafka_test.ts). The heartbeat notices whatever the commit noticed and rejoins
 * by itself, so a commit never needs to: that call is refused here, the commit fails, and the next one
 * (COMMIT_INTERVAL_MS later) commits in the new generation. The library's other caller, consume(), passes
 * its options (topics), so it is told apart by the empty options object.
 */
class CommitDuringRebalance extends Error {
  constructor() {
    super("offset commit refused while the group rebalances; committed after the rejoin");
  }
}

function noRejoinFromCommit(consumer: Consumer<Buffer, Buffer, Buffer, Buffer>): void {
  const join = consumer.joinGroup.bind(consumer);
  // deno-lint-ignore no-explicit-any
  (consumer as any).joinGroup = (
    groupOptions: object | undefined,
    callback?: (error: Error | null) => void,
  ) => {
    if (
      groupOptions !== undefined && Object.keys(groupOptions).length === 0 && typeof callback === "function"
    ) {
      callback(new CommitDuringRebalance());
      return;
    }
    // deno-lint-ignore no-explicit-any
    return (join as any)(groupOptions, callback);
  };
}

/** The library's pause between its own retries of one request (its default). */
const LIBRARY_RETRY_DELAY_MS = 1000;

/** `session-timeout-ms=`'s default. */
export const DEFAULT_SESSION_TIMEOUT_MS = 10_000;

export function createKafkaSource(options: KafkaSourceOptions): KafkaSource {
  const { brokers, topic, groupId, fromBeginning } = options;
  const maxHeldEvents = options.maxHeldEvents ?? 1280;
  const maxHeldBytes = options.maxHeldBytes ?? 64 * 1024 * 1024;
  const log = options.logger ?? rootLogger;
  const health = options.health ?? new Health(undefined, log);
  const part = `Kafka source ${brokers.join(",")}`;
  const backoff = new Backoff(health.retry);
  const sessionTimeoutMs = options.sessionTimeoutMs ?? DEFAULT_SESSION_TIMEOUT_MS;
  const consumer = new Consumer({
    ...baseClientOptions(brokers, options.clientId, options.requestTimeoutMs, options.security),
    groupId,
    autocommit: false,
    // One fetch response comes on top of what is held: keep it a fraction of the byte bound. The
    // library turns a whole response into message objects at once: 1 MiB (~3,000 car events) is as
    // fast as 10 MiB here and keeps the heap small.
    maxBytes: Math.max(64 << 10, Math.min(1 << 20, Math.floor(maxHeldBytes / 4))),
    maxWaitTime: MAX_WAIT_MS,
    // A member that vanished (crash, broker restart, dead link) keeps its partitions until its session
    // expires: the takeover time of a group. 10 s heals faster than the library's 60 s (Kafka's own default
    // is 45 s). Heartbeats run on their own timer, three per session.
    sessionTimeout: sessionTimeoutMs,
    heartbeatInterval: Math.min(3000, Math.floor(sessionTimeoutMs / 3)),
    // The library retries a fetch, metadata or heartbeat request by itself (3 times, each one waiting
    // up to the request timeout) before the stream reports an error: ~13 request timeouts. Say at once
    // that the link is down, so a dead link shows within one request timeout (linkUp() clears it). A
    // refused login or certificate it would retry for ever (isSecurityFailure): that ends the run.
    retryDelay: (_client: unknown, _operation: string, _attempt: number, _retries: number, error: Error) => {
      if (!stopping && isSecurityFailure(error)) refused(error);
      else if (!stopping && isNetworkKafkaError(error)) {
        linkDown = true;
        health.waiting(part, describeKafkaError(error, brokers, topic, options.security));
      }
      return LIBRARY_RETRY_DELAY_MS;
    },
    rebalanceTimeout: 30_000,
  });
  noRejoinFromCommit(consumer);
  watchTlsAlerts(
    consumer,
    options.security,
    brokers,
    (reason) => refused(new RuntimeError(`Kafka source: ${reason}`)),
  );
  /** A request failed on the network (see retryDelay) and nothing has come through since. */
  let linkDown = false;
  const linkUp = () => {
    if (!linkDown || stopping) return;
    linkDown = false;
    health.recovered(part);
  };
  // Heartbeats go out every few seconds even on an idle topic: the first one answered means the link is back.
  consumer.on("consumer:heartbeat:end", linkUp);
  // A rejoin the library started by itself (its heartbeat was told to) failed for good: it emits 'error'
  // on the consumer, which would end the process without a listener, and schedules no more heartbeats.
  // Report it and join again after the backoff (a join's options must not be empty: noRejoinFromCommit).
  consumer.on("error", (e: unknown) => {
    if (stopping) return;
    if (!isRetriableKafkaError(e)) return fail(e);
    health.waiting(part, describeKafkaError(e, brokers, topic, options.security));
    setTimeout(() => {
      if (!stopping) consumer.joinGroup({ sessionTimeout: sessionTimeoutMs }).catch(() => {});
    }, backoff.next());
  });
  const maxPayloadBytes = options.maxPayloadBytes ?? Infinity;
  const keepOversizeBytes = Math.min(options.keepOversizeBytes ?? 64 * 1024, maxPayloadBytes);
  const held = new HeldBudget(maxHeldEvents, maxHeldBytes, () => {
    if (!stopping) stream?.resume();
  });
  const tracker = new OffsetTracker();
  /** Bumped with every new stream: a timer or commit of an older one sees that it is stale. */
  let generation = 0;
  const release = (event: KafkaEvent) => held.release(event.payload.length);
  const queue: SourceEvent[][] = [];
  let chunk: SourceEvent[] = []; // events of the current fetch response, queued at the next microtask
  let chunkScheduled = false;
  let wakeIterator: (() => void) | undefined;
  let stream: RawStream | undefined; // the current generation's stream
  let reopening: Promise<void> | undefined;
  let failure: Error | undefined;
  let iterated = false;
  let stopping = false; // aborted or closing: deliver nothing more
  let paused = false;
  let closed = false;
  let commitTimer: ReturnType<typeof setInterval> | undefined;
  let commitInFlight: Promise<void> | undefined;
  let recommitAll = false; // the last commit failed: next time, commit every partition
  const leaderEpochs: number[] = []; // by partition: the last message's, for commits

  const wake = () => {
    wakeIterator?.();
    wakeIterator = undefined;
  };

  const fail = (e: unknown) => {
    failure ??= health.fatalError ??
      (e instanceof RuntimeError
        ? e
        : new RuntimeError(`Kafka source: ${describeKafkaError(e, brokers, topic, options.security)}`));
    health.fatal(failure);
    wake();
  };

  /**
   * A login or certificate the broker refuses: fatal, and the client is closed at once to end the library's
   * retries, so the start (which waits for them) sees the failure. Nothing was fetched on a connection that
   * never logged in: no offsets to commit are lost.
   */
  const refused = (e: unknown) => {
    if (stopping) return;
    fail(e);
    void consumer.close(true).catch(() => {});
  };

  const queueChunk = () => {
    chunkScheduled = false;
    if (chunk.length === 0) return;
    queue.push(chunk);
    chunk = [];
    wake();
  };

  function onMessage(this: RawStream, m: RawMessage): void {
    if (this !== stream || stopping) return; // a previous generation's, or shutting down
    if (linkDown) linkUp();
    const partition = m.partition;
    const offset = Number(m.offset);
    const ticket = tracker.track(partition, offset);
    leaderEpochs[partition] = m.leaderEpoch;
    let payload: Uint8Array = m.value ?? EMPTY;
    let oversize: { bytes: number; sha256: string } | undefined;
    if (payload.length > maxPayloadBytes) {
      ({ head: payload, oversize } = cutOversize(payload, keepOversizeBytes));
    }
    const key = m.key == null ? undefined : decodeKey(m.key);
    const origin = { kind: "kafka" as const, topic, partition, offset: String(offset) };
    const event = new KafkaEvent(payload, key, Date.now(), origin, tracker, ticket, release);
    if (oversize) event.oversize = oversize;
    held.hold(payload.length);
    chunk.push(event);
    if (!chunkScheduled) {
      chunkScheduled = true;
      queueMicrotask(queueChunk); // the rest of this fetch response arrives synchronously
    }
    // The memory bound: fetch no more until acks bring the held events and bytes under the limits.
    if (held.full) this.pause();
  }

  /** Opens the stream of the current generation; the previous one, if any, is dropped. */
  async function openStream(): Promise<void> {
    const previous = stream;
    stream = undefined;
    // What the previous generation fetched and did not hand out will come again: not held any more.
    for (const c of queue) for (const event of c) release(event as KafkaEvent);
    for (const event of chunk) release(event as KafkaEvent);
    queue.length = 0;
    chunk = [];
    tracker.forgetAll();
    generation++;
    if (previous !== undefined) {
      previous.removeAllListeners("data");
      previous.on("error", () => {});
      void previous.close().catch(() => {});
    }
    const opened = await retryKafka(
      () =>
        consumer.consume({
          topics: [topic],
          mode: MessagesStreamModes.COMMITTED,
          fallbackMode: fromBeginning
            ? MessagesStreamFallbackModes.EARLIEST
            : MessagesStreamFallbackModes.LATEST,
        }),
      { part, health, backoff, brokers, topic, stopped: () => stopping, unknownTopicIsFatal: true },
    );
    if (stopping) {
      void opened.close().catch(() => {});
      return;
    }
    stream = opened;
    const mine = generation;
    opened.on("data", onMessage);
    opened.on("error", (e: unknown) => {
      if (stream !== opened || stopping) return;
      if (!isRetriableKafkaError(e, { unknownTopicIsFatal: true })) return fail(e);
      health.waiting(part, describeKafkaError(e, brokers, topic, options.security));
      setTimeout(() => {
        if (mine === generation && !stopping) reopen();
      }, backoff.next());
    });
    if (paused || held.full) opened.pause();
  }

  /** (Re)opens the stream, once at a time; a fatal failure ends the run. */
  function reopen(): void {
    if (reopening !== undefined || stopping) return;
    reopening = openStream()
      .then(() => {
        backoff.reset();
        health.recovered(part);
      })
      .catch((e) => {
        if (!stopping) fail(e);
      })
      .finally(() => reopening = undefined);
  }

  // Every (re)join: a new generation, and a new stream that starts from the committed offsets.
  consumer.on("consumer:group:join", () => {
    log.debug(`kafka: joined group ${groupId} on topic ${topic} (a new generation)`);
    if (stream !== undefined) reopen();
  });

  async function commit(offsets: PartitionOffset[]): Promise<void> {
    await consumer.commit({
      offsets: offsets.map(({ partition, offset }) => ({
        topic,
        partition,
        offset: BigInt(offset),
        leaderEpoch: leaderEpochs[partition] ?? -1,
      })),
    });
  }

  function commitAcked(): void {
    if (commitInFlight !== undefined || stream === undefined) return;
    const offsets = recommitAll ? tracker.committableOffsets() : tracker.takeCommits();
    recommitAll = false;
    if (offsets.length === 0) return;
    const mine = generation;
    commitInFlight = commit(offsets)
      .then(() => health.recovered(`${part} (offset commits)`))
      .catch((e) => {
        if (mine !== generation) return; // the group moved on: those offsets are re-read anyway
        recommitAll = true;
        if (e instanceof CommitDuringRebalance) return; // not an outage: the rejoin is under way
        health.waiting(`${part} (offset commits)`, describeKafkaError(e, brokers, topic, options.security));
      })
      .finally(() => commitInFlight = undefined);
  }

  return {
    description: `kafka://${brokers.join(",")}/${topic}?group=${groupId}${
      describeSecurity(options.security)
    }`,

    get streams() {
      return generation;
    },

    rewind() {
      reopen();
    },

    takeTransactionOffsets(): GroupOffsets | undefined {
      const { memberId, generationId, coordinatorId } = consumer;
      if (stream === undefined || memberId == null || coordinatorId == null) return undefined;
      return { groupId, generationId, memberId, coordinatorId, topic, offsets: tracker.takeCommits() };
    },

    async *events(signal: AbortSignal): AsyncIterable<SourceEvent[]> {
      if (iterated) throw new Error("KafkaSource.events() can be iterated only once");
      iterated = true;
      const onAbort = () => {
        stopping = true;
        stream?.pause(); // close() commits and disconnects
        wake();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        // Starting while Kafka is down is an outage like any other: wait for it.
        try {
          await openStream();
          backoff.reset();
          health.recovered(part);
        } catch (e) {
          if (stopping) return;
          fail(e);
          throw failure;
        }
        if (!options.transactional) commitTimer = setInterval(commitAcked, COMMIT_INTERVAL_MS);
        while (!signal.aborted && !closed) {
          // While paused, chunks fetched before the pause stay queued too.
          const next = paused ? undefined : queue.shift();
          if (next !== undefined) {
            yield next;
          } else if (failure !== undefined) {
            throw failure;
          } else {
            await new Promise<void>((resolve) => wakeIterator = resolve);
          }
        }
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
    },

    // Backpressure holds fetched chunks back; once the held events or bytes reach their limit the stream
    // is paused too (onMessage), so the library fetches no more.
    pause() {
      paused = true;
    },

    resume() {
      if (!paused) return;
      paused = false;
      wake();
    },

    async close() {
      if (closed) return;
      closed = true;
      stopping = true;
      wake();
      clearInterval(commitTimer);
      await commitInFlight;
      await reopening;
      if (stream !== undefined && !options.transactional) {
        const offsets = tracker.committableOffsets();
        if (offsets.length > 0) {
          await commit(offsets).catch((e) =>
            log.warn(
              `kafka: final offset commit failed: ${describeKafkaError(e, brokers, topic, options.security)}`,
            )
          );
        }
      }
      if (stream !== undefined) {
        stream.removeAllListeners("data");
        await stream.close().catch(() => {});
      }
      await consumer.close(true).catch(() => {});
    },
  };
}
