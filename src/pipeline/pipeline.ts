import type { DecodedMeta, Decoder } from "../codecs/decoder.ts";
import { emptyMeta } from "../codecs/decoder.ts";
import { deadLetterRecord } from "../codecs/dead_letter.ts";
import type { PredictionEncoder } from "../codecs/prediction.ts";
import type { Model } from "../model/model.ts";
import type { ModelSwapper } from "../model/swap.ts";
import type { ShadowBatch } from "../model/shadow.ts";
import { Logger, rootLogger } from "../log.ts";
import { Batcher } from "./batcher.ts";
import type { Health } from "./health.ts";
import type { DeadLetterReason, Stats } from "./stats.ts";
import type { OutRecord, Refusal, Sink, Source, SourceEvent } from "./types.ts";

export interface PipelineOptions {
  source: Source;
  sink: Sink;
  /** Where undecodable events go; without it they are counted and logged once per kind. */
  deadLetter: Sink | undefined;
  model: Model;
  decoder: Decoder;
  encoder: PredictionEncoder;
  /**
   * Hot swap: when given, each batch is scored by the swapper's current model (taken once per batch) and
   * encoded by that model's encoder; `model` and `encoder` are then the first ones.
   */
  models?: ModelSwapper;
  /**
   * --shadow-model: offered each batch's rows and production scores right after scoring; it copies them and
   * returns at once (src/model/shadow.ts): the batch never waits for the shadow.
   */
  shadow?: { offer(batch: ShadowBatch): void };
  /** Drift watch (src/model/drift.ts): counts each batch's rows and scores into its window's bins. */
  drift?: { observe(input: Float32Array, width: number, rows: number, scores: Float32Array): void };
  batchSize: number;
  lingerMs: number;
  /** Batches between the batcher and a durable sink write; beyond it the source is paused. */
  maxInFlight: number;
  /** Stop after this many events were taken and acknowledged. */
  maxEvents: number | undefined;
  maxPayloadBytes: number;
  /** Payload bytes embedded in a dead-letter record (the rest is summarised by size and sha256). */
  deadLetterPayloadBytes?: number;
  stats: Stats;
  /** Per-batch observations for the metrics' histograms (--http); absent, nothing is measured. */
  observer?: BatchObserver;
  /** Dropped events (warn, once per kind) and batch summaries (debug); a function gets each message. */
  log?: Logger | ((message: string) => void);
  /** Where sources and sinks report fatal failures; the run stops at once on one. */
  health?: Health;
  /**
   * Exactly once: every `intervalMs` (and at the end) the pipeline stops taking events, waits until
   * every batch in flight is durable and acknowledged, then calls `commit` (which commits the
   * transaction holding those records with the acknowledged offsets).
   */
  transaction?: { intervalMs: number; commit(): Promise<"committed" | "rewound"> };
}

/** What the pipeline reports for histograms: per batch, and per event without allocating. */
export interface BatchObserver {
  batchSize(events: number): void;
  inferenceSeconds(seconds: number): void;
  /** Receipt → acknowledged (its records durable), per event. */
  eventLatencySeconds(seconds: number): void;
}

/** Default payload bytes kept in a dead-letter record (--dlq-payload-bytes). */
export const DEFAULT_DEAD_LETTER_PAYLOAD_BYTES = 64 * 1024;

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Source → decode → batch → model → encode → sink, acknowledging each event only once its
 * prediction (or dead-letter record) is durable.
 *
 * Inference runs one batch at a time into one reused input buffer; sink writes of successive
 * batches overlap (up to maxInFlight batches) and are issued in batch order, so per-key order holds.
 */
export class Pipeline {
  private readonly input: Float32Array;
  private readonly metas: DecodedMeta[];
  private readonly rowEvents: SourceEvent[];
  private inference: Promise<void> = Promise.resolve();
  private readonly inFlight = new Set<Promise<void>>();
  private capacityWaiter: (() => void) | undefined;
  private failure: Error | undefined;
  private readonly loggedDropKinds = new Set<string>();
  private readonly stop = new AbortController();
  /** Set while a transaction commits: no event is taken until it resolves. */
  private gate: Promise<void> | undefined;
  /** Set when a transaction was aborted and the source rewound (see PipelineOptions.transaction). */
  private rewound = false;
  private readonly log: Logger;
  /** Batch summaries at most once a second, only at --log-level debug (checked once, not per batch). */
  private readonly dispatched: { batches: number; events: number; since: number } | undefined;

  constructor(private readonly o: PipelineOptions) {
    this.log = typeof o.log === "function" ? Logger.messages(o.log) : o.log ?? rootLogger;
    this.dispatched = this.log.enabled("debug")
      ? { batches: 0, events: 0, since: performance.now() }
      : undefined;
    this.input = new Float32Array(o.batchSize * o.model.width);
    this.metas = Array.from({ length: o.batchSize }, emptyMeta);
    this.rowEvents = new Array(o.batchSize);
  }

  /**
   * Runs until the source ends, `signal` aborts, --max-events is reached, or a sink or source fails
   * for good (throws). At the end it flushes the open batch and waits for the batches in flight,
   * unless `abandon` aborts first (a shutdown deadline): their events then stay unacknowledged.
   */
  async run(signal: AbortSignal, abandon?: AbortSignal): Promise<void> {
    const { source, stats, maxEvents, maxInFlight } = this.o;
    const stop = this.stop;
    const onAbort = () => stop.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    // Stopped before it started (a signal, or another pipeline's failure, during setup).
    if (signal.aborted) stop.abort();
    this.o.health?.onFatal((err) => this.fail(err));
    const batcher = new Batcher<SourceEvent>(
      this.o.batchSize,
      this.o.lingerMs,
      (batch) => this.dispatch(batch),
    );
    const committing = this.o.transaction
      ? this.commitEvery(this.o.transaction, batcher, stop.signal)
      : undefined;
    try {
      for await (const chunk of source.events(stop.signal)) {
        stats.firstEventAt ??= performance.now();
        for (let i = 0; i < chunk.length && stats.events !== maxEvents; i++) {
          // The in-flight bound holds inside a chunk too (a Kafka fetch or one socket read may carry
          // thousands of events): at the limit, wait before taking the next event.
          if (this.inFlight.size >= maxInFlight) await this.capacity();
          // A transaction is committing: nothing may enter the batcher until it is done (checked after
          // the capacity wait, which ends while the commit drains the batches in flight).
          while (this.gate) await this.gate;
          if (this.rewound) {
            // The source reads again from its committed offsets: the rest of this chunk comes again.
            this.rewound = false;
            break;
          }
          if (this.failure || stop.signal.aborted) break;
          stats.events++;
          batcher.add(chunk[i]);
        }
        if (stats.events === maxEvents || this.failure || stop.signal.aborted) break;
        if (this.inFlight.size >= maxInFlight) await this.capacity();
        if (this.failure) break;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      stop.abort();
      // Flush what the batcher holds unless a part failed: then nothing more can become durable.
      if (this.failure) batcher.discard();
      else batcher.flush();
      await committing;
      if (!this.failure) await this.drain(abandon);
      // The last transaction: only when everything was acknowledged (not after a shutdown deadline).
      if (this.o.transaction && !this.failure && this.inFlight.size === 0) {
        await this.o.transaction.commit().catch((err) => this.fail(err));
      }
    }
    if (this.failure) throw this.failure;
  }

  /** Commits a transaction every `intervalMs` until `stopped`: see PipelineOptions.transaction. */
  private async commitEvery(
    transaction: NonNullable<PipelineOptions["transaction"]>,
    batcher: Batcher<SourceEvent>,
    stopped: AbortSignal,
  ): Promise<void> {
    while (!stopped.aborted && !this.failure) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, transaction.intervalMs);
        stopped.addEventListener("abort", done, { once: true });
        function done() {
          clearTimeout(timer);
          stopped.removeEventListener("abort", done);
          resolve();
        }
      });
      if (stopped.aborted || this.failure) return;
      let open!: () => void;
      this.gate = new Promise((resolve) => open = resolve);
      try {
        batcher.flush();
        await this.drain(undefined);
        if (!this.failure && await transaction.commit() === "rewound") this.rewound = true;
      } catch (err) {
        this.fail(err instanceof Error ? err : new Error(String(err)));
      } finally {
        this.gate = undefined;
        open();
      }
    }
  }

  /** Waits for the batches in flight, or until `abandon` aborts. */
  private async drain(abandon: AbortSignal | undefined): Promise<void> {
    const abandoned = new Promise<void>((resolve) => {
      if (abandon?.aborted) resolve();
      abandon?.addEventListener("abort", () => resolve(), { once: true });
    });
    while (this.inFlight.size > 0 && !abandon?.aborted && !this.failure) {
      await Promise.race([Promise.allSettled([...this.inFlight]), abandoned]);
    }
  }

  /** Stops the run: no more events are taken, nothing more is acknowledged. */
  private fail(err: Error): void {
    this.failure ??= err;
    this.stop.abort();
    const waiter = this.capacityWaiter;
    this.capacityWaiter = undefined;
    waiter?.();
  }

  private capacity(): Promise<void> {
    if (this.failure) return Promise.resolve();
    return new Promise((resolve) => this.capacityWaiter = resolve);
  }

  private dispatch(batch: SourceEvent[]): void {
    const { stats, source, maxInFlight } = this.o;
    stats.batches++;
    this.o.observer?.batchSize(batch.length);
    if (this.dispatched) this.noteDispatch(this.dispatched, batch.length);
    const done = this.inference.then(() => this.process(batch));
    // The next batch's inference waits for this one's (shared input buffer); not for its sink write.
    this.inference = done.then(() => undefined, () => undefined);
    const tracked: Promise<void> = done.then((batchResult) => batchResult.durable).catch((err) => {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    }).finally(() => {
      this.inFlight.delete(tracked);
      stats.inFlight = this.inFlight.size;
      if (this.inFlight.size < maxInFlight) {
        source.resume();
        stats.sourcePaused = false;
        const waiter = this.capacityWaiter;
        this.capacityWaiter = undefined;
        waiter?.();
      }
    });
    this.inFlight.add(tracked);
    stats.inFlight = this.inFlight.size;
    stats.notePeaks();
    if (this.inFlight.size >= maxInFlight) {
      source.pause();
      stats.sourcePaused = true;
    }
  }

  /**
   * Decodes and scores one batch. Resolves once inference is done, with `durable`: a promise that
   * settles when the batch's records are durable and its events are acknowledged. (Wrapped in an
   * object because an async function would otherwise wait for the promise it returns.)
   */
  private async process(batch: SourceEvent[]): Promise<{ durable: Promise<void> }> {
    // A sink failed: leave these events unacknowledged, the source redelivers them.
    if (this.failure) return { durable: Promise.resolve() };
    const { model, decoder, encoder, stats, maxPayloadBytes } = this.o;
    const width = model.width;
    const dead: OutRecord[] = [];
    const now = Date.now();
    let rows = 0;
    for (let i = 0; i < batch.length; i++) {
      const event = batch[i];
      let reason: string | undefined;
      const size = event.oversize?.bytes ?? event.payload.length;
      let kind: DeadLetterReason = "undecodable";
      if (size > maxPayloadBytes) {
        reason = `payload of ${size} bytes exceeds --max-payload-bytes ${maxPayloadBytes}`;
        kind = "payload_too_large";
      } else {
        let text: string | undefined;
        try {
          text = strictUtf8.decode(event.payload);
        } catch {
          reason = "payload is not valid UTF-8";
          kind = "invalid_utf8";
        }
        if (text !== undefined) reason = decoder.decode(text, this.input, rows * width, this.metas[rows]);
      }
      if (reason === undefined) this.rowEvents[rows++] = event;
      else this.reject(dead, event, reason, kind, now);
    }

    const records: OutRecord[] = new Array(rows);
    // The event of each record, for a prediction the sink refuses (it is dead-lettered instead).
    const recordEvents: SourceEvent[] = new Array(rows);
    let kept = 0;
    if (rows > 0) {
      // One model for the whole batch: a swap takes effect at the next batch.
      const active = this.o.models?.acquire();
      const scorer = active?.model ?? model;
      const namer = active?.encoder ?? encoder;
      try {
        const started = this.o.observer ? performance.now() : 0;
        const scores = await scorer.score(this.input, rows);
        this.o.observer?.inferenceSeconds((performance.now() - started) / 1000);
        const ts = Date.now();
        const threshold = scorer.threshold;
        this.o.shadow?.offer({
          input: this.input,
          rows,
          productionScores: scores,
          productionThreshold: threshold,
          metas: this.metas,
          events: this.rowEvents,
        });
        this.o.drift?.observe(this.input, width, rows, scores);
        for (let r = 0; r < rows; r++) {
          const event = this.rowEvents[r];
          const score = scores[r];
          if (!Number.isFinite(score)) {
            this.reject(dead, event, `model score is ${score} (non-finite input?)`, "non_finite_score", ts);
            continue;
          }
          if (threshold !== undefined && score > threshold) stats.anomalies++;
          recordEvents[kept] = event;
          records[kept++] = namer.encode(this.metas[r], event.key, event.origin, score, ts);
        }
      } finally {
        if (active) this.o.models!.release(active);
      }
      records.length = kept;
    }
    stats.predictions += kept;

    const writes: Promise<unknown>[] = [];
    if (kept > 0) {
      writes.push(this.o.sink.send(records).then((refused) => this.redirectRefused(refused, recordEvents)));
    }
    if (dead.length > 0 && this.o.deadLetter) {
      writes.push(this.o.deadLetter.send(dead).then((refused) => this.dropRefused(refused, dead)));
    }
    const durable = Promise.all(writes).then(() => {
      for (let i = 0; i < batch.length; i++) batch[i].ack();
      stats.acked += batch.length;
      const observer = this.o.observer;
      if (observer) {
        const ackedAt = Date.now();
        for (let i = 0; i < batch.length; i++) {
          observer.eventLatencySeconds((ackedAt - batch[i].receivedAt) / 1000);
        }
      }
    });
    return { durable };
  }

  /**
   * Predictions the sink refused for good (e.g. a record over the topic's size limit): a poison pill
   * must not stop the stream, so each becomes a dead letter of its event, with the sink's reason.
   */
  private async redirectRefused(refused: Refusal[] | void, events: SourceEvent[]): Promise<void> {
    if (!refused || refused.length === 0) return;
    const { stats } = this.o;
    stats.predictions -= refused.length;
    stats.predictionsRefused += refused.length;
    const dead: OutRecord[] = [];
    const ts = Date.now();
    for (const { index, reason } of refused) {
      this.reject(dead, events[index], `the sink refused the prediction: ${reason}`, "sink_refused", ts);
    }
    if (dead.length > 0 && this.o.deadLetter) {
      this.dropRefused(await this.o.deadLetter.send(dead), dead);
    }
  }

  /** Dead letters the dead-letter sink refused: nothing else can take them; logged and counted. */
  private dropRefused(refused: Refusal[] | void, records: OutRecord[]): void {
    if (!refused || refused.length === 0) return;
    this.o.stats.dropped += refused.length;
    for (const { index, reason } of refused) {
      this.logOncePerKind(
        `dropped`,
        `dropping a dead-letter record the dead-letter sink refused (${reason}); ` +
          `source ${records[index].headers["edgeinfer-source"] ?? "unknown"}; further ones are only counted`,
      );
    }
  }

  /** Counts an unusable event and queues its dead-letter record (or logs it once per kind without a DLQ). */
  private reject(
    dead: OutRecord[],
    event: SourceEvent,
    reason: string,
    kind: DeadLetterReason,
    ts: number,
  ): void {
    this.o.stats.deadLettered++;
    this.o.stats.deadLetterReasons[kind]++;
    if (!this.o.deadLetter) {
      // Without a DLQ the event is still acknowledged (it can never succeed); say so once per kind.
      this.logOncePerKind(
        reason.split(":")[0].replace(/'[^']*'|\d+/g, "…"),
        `dropping undecodable event (no --dlq set): ${reason}; further ones like it are only counted`,
      );
      return;
    }
    dead.push(
      deadLetterRecord(event.payload, event.key, event.origin, reason, ts, {
        maxPayloadBytes: this.o.deadLetterPayloadBytes ?? DEFAULT_DEAD_LETTER_PAYLOAD_BYTES,
        original: event.oversize,
      }),
    );
  }

  private logOncePerKind(kind: string, message: string): void {
    if (this.loggedDropKinds.has(kind)) return;
    this.loggedDropKinds.add(kind);
    this.log.warn(message);
  }

  /** --log-level debug: how batches are filling and how many await the sink, at most once a second. */
  private noteDispatch(d: NonNullable<Pipeline["dispatched"]>, size: number): void {
    d.batches++;
    d.events += size;
    const now = performance.now();
    if (now - d.since < 1000) return;
    this.log.debug(
      `batches: ${d.batches} dispatched in ${((now - d.since) / 1000).toFixed(1)} s, ` +
        `${(d.events / d.batches).toFixed(1)} events each (batch size ${this.o.batchSize}); ` +
        `${this.inFlight.size} in flight (max ${this.o.maxInFlight})`,
      { batches: d.batches, events: d.events, inFlight: this.inFlight.size },
    );
    d.batches = 0;
    d.events = 0;
    d.since = now;
  }
}
