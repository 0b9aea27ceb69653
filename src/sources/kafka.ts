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
 * Failures: an unreachable broker at start fails events() after kafkajs's bounded retries (~6 s).
 * Once running, a crash (broker gone) restarts the consumer for up to RECOVERY_WINDOW_MS, then
 * fails events(); kafkajs alone would either give up at once or restart forever.
 */
import type { EachBatchPayload } from "kafkajs";
import { RuntimeError } from "../errors.ts";
import { createKafka, describeKafkaError } from "../kafka_client.ts";
import { logLine } from "../log.ts";
import { OffsetTracker, type PartitionOffset } from "../pipeline/offset_tracker.ts";
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
}

/** How often acknowledged offsets are committed (and at close). */
const COMMIT_INTERVAL_MS = 500;
/**
 * Broker long-poll time for an empty fetch. kafkajs also sleeps this long between fetches while
 * every partition is paused, so it bounds the latency of close(); kafkajs's default is 5 s.
 * 100 ms costs ~10 small fetches a second when idle.
 */
const MAX_WAIT_MS = 100;
/**
 * Chunks fetched but not yet taken by the iterator. Past this, eachBatch waits (heartbeating) for
 * the iterator, so memory stays bounded even if the pipeline neither pulls nor pauses.
 */
const MAX_QUEUED_CHUNKS = 4;
/** How long a running consumer keeps restarting after crashes before events() fails. */
const RECOVERY_WINDOW_MS = 30_000;

const EMPTY = new Uint8Array(0);
const utf8 = new TextDecoder();

/** A fetched message. A class, so ack() is one shared method rather than a closure per event. */
class KafkaEvent implements SourceEvent {
  constructor(
    readonly payload: Uint8Array,
    readonly key: string | undefined,
    readonly receivedAt: number,
    readonly origin: Origin & { kind: "kafka" },
    private readonly tracker: OffsetTracker,
    private readonly ticket: number,
  ) {}

  ack(): void {
    this.tracker.ack(this.origin.partition, this.ticket);
  }
}

export function createKafkaSource(options: KafkaSourceOptions): Source {
  const { brokers, topic, groupId, fromBeginning } = options;
  const consumer = createKafka(brokers, options.clientId).consumer({
    groupId,
    maxWaitTimeInMs: MAX_WAIT_MS,
    // kafkajs's default is 30 s. A member that vanished (crash, broker restart) blocks the group's
    // next rebalance until its session expires; 10 s heals faster, and heartbeats go out every 3 s
    // even while the pipeline is slow (see eachBatch).
    sessionTimeout: 10_000,
    retry: {
      restartOnFailure: (e) => {
        crashedSince ??= Date.now();
        const restart = !stopping && running && Date.now() - crashedSince < RECOVERY_WINDOW_MS;
        if (restart) logLine(`kafka: consumer restarting after: ${describeKafkaError(e, brokers, topic)}`);
        return Promise.resolve(restart);
      },
    },
  });
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
  let crashedSince: number | undefined; // first crash since the last successful group join
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
      chunk[i] = new KafkaEvent(m.value ?? EMPTY, key, receivedAt, origin, tracker, ticket);
    }
    queue.push(chunk);
    wake();
    while (queue.length >= MAX_QUEUED_CHUNKS && !stopping && isRunning()) {
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
      .catch((e) => {
        recommitAll = true;
        logLine(`kafka: committing offsets failed, will retry: ${describeKafkaError(e, brokers, topic)}`);
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
      running = false;
      failure = new RuntimeError(
        `Kafka consumer stopped: ${describeKafkaError(payload.error, brokers, topic)}`,
      );
      wake();
    });
    // Emitted synchronously after every (re)join, before the first fetch of the new generation:
    // kafkajs then restarts all assigned partitions from their committed offsets, so every
    // outstanding ticket is stale and chunks not yet handed to the pipeline will come again.
    consumer.on(consumer.events.GROUP_JOIN, () => {
      tracker.forgetAll();
      queue.length = 0;
      crashedSince = undefined;
      restarting = false;
      // A restarted consumer is a new kafkajs group object: it forgot the pause.
      if (stopping) stopFetching();
      wake();
    });
    try {
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning });
    } catch (e) {
      throw new RuntimeError(`Kafka source: ${describeKafkaError(e, brokers, topic)}`);
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

    // Backpressure holds fetched chunks back; once MAX_QUEUED_CHUNKS are queued, eachBatch waits
    // and kafkajs fetches no more. kafkajs's own pause() is not used for this: after a pause it
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
