/**
 * Prometheus metrics of a run (`--http`): one registry for the process, one PipelineMetrics per pipeline.
 *
 * Counters and gauges are read at scrape time (collect()) from what the pipeline already keeps — its Stats,
 * its Health, the store-and-forward buffer — so they cost the hot path nothing. The three histograms are
 * fixed-bucket arrays the pipeline fills per batch (and per event for latency) without allocating; they are
 * exported through the registry like prom-client's own metrics.
 */
import { collectDefaultMetrics, Counter, Gauge, type Metric, Registry } from "prom-client";
import { DEAD_LETTER_REASONS, type Stats } from "../pipeline/stats.ts";
import type { Health } from "../pipeline/health.ts";
import type { BatchObserver } from "../pipeline/pipeline.ts";
import type { DeviceAlerts } from "../alerts/hysteresis.ts";
import type { ShadowState } from "../model/shadow.ts";
import type { DriftWatch } from "../model/drift.ts";
import type { DeviceFeatureState } from "../features/state.ts";

export const BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
export const INFERENCE_SECONDS_BUCKETS = [
  0.00001,
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  1,
];
export const LATENCY_SECONDS_BUCKETS = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  300,
];

export type ModelReloadResult = "ok" | "refused" | "failed";
const RELOAD_RESULTS: ModelReloadResult[] = ["ok", "refused", "failed"];

/** What the metrics read of a store-and-forward buffer (DiskBuffer). */
export interface BufferState {
  readonly bytes: number;
  readonly records: number;
  readonly forwarded: number;
  readonly dropped: number;
  oldestAt(): number | undefined;
}

/** A histogram with fixed buckets, observed without allocating. `counts[i]`: values ≤ bounds[i] (last: +Inf). */
export class Buckets {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]) i++;
    this.counts[i]++;
    this.sum += value;
    this.count++;
  }
}

/**
 * One pipeline's metrics: the histograms it fills, what it reports about its model, and its readiness.
 * `mustConnect` names the parts (as Health names them, e.g. "Kafka sink") that must have reported a success
 * before the pipeline is ready.
 */
export class PipelineMetrics implements BatchObserver {
  readonly batchSizes = new Buckets(BATCH_SIZE_BUCKETS);
  readonly inference = new Buckets(INFERENCE_SECONDS_BUCKETS);
  readonly latency = new Buckets(LATENCY_SECONDS_BUCKETS);
  model: { name: string; version: string; sha256: string } | undefined;
  readonly reloads: Record<ModelReloadResult, number> = { ok: 0, refused: 0, failed: 0 };
  buffer: BufferState | undefined;
  /** --alert-hysteresis's state. */
  deviceAlerts: DeviceAlerts | undefined;
  /** --shadow-model: its agreement with the production model. */
  shadow: ShadowState | undefined;
  /** The per-device feature state (a model with edgeinfer.device_features). */
  deviceState: Pick<DeviceFeatureState, "counts"> | undefined;
  /** The drift watch (a model with edgeinfer.baseline). */
  drift: Pick<DriftWatch, "values" | "full"> | undefined;
  ended = false;

  constructor(
    readonly name: string,
    readonly stats: Stats,
    readonly health: Health,
    readonly maxInFlight: number,
    readonly mustConnect: readonly string[],
  ) {}

  batchSize(events: number): void {
    this.batchSizes.observe(events);
  }

  inferenceSeconds(seconds: number): void {
    this.inference.observe(seconds);
  }

  eventLatencySeconds(seconds: number): void {
    this.latency.observe(seconds);
  }

  /** The model now scoring (at start, and after a hot swap). */
  modelLoaded(model: { name: string; version: string; sha256: string }): void {
    this.model = model;
  }

  /** A hot swap's outcome: ok (swapped), refused (the new model does not fit), failed (could not load). */
  modelReload(result: ModelReloadResult): void {
    this.reloads[result]++;
  }

  /** Why this pipeline is not ready, one reason each; none when it is. */
  notReady(): string[] {
    const prefix = `pipeline ${this.name}: `;
    const fatal = this.health.fatalError;
    if (fatal !== undefined) return [`${prefix}failed: ${fatal.message}`];
    if (this.ended) return [`${prefix}ended`];
    const reasons: string[] = [];
    if (this.model === undefined) reasons.push(`${prefix}model not loaded yet`);
    const parts = this.health.parts();
    for (const kind of this.mustConnect) {
      const seen = parts.filter((p) => p.part.startsWith(kind));
      // A part retrying says why below; one never heard from has not connected yet.
      if (!seen.some((p) => p.up) && !seen.some((p) => p.retrying)) {
        reasons.push(`${prefix}${kind} not connected yet`);
      }
    }
    for (const waiting of this.health.waitingFor()) reasons.push(prefix + waiting);
    return reasons;
  }
}

const UNRELIABLE_DEFAULT_METRICS = [
  "process_resident_memory_bytes",
  "process_virtual_memory_bytes",
  "process_heap_bytes",
  "process_open_fds",
  "process_max_fds",
  "nodejs_active_handles",
  "nodejs_active_handles_total",
  "nodejs_active_requests",
  "nodejs_active_requests_total",
  "nodejs_active_resources",
  "nodejs_active_resources_total",
  "nodejs_gc_duration_seconds", // Deno reports no GC entries: always empty
];

type Labels = Record<string, string>;
/** A metric's samples for one pipeline: a value, or values by extra labels. */
type Read = (p: PipelineMetrics) => number | [Labels, number][] | undefined;

/** The registry of the process: prom-client's default process metrics and edgeinfer_* of every pipeline. */
export class Metrics {
  readonly registry = new Registry();
  readonly pipelines: PipelineMetrics[] = [];

  /** `stopping`: aborted on SIGINT/SIGTERM, after which the process is not ready (it is draining). */
  constructor(private readonly stopping?: AbortSignal) {
    this.processMetrics();
    const counter = (name: string, help: string, labelNames: string[], read: Read) =>
      this.family(Counter, name, help, labelNames, read);
    const gauge = (name: string, help: string, labelNames: string[], read: Read) =>
      this.family(Gauge, name, help, labelNames, read);

    counter("edgeinfer_events_received_total", "Events taken from the source.", [], (p) => p.stats.events);
    counter(
      "edgeinfer_events_acked_total",
      "Events acknowledged to their source once their prediction or dead letter was durable.",
      [],
      (p) => p.stats.acked,
    );
    counter(
      "edgeinfer_predictions_total",
      "Predictions made by the model (one the sink then refused is also a dead letter, reason sink_refused).",
      [],
      (p) => p.stats.predictions + p.stats.predictionsRefused,
    );
    counter(
      "edgeinfer_anomalies_total",
      "Predictions whose score exceeded the threshold.",
      [],
      (p) => p.stats.anomalies,
    );
    counter(
      "edgeinfer_dead_letters_total",
      "Events that could not be scored, by reason (sent to --dlq, or only counted without one).",
      ["reason"],
      (p) => DEAD_LETTER_REASONS.map((reason) => [{ reason }, p.stats.deadLetterReasons[reason]]),
    );
    counter(
      "edgeinfer_dead_letters_dropped_total",
      "Dead-letter records the dead-letter sink refused for good (logged, then dropped).",
      [],
      (p) => p.stats.dropped,
    );
    gauge(
      "edgeinfer_batches_in_flight",
      "Batches scored and awaiting a durable write.",
      [],
      (p) => p.stats.inFlight,
    );
    gauge(
      "edgeinfer_batches_in_flight_limit",
      "Batches in flight at which the source is paused (--max-in-flight).",
      [],
      (p) => p.maxInFlight,
    );
    gauge(
      "edgeinfer_source_paused",
      "1 while the pipeline holds its source (batches in flight at the limit).",
      [],
      (p) => p.stats.sourcePaused ? 1 : 0,
    );
    gauge(
      "edgeinfer_part_up",
      "1 when a source or sink connection has succeeded and is not retrying.",
      ["part"],
      (p) => p.health.parts().map(({ part, up }) => [{ part }, up ? 1 : 0]),
    );
    gauge(
      "edgeinfer_part_retrying",
      "1 while a source or sink waits out a retriable failure (broker down, timeout).",
      ["part"],
      (p) => p.health.parts().map(({ part, retrying }) => [{ part }, retrying ? 1 : 0]),
    );
    counter(
      "edgeinfer_retries_total",
      "Retriable failures a source or sink reported (each retried).",
      ["part"],
      (p) => p.health.parts().map(({ part, retries }) => [{ part }, retries]),
    );
    gauge(
      "edgeinfer_ready",
      "1 when the pipeline is ready (what /readyz reports).",
      [],
      (p) => p.notReady().length === 0 ? 1 : 0,
    );
    gauge(
      "edgeinfer_model_info",
      "The model scoring: always 1, its name, version and file sha256 as labels.",
      ["model", "version", "sha256"],
      (p) => p.model && [[{ model: p.model.name, version: p.model.version, sha256: p.model.sha256 }, 1]],
    );
    counter(
      "edgeinfer_model_reloads_total",
      "Model hot swaps, by result: ok, refused (does not fit the pipeline), failed (could not load).",
      ["result"],
      (p) => RELOAD_RESULTS.map((result) => [{ result }, p.reloads[result]]),
    );
    gauge(
      "edgeinfer_buffer_bytes",
      "Record bytes held by the store-and-forward buffer (--buffer).",
      [],
      (p) => p.buffer?.bytes,
    );
    gauge(
      "edgeinfer_buffer_records",
      "Records held by the store-and-forward buffer.",
      [],
      (p) => p.buffer?.records,
    );
    gauge(
      "edgeinfer_buffer_oldest_age_seconds",
      "Age of the oldest buffered record (0 when empty).",
      [],
      (p) => {
        if (p.buffer === undefined) return undefined;
        const oldest = p.buffer.oldestAt();
        return oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000);
      },
    );
    counter(
      "edgeinfer_buffer_forwarded_total",
      "Buffered records forwarded to their sink.",
      [],
      (p) => p.buffer?.forwarded,
    );
    counter(
      "edgeinfer_buffer_dropped_total",
      "Buffered records removed unsent by --buffer-when-full drop-oldest.",
      [],
      (p) => p.buffer?.dropped,
    );
    gauge(
      "edgeinfer_device_alerts_open",
      "Devices whose alert is open (--alert-hysteresis).",
      [],
      (p) => p.deviceAlerts?.openNow,
    );
    counter(
      "edgeinfer_device_alert_changes_total",
      "Device alerts opened and closed (--alert-hysteresis), by the state entered (to=open|closed).",
      ["to"],
      (p) =>
        p.deviceAlerts &&
        [[{ to: "open" }, p.deviceAlerts.opened], [{ to: "closed" }, p.deviceAlerts.closed]],
    );
    gauge(
      "edgeinfer_device_alert_devices",
      "Devices whose alert state is kept (bounded by --alert-devices and --alert-idle).",
      [],
      (p) => p.deviceAlerts?.size,
    );
    counter(
      "edgeinfer_shadow_events_total",
      "Events offered to the shadow model: compared with production, skipped (shadow behind), dropped (shadow failed).",
      ["result"],
      (p) =>
        p.shadow && [
          [{ result: "compared" }, p.shadow.agreement.compared],
          [{ result: "skipped" }, p.shadow.skipped],
          [{ result: "dropped" }, p.shadow.droppedEvents],
        ],
    );
    counter(
      "edgeinfer_shadow_disagreements_total",
      "Events one model calls anomalous and the other not: shadow_only or production_only.",
      ["kind"],
      (p) =>
        p.shadow && [
          [{ kind: "shadow_only" }, p.shadow.agreement.shadowOnly],
          [{ kind: "production_only" }, p.shadow.agreement.productionOnly],
        ],
    );
    gauge(
      "edgeinfer_shadow_agreement_ratio",
      "Share of compared events the shadow and production models call the same (anomalous or not).",
      [],
      (p) => p.shadow?.agreement.agreementRatio,
    );
    gauge(
      "edgeinfer_shadow_score_correlation",
      "Pearson correlation of shadow and production scores over the compared events.",
      [],
      (p) => p.shadow?.agreement.correlation,
    );
    gauge(
      "edgeinfer_shadow_info",
      "The shadow model: always 1, its name and version as labels.",
      ["model", "version"],
      (p) => p.shadow && [[{ model: p.shadow.model.name, version: p.shadow.model.version }, 1]],
    );
    gauge(
      "edgeinfer_device_state_devices",
      "Devices whose per-device feature state is kept (at most --device-state-max).",
      [],
      (p) => p.deviceState?.counts().devices,
    );
    counter(
      "edgeinfer_device_state_evictions_total",
      "Devices forgotten: reason=cap (--device-state-max) or idle (--device-state-idle).",
      ["reason"],
      (p) => {
        const c = p.deviceState?.counts();
        return c && [[{ reason: "cap" }, c.evictedCap], [{ reason: "idle" }, c.evictedIdle]];
      },
    );
    counter(
      "edgeinfer_device_state_late_readings_total",
      "Readings older than their device's newest: scored against the state, which they do not change.",
      [],
      (p) => p.deviceState?.counts().late,
    );
    gauge(
      "edgeinfer_drift_psi",
      'PSI of the last --drift-window events against the model\'s baseline, per feature and feature="score".',
      ["feature"],
      (p) => p.drift?.full ? p.drift.values().map(([feature, psi]) => [{ feature }, psi]) : undefined,
    );
    this.histogram("edgeinfer_batch_size", "Events per batch scored.", (p) => p.batchSizes);
    this.histogram(
      "edgeinfer_inference_seconds",
      "Time of one model call (one batch).",
      (p) => p.inference,
    );
    this.histogram(
      "edgeinfer_event_latency_seconds",
      "Receipt of an event to its acknowledgement (its prediction or dead letter durable).",
      (p) => p.latency,
    );
  }

  /**
   * prom-client's default metrics, less those that read /proc/self (Deno allows that only with --allow-all,
   * which the edgeinfer task and binary do not have: they would read 0) and Node's libuv handle counts (not
   * Deno's); the resident memory comes from Deno instead.
   */
  private processMetrics(): void {
    collectDefaultMetrics({ register: this.registry });
    for (const name of UNRELIABLE_DEFAULT_METRICS) this.registry.removeSingleMetric(name);
    new Gauge({
      name: "process_resident_memory_bytes",
      help: "Resident memory size in bytes.",
      registers: [this.registry],
      collect(this: Gauge) {
        this.set(Deno.memoryUsage().rss);
      },
    });
  }

  /** A new pipeline's metrics, reported from now on. */
  pipeline(
    name: string,
    o: { stats: Stats; health: Health; maxInFlight: number; mustConnect: readonly string[] },
  ): PipelineMetrics {
    const metrics = new PipelineMetrics(name, o.stats, o.health, o.maxInFlight, o.mustConnect);
    this.pipelines.push(metrics);
    return metrics;
  }

  /** The text exposition format. */
  async text(): Promise<string> {
    return await this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Ready when every pipeline is (and at least one was set up). */
  readiness(): { ready: boolean; reasons: string[] } {
    const reasons = this.stopping?.aborted
      ? ["shutting down"]
      : this.pipelines.length === 0
      ? ["no pipeline set up yet"]
      : this.pipelines.flatMap((p) => p.notReady());
    return { ready: reasons.length === 0, reasons };
  }

  /** Names of the edgeinfer_* metrics (for the README's list). */
  names(): string[] {
    return this.registry.getMetricsAsArray().map((m) => m.name).filter((n) => n.startsWith("edgeinfer_"));
  }

  private family(
    kind: typeof Counter | typeof Gauge,
    name: string,
    help: string,
    labelNames: string[],
    read: Read,
  ): void {
    const pipelines = this.pipelines;
    new kind({
      name,
      help,
      labelNames: ["pipeline", ...labelNames],
      registers: [this.registry],
      collect(this: Counter | Gauge) {
        this.reset();
        for (const p of pipelines) {
          const samples = read(p);
          if (samples === undefined) continue;
          for (
            const [labels, value] of typeof samples === "number"
              ? [[{}, samples] as [Labels, number]]
              : samples
          ) {
            const all = { pipeline: p.name, ...labels };
            if (this instanceof Counter) this.inc(all, value);
            else this.set(all, value);
          }
        }
      },
    });
  }

  private histogram(name: string, help: string, pick: (p: PipelineMetrics) => Buckets): void {
    const pipelines = this.pipelines;
    const family = {
      name,
      help,
      type: "histogram",
      aggregator: "sum",
      get() {
        const values: { metricName: string; labels: Labels; value: number }[] = [];
        for (const p of pipelines) {
          const h = pick(p);
          let cumulative = 0;
          for (let i = 0; i <= h.bounds.length; i++) {
            cumulative += h.counts[i];
            const le = i < h.bounds.length ? String(h.bounds[i]) : "+Inf";
            values.push({
              metricName: `${name}_bucket`,
              labels: { pipeline: p.name, le },
              value: cumulative,
            });
          }
          values.push({ metricName: `${name}_sum`, labels: { pipeline: p.name }, value: h.sum });
          values.push({ metricName: `${name}_count`, labels: { pipeline: p.name }, value: h.count });
        }
        return Promise.resolve({ name, help, type: "histogram", values, aggregator: "sum" });
      },
    };
    // The registry takes any object with prom-client's metric shape (name, help, type, get()).
    this.registry.registerMetric(family as unknown as Metric);
  }
}
