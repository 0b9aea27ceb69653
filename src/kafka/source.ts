/**
 * Kafka source: a kafkajs consumer group member. Each fetched batch (one partition's messages from
 * one fetch) becomes one chunk of events. Offsets are committed per partition up to the highest
 * contiguous acknowledged offset, every COMMIT_INTERVAL_MS and at close; nothing else commits
 * (kafkajs runs with autoCommit off, which also disables its commits on rebalance, error and stop).
 *
 * Delivery is at least once: after a rebalance kafkajs restarts every assigned partition from its
 * committed offset, so events in flight at that moment are delivered again (their late acks are
 * ignored).
 *
 * Failures: a retriable one (broker unreachable at start or gone later, leader moving, timeout) is
 * retried for ever with capped backoff, reported to `health` (the status line shows it); a fatal one
 * (unknown topic, not authorised) ends the run at once, even when nothing flows.
 *
 * Memory: the events held (fetched, not yet acknowledged) and their bytes are bounded: once either
 * limit is reached, eachBatch waits (heartbeating) and kafkajs fetches no more. One fetch response
 * (kafkajs maxBytes) may come on top.
 */
import type { EachBatchPayload } from "kafkajs";
import { RuntimeError } from "../errors.ts";
import { createKafka, describeKafkaError, isRetriableKafkaError, retryKafka } from "./client.ts";
import { Backoff, Health } from "../pipeline/health.ts";
import { cutOversize, HeldBudget } from "../pipeline/held.ts";
import { logLine } from "../log.ts";
import { OffsetTracker, type PartitionOffset } from "./offset_tracker.ts";
import type { Origin, Source, SourceEvent } from "../pipeline/types.ts";

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
}

/** How often acknowledged offsets are committed (and at close). */
const COMMIT_INTERVAL_MS = 500;
/**
 * Broker long-poll time for an empty fetch. kafkajs also sleeps this long between fetches while
 * every partition is paused, so it bounds the latency of close(); kafkajs's default is 5 s.
 * 100 ms costs ~10 small fetches a second when idle.
 */
const MAX_WAIT_MS = 100;

const EMPTY = new Uint8Array(0);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const utf8 = new TextDecoder();

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

export function createKafkaSource(options: KafkaSourceOptions): Source {
  const { brokers, topic, groupId, fromBeginning } = options;
  const maxHeldEvents = options.maxHeldEvents ?? 1280;
  const maxHeldBytes = options.maxHeldBytes ?? 64 * 1024 * 1024;
  const consumer = createKafka(brokers, options.clientId).consumer({
    groupId,
    // One fetch response comes on top of what is held: keep it a fraction of the byte bound.
    maxBytes: Math.max(1 << 20, Math.min(10 << 20, Math.floor(maxHeldBytes / 4))),
    maxWaitTimeInMs: MAX_WAIT_MS,
    // kafkajs's default is 30 s. A member that vanished (crash, broker restart) blocks the group's
    // next rebalance until its session expires; 10 s heals faster, and heartbeats go out every 3 s
    // even while the pipeline is slow (see eachBatch).
    sessionTimeout: 10_000,
    // kafkajs calls this for a retriable crash (broker gone, retries exhausted); it waits our backoff,
    // then kafkajs starts the consumer again. A fatal cause (unknown topic) is not restarted.
    retry: {
      restartOnFailure: async (e) => {
        if (stopping || !running || !isRetriableKafkaError(e, { unknownTopicIsFatal: true })) return false;
        health.waiting(part, describeKafkaError(e, brokers, topic));
        await sleep(backoff.next());
        return !stopping && health.fatalError === undefined;
      },
    },
  });
  const health = options.health ?? new Health(undefined, logLine);
  const part = `Kafka source ${brokers.join(",")}`;
  const backoff = new Backoff(health.retry);
  const maxPayloadBytes = options.maxPayloadBytes ?? Infinity;
  const keepOversizeBytes = Math.min(options.keepOversizeBytes ?? 64 * 1024, maxPayloadBytes);
  const held = new HeldBudget(maxHeldEvents, maxHeldBytes, () => {
    wakeFetcher?.();
    wakeFetcher = undefined;
  });
  const release = (event: KafkaEvent) => held.release(event.payload.length);
  const tracker = new OffsetTracker();
  const queue: SourceEvent[][] = [];
  let wakeIterator: (() => void) | undefined; // events() waiting for a chunk
  let wakeFetcher: (() => void) | undefined; // eachBatch waiting for queue space
  let failure: Error | undefined;
  let iterated = false;
  let running = false; // consumer.run() was called and has not crashed
  let stopping = false; // aborted or closing: deliver nothing more
  let paused = false;
  let closed = false;
  let commitTimer: ReturnType<typeof setInterval> | undefined;
  let commitInFlight: Promise<void> | undefined;
  let recommitAll = false; // the last commit failed: next time, commit every partition
  let restarting = false; // kafkajs is restarting the consumer after a crash

  const wake = () => {
    wakeIterator?.();
    wakeIterator = undefined;
    wakeFetcher?.();
    wakeFetcher = undefined;
  };

  /** Stops kafkajs fetching (at shutdown). */
  const stopFetching = () => {
    if (!running) return; // applied when run() starts
    try {
      consumer.pause([{ topic }]);
    } catch {
      // No kafkajs group right now (crashed or restarting): GROUP_JOIN applies the pause again.
    }
  };

  async function eachBatch({ batch, heartbeat, isRunning }: EachBatchPayload): Promise<void> {
    // Not waiting for acks here is what keeps throughput: kafkajs resolves the batch's last offset
    // when this returns (eachBatchAutoResolve), which only moves its fetch position.
    if (stopping) return;
    const { partition, messages } = batch;
    const receivedAt = Date.now();
    const chunk = new Array<SourceEvent>(messages.length);
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i];
      const ticket = tracker.track(partition, m.offset);
      const origin = { kind: "kafka" as const, topic, partition, offset: m.offset };
      const key = m.key === null ? undefined : utf8.decode(m.key);
      let payload: Uint8Array = m.value ?? EMPTY;
      let oversize: { bytes: number; sha256: string } | undefined;
      if (payload.length > maxPayloadBytes) {
        ({ head: payload, oversize } = cutOversize(payload, keepOversizeBytes));
      }
      const event = new KafkaEvent(payload, key, receivedAt, origin, tracker, ticket, release);
      if (oversize) event.oversize = oversize;
      held.hold(payload.length);
      chunk[i] = event;
    }
    queue.push(chunk);
    wake();
    // The memory bound: fetch no more until acks bring the held events and bytes under the limits.
    while (held.full && !stopping && isRunning()) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        wakeFetcher = resolve;
        timer = setTimeout(resolve, 1000);
      });
      clearTimeout(timer);
      await heartbeat(); // stay in the group while the pipeline is slow
    }
  }

  async function commit(offsets: PartitionOffset[]): Promise<void> {
    await consumer.commitOffsets(offsets.map(({ partition, offset }) => ({ topic, partition, offset })));
  }

  function commitAcked(): void {
    if (commitInFlight !== undefined || !running || restarting) return;
    const offsets = recommitAll ? tracker.committableOffsets() : tracker.takeCommits();
    recommitAll = false;
    if (offsets.length === 0) return;
    commitInFlight = commit(offsets)
      .then(() => health.recovered(`${part} (offset commits)`))
      .catch((e) => {
        recommitAll = true;
        health.waiting(`${part} (offset commits)`, describeKafkaError(e, brokers, topic));
      })
      .finally(() => commitInFlight = undefined);
  }

  async function start(): Promise<void> {
    // Emitted after kafkajs disconnected and decided (restartOnFailure) whether to start again.
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      if (payload.restart) {
        restarting = true;
        return;
      }
      const wasRunning = running;
      running = false;
      if (stopping || !wasRunning) return;
      failure = new RuntimeError(
        `Kafka consumer stopped: ${describeKafkaError(payload.error, brokers, topic)}`,
      );
      health.fatal(failure);
      wake();
    });
    // Emitted synchronously after every (re)join, before the first fetch of the new generation:
    // kafkajs then restarts all assigned partitions from their committed offsets, so every
    // outstanding ticket is stale and chunks not yet handed to the pipeline will come again.
    consumer.on(consumer.events.GROUP_JOIN, () => {
      // Chunks not yet handed to the pipeline will come again: they are no longer held.
      for (const chunk of queue) for (const event of chunk) release(event as KafkaEvent);
      tracker.forgetAll();
      queue.length = 0;
      restarting = false;
      backoff.reset();
      health.recovered(part);
      // A restarted consumer is a new kafkajs group object: it forgot the pause.
      if (stopping) stopFetching();
      wake();
    });
    // Starting while Kafka is down is an outage like any other: wait for it.
    try {
      await retryKafka(async () => {
        await consumer.connect();
        await consumer.subscribe({ topic, fromBeginning });
      }, { part, health, backoff, brokers, topic, stopped: () => stopping, unknownTopicIsFatal: true });
    } catch (e) {
      if (stopping) return;
      if (health.fatalError) throw health.fatalError;
      const err = new RuntimeError(`Kafka source: ${describeKafkaError(e, brokers, topic)}`);
      health.fatal(err);
      throw err;
    }
    await consumer.run({ autoCommit: false, eachBatchAutoResolve: true, eachBatch });
    if (failure === undefined) running = true;
    if (stopping) stopFetching();
    commitTimer = setInterval(commitAcked, COMMIT_INTERVAL_MS);
  }

  return {
    description: `kafka://${brokers.join(",")}/${topic}?group=${groupId}`,

    async *events(signal: AbortSignal): AsyncIterable<SourceEvent[]> {
      if (iterated) throw new Error("KafkaSource.events() can be iterated only once");
      iterated = true;
      const onAbort = () => {
        stopping = true;
        stopFetching(); // close() commits and disconnects
        wake();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        await start();
        while (!signal.aborted && !closed) {
          // While paused, chunks fetched before the pause stay queued too.
          const chunk = paused ? undefined : queue.shift();
          if (chunk !== undefined) {
            wakeFetcher?.();
            yield chunk;
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

    // Backpressure holds fetched chunks back; once the held events or bytes reach their limit,
    // eachBatch waits and kafkajs fetches no more. kafkajs's own pause() is not used for this: after a pause it
    // only looks again after a fetch wait (MAX_WAIT_MS), and the pipeline pauses and resumes many
    // times a second when the sink is the bottleneck (measured: 15k events/s with consumer.pause,
    // 35k without, Kafka → Kafka). It is used to stop fetching at shutdown.
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
      if (running) {
        const offsets = tracker.committableOffsets();
        if (offsets.length > 0) {
          await commit(offsets).catch((e) =>
            logLine(`kafka: final offset commit failed: ${describeKafkaError(e, brokers, topic)}`)
          );
        }
      }
      running = false;
      await consumer.disconnect();
    },
  };
}
