/** Why an event was dead-lettered, as a metric label (edgeinfer_dead_letters_total{reason}). */
export const DEAD_LETTER_REASONS = [
  "payload_too_large",
  "invalid_utf8",
  "undecodable",
  "non_finite_score",
  "sink_refused",
] as const;
export type DeadLetterReason = typeof DEAD_LETTER_REASONS[number];

/** Counters of a run, read by the status line, the final summary and the metrics (at scrape time). */
export class Stats {
  /** When the first event arrived: throughput is measured from here, not from connecting. */
  firstEventAt: number | undefined;
  /** Events taken from the source. */
  events = 0;
  /** Events whose prediction or dead-letter record is durable and that were acknowledged. */
  acked = 0;
  predictions = 0;
  anomalies = 0;
  deadLettered = 0;
  /** `deadLettered` by reason. */
  readonly deadLetterReasons = Object.fromEntries(DEAD_LETTER_REASONS.map((r) => [r, 0])) as Record<
    DeadLetterReason,
    number
  >;
  /** Predictions the sink refused after scoring (taken off `predictions`; dead-lettered instead). */
  predictionsRefused = 0;
  /** Dead-letter records the dead-letter sink refused for good (logged, then acknowledged). */
  dropped = 0;
  batches = 0;
  /** Batches between the batcher and a durable write (backpressure pauses the source at the limit). */
  inFlight = 0;
  /** True while the pipeline holds the source (max-in-flight reached). */
  sourcePaused = false;
  /** Highest `inFlight` seen, and highest number of events taken but not yet acknowledged. */
  peakInFlight = 0;
  peakHeld = 0;

  /** Called when a batch is dispatched: the memory bound, as observed. */
  notePeaks(): void {
    if (this.inFlight > this.peakInFlight) this.peakInFlight = this.inFlight;
    const held = this.events - this.acked;
    if (held > this.peakHeld) this.peakHeld = held;
  }

  /** Seconds since the first event (0 before it). */
  activeSeconds(): number {
    return this.firstEventAt === undefined ? 0 : (performance.now() - this.firstEventAt) / 1000;
  }

  /** One line for the periodic status and the summary. */
  /** The counters as fields of a JSON log line (status line, summary). */
  fields(): {
    acked: number;
    predictions: number;
    anomalies: number;
    deadLettered: number;
    inFlight: number;
  } {
    const { acked, predictions, anomalies, deadLettered, inFlight } = this;
    return { acked, predictions, anomalies, deadLettered, inFlight };
  }

  describe(rateSince?: { acked: number; at: number }): string {
    const now = performance.now();
    const since = rateSince ?? { acked: 0, at: this.firstEventAt ?? now };
    const seconds = Math.max((now - since.at) / 1000, 1e-9);
    const rate = Math.round((this.acked - since.acked) / seconds);
    const meanBatch = this.batches === 0 ? 0 : this.events / this.batches;
    return `${this.acked} events acked (${rate}/s), ${this.predictions} predictions, ` +
      `${this.anomalies} anomalies, ${this.deadLettered} dead-lettered` +
      `${
        this.dropped ? ` (${this.dropped} refused by the dead-letter sink, dropped)` : ""
      }, ${this.batches} batches ` +
      `(mean ${meanBatch.toFixed(1)}), ${this.inFlight} in flight`;
  }
}
