/** `run`'s flag values checked and turned into settings: those of one pipeline, and those of the process. */
import { RECORD_FIELDS } from "../codecs/prediction.ts";
import { UsageError } from "../errors.ts";
import { DEFAULT_BUFFER_MAX_BYTES, WHEN_FULL, type WhenFull } from "../buffer/buffer.ts";
import { DEFAULT_RETRY, type RetryPolicy } from "../pipeline/health.ts";
import { type HttpAddress, parseHttpAddress } from "../observe/http.ts";
import type { LogSettings } from "../log.ts";
import { durationFlag, intFlag, listFlag, logSettings, numberFlag } from "./args.ts";
import type { RUN_FLAGS } from "./run.ts";
import { DEFAULT_SHADOW_MAX_PENDING } from "../model/shadow.ts";
import { DEFAULT_DRIFT_THRESHOLD, DEFAULT_DRIFT_WINDOW } from "../model/drift.ts";
import {
  DEFAULT_DEVICE_STATE_IDLE_SECONDS,
  DEFAULT_DEVICE_STATE_MAX,
  type DeviceStateBounds,
} from "../features/state.ts";
import { ALERTS_ON, type AlertsOn } from "../alerts/alerts.ts";
import {
  DEFAULT_ALERT_DEVICES,
  DEFAULT_ALERT_IDLE_MS,
  type DeviceAlertBounds,
  type HysteresisRule,
  parseHysteresisRule,
} from "../alerts/hysteresis.ts";
import { parseEndpoint } from "../config/endpoint.ts";
import { TopicTemplate } from "../mqtt/topic_template.ts";
import { filtersOverlap } from "../mqtt_server/topics.ts";

type RunFlags = typeof RUN_FLAGS;

/** `run`'s flag values as parseArgs gives them. */
export type RunValues = {
  [K in keyof RunFlags]?: RunFlags[K]["type"] extends "boolean" ? boolean : string;
};

/** Settings of the whole process: with several pipelines, one status interval and one shutdown deadline. */
export interface ProcessSettings {
  quiet: boolean;
  /** --log-format, --log-level (--quiet: error), --log-timestamps. */
  log: LogSettings;
  statusEverySeconds: number;
  shutdownTimeoutMs: number;
  /** --http: where /metrics, /healthz and /readyz are served; undefined: off. */
  http: HttpAddress | undefined;
}

/** One pipeline's settings, checked. */
export interface PipelineSettings {
  /** The model file; with --model-source only the fallback of a first start (README, Models over Kafka). */
  model: string | undefined;
  /** Reload the model file when it changes (SIGHUP reloads it in any case). */
  watchModel: boolean;
  /** kafka://host:port/<topic>: models delivered over a compacted topic. */
  modelSource: string | undefined;
  /** Where the last good model from --model-source is kept, for a start without uplink. */
  modelCache: string | undefined;
  source: string;
  sink: string;
  dlq: string | undefined;
  format: "json" | "delimited";
  features: string[] | undefined;
  keyField: string | undefined;
  idField: string;
  /** FIELD or FIELD:NAME (a rename, e.g. ts:event_ts, since the record has a ts of its own). */
  passthrough: { field: string; name: string }[];
  threshold: number | undefined;
  scoreOutput: string | undefined;
  batchSize: number;
  lingerMs: number;
  maxInFlight: number;
  maxEvents: number | undefined;
  maxPayloadBytes: number;
  maxHeldBytes: number;
  deadLetterPayloadBytes: number;
  traceHeaders: boolean;
  retry: RetryPolicy;
  threads: number;
  exactlyOnce: boolean;
  buffer: { dir: string; maxBytes: number; whenFull: WhenFull } | undefined;
  /** --alerts TEMPLATE, --alerts-on: predictions published back over the source's MQTT (best effort). */
  alerts: { template: TopicTemplate; on: AlertsOn } | undefined;
  /** --alert-hysteresis K/N,M with --alert-devices and --alert-idle: device alerts in each record. */
  alertHysteresis: { rule: HysteresisRule; bounds: DeviceAlertBounds } | undefined;
  /** --shadow-model, --shadow-threshold, --shadow-sink (README, Shadow model). */
  shadow:
    | { model: string; threshold: number | undefined; sink: string | undefined; maxPending: number }
    | undefined;
  /** --device-state-max, --device-state-idle: bounds of the per-device feature state. */
  deviceState: DeviceStateBounds;
  /** --drift-window (events; 0: off) and --drift-threshold (PSI), for a model with edgeinfer.baseline. */
  drift: { window: number; threshold: number };
}

export function processSettings(f: RunValues): ProcessSettings {
  const statusEverySeconds = numberFlag("status-every", f["status-every"]) ?? 5;
  if (statusEverySeconds <= 0) {
    throw new UsageError(`--status-every must be > 0 seconds, got '${f["status-every"]}'`);
  }
  return {
    quiet: f.quiet ?? false,
    log: logSettings(f),
    statusEverySeconds,
    shutdownTimeoutMs: durationFlag("shutdown-timeout", f["shutdown-timeout"], 10_000),
    http: f.http === undefined ? undefined : parseHttpAddress(f.http),
  };
}

export function pipelineSettings(f: RunValues): PipelineSettings {
  if (f.model === undefined && f["model-source"] === undefined) {
    throw new UsageError("run needs --model PATH or --model-source URL (see 'edgeinfer run --help')");
  }
  if (f["model-cache"] !== undefined && f["model-source"] === undefined) {
    throw new UsageError("--model-cache DIR keeps models from --model-source: add --model-source URL");
  }
  if (f["watch-model"] && f.model === undefined) {
    throw new UsageError("--watch-model watches the --model file: add --model PATH");
  }
  if (f.source === undefined) throw new UsageError("run needs --source URL (see 'edgeinfer run --help')");
  const format = f.format ?? "json";
  if (format !== "json" && format !== "delimited") {
    throw new UsageError(`--format must be json or delimited, got '${format}'`);
  }
  const batchSize = intFlag("batch-size", f["batch-size"], 256, 1);
  const lingerMs = intFlag("linger-ms", f["linger-ms"], 5, 0);
  const maxInFlight = intFlag("max-in-flight", f["max-in-flight"], 4, 1);
  const maxEvents = f["max-events"] === undefined ? undefined : intFlag("max-events", f["max-events"], 0, 1);
  const maxPayloadBytes = intFlag("max-payload-bytes", f["max-payload-bytes"], 1 << 20, 1);
  const maxHeldBytes = intFlag("max-held-bytes", f["max-held-bytes"], 64 << 20, 1);
  const deadLetterPayloadBytes = intFlag("dlq-payload-bytes", f["dlq-payload-bytes"], 64 << 10, 0);
  const traceHeaders = f["trace-headers"] ?? "on";
  if (traceHeaders !== "on" && traceHeaders !== "off") {
    throw new UsageError(`--trace-headers must be on or off, got '${traceHeaders}'`);
  }
  const retry: RetryPolicy = {
    initialBackoffMs: DEFAULT_RETRY.initialBackoffMs,
    maxBackoffMs: durationFlag("retry-max-backoff", f["retry-max-backoff"], DEFAULT_RETRY.maxBackoffMs),
    giveUpAfterMs: durationFlag("give-up-after", f["give-up-after"]),
  };
  if (retry.maxBackoffMs < 1) throw new UsageError(`--retry-max-backoff must be at least 1ms`);
  retry.initialBackoffMs = Math.min(retry.initialBackoffMs, retry.maxBackoffMs);
  const threads = intFlag("threads", f.threads, 1, 1);
  const bufferMaxBytes = intFlag("buffer-max-bytes", f["buffer-max-bytes"], DEFAULT_BUFFER_MAX_BYTES, 1);
  const whenFull = (f["buffer-when-full"] ?? "block") as WhenFull;
  if (!WHEN_FULL.includes(whenFull)) {
    throw new UsageError(`--buffer-when-full must be block or drop-oldest, got '${whenFull}'`);
  }
  if (f.buffer === undefined && (f["buffer-max-bytes"] !== undefined || whenFull !== "block")) {
    throw new UsageError("--buffer-max-bytes and --buffer-when-full need --buffer DIR");
  }
  const exactlyOnce = f["exactly-once"] ?? false;
  if (f.buffer !== undefined && exactlyOnce) {
    throw new UsageError(
      "--buffer cannot be combined with --exactly-once: a Kafka transaction commits the input offsets with " +
        "the records in Kafka, which a local buffer would break; drop one of them",
    );
  }
  const passthrough = (listFlag(f.passthrough) ?? []).map((item) => {
    const [field, name = field] = item.split(":");
    if (RECORD_FIELDS.includes(name)) {
      throw new UsageError(
        `--passthrough field '${name}' clashes with the output record's own '${name}'; ` +
          `rename it, e.g. ${field}:${field}_in`,
      );
    }
    return { field, name };
  });
  if (format === "delimited") {
    for (const flag of ["features", "key-field", "passthrough"] as const) {
      if (f[flag] !== undefined) throw new UsageError(`--${flag} applies to --format json only`);
    }
  }
  const alerts = alertSettings(f, f.source);
  const alertHysteresis = hysteresisSettings(f);
  if (alertHysteresis && passthrough.some((p) => p.name === "alert")) {
    throw new UsageError(
      "--passthrough field 'alert' clashes with the record's own 'alert' (--alert-hysteresis); " +
        "rename it, e.g. alert:alert_in",
    );
  }
  return {
    model: f.model,
    watchModel: f["watch-model"] ?? false,
    modelSource: f["model-source"],
    modelCache: f["model-cache"],
    source: f.source,
    sink: f.sink ?? "-",
    dlq: f.dlq,
    format,
    features: listFlag(f.features),
    keyField: f["key-field"],
    idField: f["id-field"] ?? "id",
    passthrough,
    threshold: numberFlag("threshold", f.threshold),
    scoreOutput: f["score-output"],
    batchSize,
    lingerMs,
    maxInFlight,
    maxEvents,
    maxPayloadBytes,
    maxHeldBytes,
    deadLetterPayloadBytes,
    traceHeaders: traceHeaders === "on",
    retry,
    threads,
    exactlyOnce,
    buffer: f.buffer === undefined ? undefined : { dir: f.buffer, maxBytes: bufferMaxBytes, whenFull },
    alerts,
    alertHysteresis,
    shadow: shadowSettings(f),
    drift: driftSettings(f),
    deviceState: {
      maxDevices: intFlag("device-state-max", f["device-state-max"], DEFAULT_DEVICE_STATE_MAX, 1),
      idleSeconds: intFlag("device-state-idle", f["device-state-idle"], DEFAULT_DEVICE_STATE_IDLE_SECONDS, 1),
    },
  };
}

/** --drift-window N, --drift-threshold X. */
function driftSettings(f: RunValues): PipelineSettings["drift"] {
  const window = intFlag("drift-window", f["drift-window"], DEFAULT_DRIFT_WINDOW, 0);
  if (window > 0 && window < 100) {
    throw new UsageError(
      `--drift-window must be 0 (off) or at least 100 events (a tenth of it leaves the window at once), ` +
        `got '${f["drift-window"]}'`,
    );
  }
  const threshold = numberFlag("drift-threshold", f["drift-threshold"]) ?? DEFAULT_DRIFT_THRESHOLD;
  if (!(threshold > 0)) {
    throw new UsageError(
      `--drift-threshold must be a PSI > 0 (0.2 is a common 'significant shift'), got '${
        f["drift-threshold"]
      }'`,
    );
  }
  return { window, threshold };
}

/** --shadow-model and the flags that need it. */
function shadowSettings(f: RunValues): PipelineSettings["shadow"] {
  const model = f["shadow-model"];
  if (model === undefined) {
    for (const flag of ["shadow-threshold", "shadow-sink", "shadow-max-pending"] as const) {
      if (f[flag] !== undefined) throw new UsageError(`--${flag} needs --shadow-model PATH`);
    }
    return undefined;
  }
  const sink = f["shadow-sink"];
  if (sink !== undefined && sink === (f.sink ?? "-")) {
    throw new UsageError(
      `--shadow-sink ${sink} is the --sink: shadow predictions would mix with production ones; give it its own`,
    );
  }
  return {
    model,
    threshold: numberFlag("shadow-threshold", f["shadow-threshold"]),
    sink,
    maxPending: intFlag("shadow-max-pending", f["shadow-max-pending"], DEFAULT_SHADOW_MAX_PENDING, 1),
  };
}

/** --alert-hysteresis K/N,M, --alert-devices N, --alert-idle D. */
function hysteresisSettings(f: RunValues): PipelineSettings["alertHysteresis"] {
  const value = f["alert-hysteresis"];
  if (value === undefined) {
    for (const flag of ["alert-devices", "alert-idle"] as const) {
      if (f[flag] !== undefined) {
        throw new UsageError(`--${flag} bounds --alert-hysteresis's state: add --alert-hysteresis K/N,M`);
      }
    }
    return undefined;
  }
  const rule = parseHysteresisRule(value);
  if (rule === undefined) {
    throw new UsageError(
      `--alert-hysteresis must be K/N,M with 1 <= K <= N <= 32 and M >= 1 (open at K anomalies among the ` +
        `last N readings, close after M normal ones), e.g. 3/5,10; got '${value}'`,
    );
  }
  const maxDevices = intFlag("alert-devices", f["alert-devices"], DEFAULT_ALERT_DEVICES, 1);
  const idleMs = durationFlag("alert-idle", f["alert-idle"], DEFAULT_ALERT_IDLE_MS);
  if (idleMs < 1) throw new UsageError(`--alert-idle must be at least 1ms, got '${f["alert-idle"]}'`);
  return { rule, bounds: { maxDevices, idleMs } };
}

/** --alerts and --alerts-on, checked against the source: alerts go out over its MQTT. */
function alertSettings(f: RunValues, source: string): PipelineSettings["alerts"] {
  const on = f["alerts-on"];
  if (f.alerts === undefined) {
    if (on !== undefined) {
      throw new UsageError("--alerts-on needs --alerts TOPIC, e.g. --alerts 'cars/{key}/alerts'");
    }
    return undefined;
  }
  if (on !== undefined && !(ALERTS_ON as readonly string[]).includes(on)) {
    throw new UsageError(`--alerts-on must be anomalies or all, got '${on}'`);
  }
  const template = new TopicTemplate(f.alerts, "--alerts");
  const alertFilter = template.filter();
  if (alertFilter === undefined) {
    throw new UsageError(`--alerts ${f.alerts}: {key} must be a whole topic level, e.g. cars/{key}/alerts`);
  }
  const endpoint = parseEndpoint("--source", source);
  if (endpoint.kind !== "mqtt" && endpoint.kind !== "mqtt-server") {
    throw new UsageError(
      "--alerts publishes back over MQTT: it needs an mqtt:// (broker) or mqtt-server:// (devices) --source",
    );
  }
  if (filtersOverlap(alertFilter, endpoint.topic)) {
    throw new UsageError(
      `--alerts ${f.alerts} lies within the --source filter '${endpoint.topic}': alerts would be read back ` +
        `as events; choose a topic outside it, e.g. cars/{key}/alerts for cars/+/sensors`,
    );
  }
  return { template, on: (on ?? "anomalies") as AlertsOn };
}
