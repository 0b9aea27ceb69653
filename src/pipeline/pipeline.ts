import type { DecodedMeta, Decoder } from "../codecs/decoder.ts";
import { emptyMeta } from "../codecs/decoder.ts";
import { deadLetterRecord } from "../codecs/dead_letter.ts";
import type { PredictionEncoder } from "../codecs/prediction.ts";
import type { Model } from "../model/model.ts";
import { Batcher } from "./batcher.ts";
import type { Stats } from "./stats.ts";
import type { OutRecord, Sink, Source, SourceEvent } from "./types.ts";

export interface PipelineOptions {
  source: Source;
  sink: Sink;
  /** Where undecodable events go; without it they are counted and logged once per kind. */
  deadLetter: Sink | undefined;
  model: Model;
  decoder: Decoder;
  encoder: PredictionEncoder;
  batchSize: number;
  lingerMs: number;
  /** Batches between the batcher and a durable sink write; beyond it the source is paused. */
  maxInFlight: number;
  /** Stop after this many events were taken and acknowledged. */
  maxEvents: number | undefined;
  maxPayloadBytes: number;
  stats: Stats;
  log: (message: string) => void;
}

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

  constructor(private readonly o: PipelineOptions) {
    this.input = new Float32Array(o.batchSize * o.model.width);
    this.metas = Array.from({ length: o.batchSize }, emptyMeta);
    this.rowEvents = new Array(o.batchSize);
  }

  /** Runs until the source ends, `signal` aborts, --max-events is reached, or a sink fails (throws). */
  async run(signal: AbortSignal): Promise<void> {
    const { source, stats, maxEvents } = this.o;
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    const batcher = new Batcher<SourceEvent>(
      this.o.batchSize,
      this.o.lingerMs,
      (batch) => this.dispatch(batch),
    );
    try {
      for await (const chunk of source.events(stop.signal)) {
        stats.firstEventAt ??= performance.now();
        for (let i = 0; i < chunk.length && stats.events !== maxEvents; i++) {
          stats.events++;
          batcher.add(chunk[i]);
        }
        if (stats.events === maxEvents || this.failure) break;
        if (this.inFlight.size >= this.o.maxInFlight) await this.capacity();
        if (this.failure) break;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      stop.abort();
      // Flush what the batcher holds unless a sink failed: then nothing more can become durable.
      if (this.failure) batcher.discard();
      else batcher.flush();
      while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    }
    if (this.failure) throw this.failure;
  }

  private capacity(): Promise<void> {
    return new Promise((resolve) => this.capacityWaiter = resolve);
  }

  private dispatch(batch: SourceEvent[]): void {
    const { stats, source, maxInFlight } = this.o;
    stats.batches++;
    const done = this.inference.then(() => this.process(batch));
    // The next batch's inference waits for this one's (shared input buffer); not for its sink write.
    this.inference = done.then(() => undefined, () => undefined);
    const tracked: Promise<void> = done.then((batchResult) => batchResult.durable).catch((err) => {
      this.failure ??= err instanceof Error ? err : new Error(String(err));
    }).finally(() => {
      this.inFlight.delete(tracked);
      stats.inFlight = this.inFlight.size;
      if (this.inFlight.size < maxInFlight) {
        source.resume();
        const waiter = this.capacityWaiter;
        this.capacityWaiter = undefined;
        waiter?.();
      }
    });
    this.inFlight.add(tracked);
    stats.inFlight = this.inFlight.size;
    if (this.inFlight.size >= maxInFlight) source.pause();
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
      if (event.payload.length > maxPayloadBytes) {
        reason = `payload of ${event.payload.length} bytes exceeds --max-payload-bytes ${maxPayloadBytes}`;
      } else {
        let text: string | undefined;
        try {
          text = strictUtf8.decode(event.payload);
        } catch {
          reason = "payload is not valid UTF-8";
        }
        if (text !== undefined) reason = decoder.decode(text, this.input, rows * width, this.metas[rows]);
      }
      if (reason === undefined) this.rowEvents[rows++] = event;
      else this.reject(dead, event, reason, now);
    }

    const records: OutRecord[] = new Array(rows);
    let kept = 0;
    if (rows > 0) {
      const scores = await model.score(this.input, rows);
      const ts = Date.now();
      const threshold = model.threshold;
      for (let r = 0; r < rows; r++) {
        const event = this.rowEvents[r];
        const score = scores[r];
        if (!Number.isFinite(score)) {
          this.reject(dead, event, `model score is ${score} (non-finite input?)`, ts);
          continue;
        }
        if (threshold !== undefined && score > threshold) stats.anomalies++;
        records[kept++] = encoder.encode(this.metas[r], event.key, event.origin, score, ts);
      }
      records.length = kept;
    }
    stats.predictions += kept;

    const writes: Promise<void>[] = [];
    if (kept > 0) writes.push(this.o.sink.send(records));
    if (dead.length > 0 && this.o.deadLetter) writes.push(this.o.deadLetter.send(dead));
    const durable = Promise.all(writes).then(() => {
      for (let i = 0; i < batch.length; i++) batch[i].ack();
      stats.acked += batch.length;
    });
    return { durable };
  }

  /** Counts an unusable event and queues its dead-letter record (or logs it once per kind without a DLQ). */
  private reject(dead: OutRecord[], event: SourceEvent, reason: string, ts: number): void {
    this.o.stats.deadLettered++;
    if (!this.o.deadLetter) {
      // Without a DLQ the event is still acknowledged (it can never succeed); say so once per kind.
      const kind = reason.split(":")[0].replace(/'[^']*'|\d+/g, "…");
      if (!this.loggedDropKinds.has(kind)) {
        this.loggedDropKinds.add(kind);
        this.o.log(
          `dropping undecodable event (no --dlq set): ${reason}; further ones like it are only counted`,
        );
      }
      return;
    }
    dead.push(deadLetterRecord(event.payload, event.key, event.origin, reason, ts));
  }
}
