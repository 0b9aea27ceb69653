/**
 * Shadow model (`--shadow-model`): a candidate model scores every batch beside the production model, on a
 * copy of the batch's input rows, without the production path ever waiting for it. Its predictions may go
 * to a sink of their own (best effort), and its agreement with the production model is accumulated: the
 * evidence an operator needs before promoting it. A shadow that falls behind skips batches (counted); one
 * that fails (its model throws, its sink fails for good) is dropped with one logged line.
 */
import { type DecodedMeta, type Decoder, emptyMeta } from "../codecs/decoder.ts";
import type { PredictionEncoder } from "../codecs/prediction.ts";
import type { Logger } from "../log.ts";
import type { OutRecord, Sink, SourceEvent } from "../pipeline/types.ts";
import type { Model } from "./model.ts";

/** Shadow batches scored or awaiting their sink at once; beyond it, batches are skipped. */
export const DEFAULT_SHADOW_MAX_PENDING = 2;

/**
 * Agreement between production and shadow scores, accumulated over every compared event. The correlation
 * comes from streaming sums in float64 (n, Σx, Σy, Σx², Σy², Σxy), so nothing per event is kept.
 */
export class ShadowAgreement {
  compared = 0;
  bothAnomalous = 0;
  /** Anomalous for the production model only. */
  productionOnly = 0;
  /** Anomalous for the shadow only. */
  shadowOnly = 0;
  private sumX = 0;
  private sumY = 0;
  private sumXX = 0;
  private sumYY = 0;
  private sumXY = 0;
  private sumAbsDiff = 0;

  /**
   * Adds `rows` pairs of scores (production `x`, shadow `y`). An event is anomalous for a model when its
   * score exceeds that model's threshold (never, without one). Pairs with a non-finite score are left out.
   */
  add(
    production: ArrayLike<number>,
    shadow: ArrayLike<number>,
    rows: number,
    productionThreshold: number | undefined,
    shadowThreshold: number | undefined,
  ): void {
    const px = productionThreshold ?? Infinity;
    const sy = shadowThreshold ?? Infinity;
    for (let r = 0; r < rows; r++) {
      const x = production[r];
      const y = shadow[r];
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      this.compared++;
      const a = x > px;
      const b = y > sy;
      if (a && b) this.bothAnomalous++;
      else if (a) this.productionOnly++;
      else if (b) this.shadowOnly++;
      this.sumX += x;
      this.sumY += y;
      this.sumXX += x * x;
      this.sumYY += y * y;
      this.sumXY += x * y;
      this.sumAbsDiff += Math.abs(x - y);
    }
  }

  get disagreements(): number {
    return this.productionOnly + this.shadowOnly;
  }

  /** Share of compared events both models call the same (anomalous or not); undefined before any. */
  get agreementRatio(): number | undefined {
    return this.compared === 0 ? undefined : (this.compared - this.disagreements) / this.compared;
  }

  /**
   * Pearson correlation of the scores; undefined before two events, or when either model's scores are
   * constant. Identical score sequences give exactly 1.
   */
  get correlation(): number | undefined {
    const n = this.compared;
    if (n < 2) return undefined;
    const covariance = n * this.sumXY - this.sumX * this.sumY;
    const varianceX = n * this.sumXX - this.sumX * this.sumX;
    const varianceY = n * this.sumYY - this.sumY * this.sumY;
    if (!(varianceX > 0) || !(varianceY > 0)) return undefined;
    const r = covariance / Math.sqrt(varianceX * varianceY);
    return Math.max(-1, Math.min(1, r));
  }

  get meanAbsoluteDifference(): number | undefined {
    return this.compared === 0 ? undefined : this.sumAbsDiff / this.compared;
  }
}

/** What a batch hands the shadow: its rows (reused by the next batch: copied at once) and production scores. */
export interface ShadowBatch {
  input: Float32Array;
  rows: number;
  productionScores: ArrayLike<number>;
  productionThreshold: number | undefined;
  /** Per row, for the shadow's own records (only read with a shadow sink). */
  metas: DecodedMeta[];
  events: SourceEvent[];
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * A shadow that reads other columns than the production model (other event fields, or per-device features
 * kept in its own state) decodes each event of a batch again with its own decoder. The batches come in order,
 * so its per-device state follows the stream; a batch skipped while the shadow is behind is not seen by it.
 */
export class ShadowInput {
  private readonly meta = emptyMeta();
  /** Events the shadow's decoder refused (e.g. a field only it reads is missing): not compared. */
  refusedEvents = 0;

  constructor(private readonly decoder: Decoder, readonly width: number) {}

  rows(events: SourceEvent[], rows: number): { input: Float32Array; refused: number[] | undefined } {
    const width = this.width;
    const input = new Float32Array(rows * width);
    let refused: number[] | undefined;
    for (let r = 0; r < rows; r++) {
      let reason: string | undefined;
      try {
        reason = this.decoder.decode(strictUtf8.decode(events[r].payload), input, r * width, this.meta);
      } catch (err) {
        reason = (err as Error).message;
      }
      if (reason !== undefined) (refused ??= []).push(r);
    }
    if (refused) this.refusedEvents += refused.length;
    return { input, refused };
  }
}

/** What the metrics read of a shadow (at scrape time). */
export interface ShadowState {
  readonly model: { name: string; version: string };
  readonly agreement: ShadowAgreement;
  /** Events of batches skipped while the shadow was behind. */
  readonly skipped: number;
  /** Events not compared because the shadow had been dropped (or was dropped scoring them). */
  readonly droppedEvents: number;
}

export class Shadow implements ShadowState {
  readonly agreement = new ShadowAgreement();
  skipped = 0;
  droppedEvents = 0;
  /** Why the shadow was dropped; undefined while it runs. */
  droppedReason: string | undefined;
  private readonly pending = new Set<Promise<void>>();

  constructor(
    private readonly shadow: Model,
    private readonly encoder: PredictionEncoder,
    private readonly sink: Sink | undefined,
    private readonly log: Logger,
    private readonly maxPending = DEFAULT_SHADOW_MAX_PENDING,
    /** Set when the shadow reads other columns than production (e.g. per-device features): its own rows. */
    private readonly ownInput?: ShadowInput,
  ) {}

  get model(): { name: string; version: string } {
    return { name: this.shadow.name, version: this.shadow.version };
  }

  /** `car-anomaly v2 → file:/tmp/shadow.jsonl`, for the start line. */
  get description(): string {
    return `${this.shadow.describe()}${this.sink ? ` → ${this.sink.description}` : ""}`;
  }

  /** Batches being scored by the shadow or awaiting its sink. */
  get pendingBatches(): number {
    return this.pending.size;
  }

  /**
   * Called right after the production model scored a batch. Copies what it needs synchronously and returns
   * at once: the shadow's scoring and sink write run on their own, never awaited by the production path.
   */
  offer(batch: ShadowBatch): void {
    const { rows } = batch;
    if (this.droppedReason !== undefined) {
      this.droppedEvents += rows;
      return;
    }
    if (this.pending.size >= this.maxPending) {
      this.skipped += rows;
      return;
    }
    // Nothing here may throw into the production path.
    try {
      const own = this.ownInput?.rows(batch.events, rows);
      const input = own?.input ?? batch.input.slice(0, rows * this.shadow.width);
      const scores = batch.productionScores;
      const production = scores instanceof Float32Array
        ? scores.slice(0, rows)
        : Float32Array.from({ length: rows }, (_, r) => scores[r]);
      const described = this.sink ? describeRows(batch.metas, batch.events, rows) : undefined;
      const work = this.score(input, rows, production, batch.productionThreshold, described, own?.refused)
        .catch((err) => this.drop((err as Error).message))
        .finally(() => this.pending.delete(work));
      this.pending.add(work);
    } catch (err) {
      this.droppedEvents += rows;
      this.drop(`copying a batch failed: ${(err as Error).message}`);
    }
  }

  private async score(
    input: Float32Array,
    rows: number,
    production: Float32Array,
    productionThreshold: number | undefined,
    described: { meta: DecodedMeta; event: SourceEvent }[] | undefined,
    refused: number[] | undefined,
  ): Promise<void> {
    let scores: Float32Array;
    try {
      scores = await this.shadow.score(input, rows);
    } catch (err) {
      this.droppedEvents += rows;
      throw new Error(`scoring failed: ${(err as Error).message}`);
    }
    // Rows the shadow's own decoder refused are neither compared nor written.
    if (refused) { for (const r of refused) scores[r] = NaN; }
    if (this.droppedReason !== undefined) {
      this.droppedEvents += rows;
      return;
    }
    this.agreement.add(production, scores, rows, productionThreshold, this.shadow.threshold);
    if (!this.sink || !described) return;
    const ts = Date.now();
    const records: OutRecord[] = [];
    for (let r = 0; r < rows; r++) {
      const score = scores[r];
      if (!Number.isFinite(score)) continue;
      const { meta, event } = described[r];
      records.push(this.encoder.encode(meta, event.key, event.origin, score, ts));
    }
    if (records.length === 0) return;
    try {
      await this.sink.send(records);
    } catch (err) {
      throw new Error(`--shadow-sink failed: ${(err as Error).message}`);
    }
  }

  /** Drops the shadow (once): production goes on, the reason is logged. */
  drop(reason: string): void {
    if (this.droppedReason !== undefined) return;
    this.droppedReason = reason;
    this.log.warn(
      `shadow model ${this.shadow.describe()} dropped: ${reason}; production scoring goes on without it`,
    );
  }

  private closing: Promise<void> | undefined;

  /**
   * Waits for the shadow batches under way, then closes its sink and session; at most `waitMs` (or until
   * `abandon` aborts): a shadow sink that is still retrying at the end never holds the run's end. Once only.
   */
  close(waitMs: number, abandon?: AbortSignal): Promise<void> {
    return this.closing ??= this.closeNow(waitMs, abandon);
  }

  private async closeNow(waitMs: number, abandon?: AbortSignal): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<"late">((resolve) => {
      timer = setTimeout(() => resolve("late"), waitMs);
      if (abandon?.aborted) resolve("late");
      abandon?.addEventListener("abort", () => resolve("late"), { once: true });
    });
    try {
      const finished = await Promise.race([Promise.allSettled([...this.pending]), deadline]);
      if (finished === "late") {
        this.drop(`${this.pending.size} shadow batches still under way at the end`);
        return; // its session may still be in use, and its sink may not close: both go with the process
      }
      if (this.sink) {
        const sink = this.sink;
        const closed = await Promise.race([
          sink.close().then(() => "closed" as const, (err: Error) => {
            this.drop(`closing ${sink.description}: ${err.message}`);
            return "closed" as const;
          }),
          deadline,
        ]);
        if (closed === "late") this.drop(`${sink.description} did not close in time`);
      }
      await this.shadow.close().catch(() => {});
    } finally {
      clearTimeout(timer);
    }
  }

  /** The summary's line: `shadow car v2: 12345 compared, agreement 99.2 %, 37 disagreements (30 shadow-only), …`. */
  describe(): string {
    const a = this.agreement;
    const ratio = a.agreementRatio;
    const correlation = a.correlation;
    const meanDiff = a.meanAbsoluteDifference;
    return `shadow ${this.shadow.describe()}: ${a.compared} compared` +
      (ratio === undefined ? "" : `, agreement ${(ratio * 100).toFixed(1)} %`) +
      `, ${a.disagreements} disagreements (${a.shadowOnly} shadow-only, ${a.productionOnly} production-only)` +
      `, score correlation ${correlation === undefined ? "n/a" : correlation.toFixed(3)}` +
      (meanDiff === undefined ? "" : `, mean |score difference| ${formatNumber(meanDiff)}`) +
      (this.skipped > 0 ? `; ${this.skipped} events skipped (shadow behind)` : "") +
      (this.ownInput?.refusedEvents
        ? `; ${this.ownInput.refusedEvents} events it could not decode (not compared)`
        : "") +
      (this.droppedReason !== undefined ? `; dropped (${this.droppedReason})` : "") +
      (this.droppedEvents > 0 ? `, ${this.droppedEvents} events not compared` : "");
  }

  /** The summary's fields in a JSON log line. */
  fields(): Record<string, number | string | undefined> {
    const a = this.agreement;
    return {
      shadowCompared: a.compared,
      shadowAgreement: a.agreementRatio,
      shadowOnly: a.shadowOnly,
      productionOnly: a.productionOnly,
      shadowCorrelation: a.correlation,
      shadowSkipped: this.skipped,
      shadowDropped: this.droppedReason,
    };
  }
}

/** The per-row parts a record needs, copied: the decoder reuses its metas for the next batch. */
function describeRows(
  metas: DecodedMeta[],
  events: SourceEvent[],
  rows: number,
): { meta: DecodedMeta; event: SourceEvent }[] {
  const out = new Array(rows);
  for (let r = 0; r < rows; r++) {
    const m = metas[r];
    out[r] = {
      meta: { id: m.id, key: m.key, passthrough: m.passthrough?.slice() },
      event: events[r],
    };
  }
  return out;
}

function formatNumber(value: number): string {
  return Number(value.toPrecision(4)).toString();
}
