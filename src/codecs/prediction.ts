import type { Origin, OutRecord } from "../pipeline/types.ts";
import type { DecodedMeta } from "./decoder.ts";
import type { DeviceAlerts } from "../alerts/hysteresis.ts";

/** Names a --passthrough field may not take: they are the record's own. */
export const RECORD_FIELDS = ["key", "id", "score", "anomaly", "threshold", "model", "ts"];

export interface PredictionEncoderOptions {
  modelName: string;
  modelVersion: string;
  threshold: number | undefined;
  passthrough: string[];
  /**
   * The Kafka headers edgeinfer-source and edgeinfer-model on every prediction (default true). They cost
   * ~20 % of Kafka → Kafka throughput with @platformatic/kafka (README, Performance).
   */
  traceHeaders?: boolean;
  /**
   * --alert-hysteresis: each record updates its device's alert state (shared by every encoder of the
   * pipeline, across model swaps) and carries it as "alert" after "threshold".
   */
  deviceAlerts?: DeviceAlerts;
}

/** The "alert" field of a device whose alert is closed (the reading that closed it: changed). */
const ALERT_CLOSED = `,"alert":{"open":false,"changed":false}`;
const ALERT_CLOSING = `,"alert":{"open":false,"changed":true}`;

/** Shared by every record without trace headers (frozen: nothing may add to it). */
const NO_HEADERS = Object.freeze({}) as Record<string, string>;

/**
 * Builds the output record of one prediction:
 * {"key":…,"id":…,"score":…,"anomaly":…,"threshold":…,"model":{"name":…,"version":…},"ts":…, …passthrough}
 * The constant parts are serialised once; per event only the variable parts are.
 */
export class PredictionEncoder {
  private readonly modelJson: string;
  private readonly thresholdJson: string;
  private readonly passthroughKeys: string[];
  private readonly modelHeader: string;

  constructor(private readonly options: PredictionEncoderOptions) {
    this.modelJson = JSON.stringify({ name: options.modelName, version: options.modelVersion });
    this.thresholdJson = options.threshold === undefined ? "" : `,"threshold":${options.threshold}`;
    this.passthroughKeys = options.passthrough.map((name) => `,${JSON.stringify(name)}:`);
    this.modelHeader = options.modelVersion
      ? `${options.modelName}:${options.modelVersion}`
      : options.modelName;
  }

  encode(
    meta: DecodedMeta,
    transportKey: string | undefined,
    origin: Origin,
    score: number,
    ts: number,
  ): OutRecord {
    const key = meta.key ?? transportKey;
    let value = `{"key":${key === undefined ? "null" : JSON.stringify(key)}`;
    if (meta.id !== undefined) value += `,"id":${JSON.stringify(meta.id)}`;
    value += `,"score":${score}`;
    const threshold = this.options.threshold;
    const anomaly = threshold !== undefined && score > threshold;
    if (threshold !== undefined) value += `,"anomaly":${anomaly}${this.thresholdJson}`;
    let alert: boolean | undefined;
    const deviceAlerts = this.options.deviceAlerts;
    if (deviceAlerts !== undefined) {
      // Records without a key share one state.
      const device = deviceAlerts.observe(key ?? "", anomaly, ts);
      const changed = deviceAlerts.changed;
      if (device.open) value += `,"alert":{"open":true,"since":${device.since},"changed":${changed}}`;
      else value += changed ? ALERT_CLOSING : ALERT_CLOSED;
      alert = device.open || changed;
    }
    value += `,"model":${this.modelJson},"ts":${ts}`;
    const passthrough = meta.passthrough;
    if (passthrough !== undefined) {
      for (let i = 0; i < passthrough.length; i++) {
        const field = passthrough[i];
        if (field !== undefined) value += this.passthroughKeys[i] + JSON.stringify(field);
      }
    }
    value += "}";
    const headers = this.options.traceHeaders === false
      ? NO_HEADERS
      : { "edgeinfer-source": describeOrigin(origin), "edgeinfer-model": this.modelHeader };
    return { key, value, headers, anomaly, alert };
  }
}

/** `kafka:<topic>/<partition>/<offset>`, `mqtt:<topic>` or `file:<path>:<line>`. */
export function describeOrigin(origin: Origin): string {
  switch (origin.kind) {
    case "kafka":
      return `kafka:${origin.topic}/${origin.partition}/${origin.offset}`;
    case "mqtt":
      return `mqtt:${origin.topic}`;
    case "file":
      return `file:${origin.path}:${origin.line}`;
  }
}
