import { F32_LIMIT } from "./decimal.ts";
import type { DecodedMeta, Decoder } from "./decoder.ts";
import { DeviceFeatureState, type DeviceStateBounds } from "../features/state.ts";
import type { DeviceFeatureSpec } from "../features/spec.ts";

export interface JsonDecoderOptions {
  /** Field names in tensor column order. */
  features: string[];
  /** Field holding the output key (e.g. the device id); unset = transport key. */
  keyField?: string;
  /** Field holding the event id copied to the output's `id`. */
  idField: string;
  /** Fields copied into the output record. */
  passthrough: string[];
  /** The model's per-device features: their columns follow `features` in the row. */
  device?: DeviceFeatureState;
}

/**
 * `--format json`: the payload is a JSON object; features are read by field name. A feature must be
 * a JSON number (JSON.parse already refuses hex, "Infinity", "NaN", "1_000"; a string such as
 * "0x1A" is not a number) that fits the model's float32 input.
 */
export class JsonDecoder implements Decoder {
  constructor(private readonly options: JsonDecoderOptions) {}

  /**
   * The decoder of a model's input: its event fields, then, when it has per-device features, their columns
   * from a state of its own (one per decoder: the state follows the events this decoder sees).
   */
  static forModel(
    model: { features: string[]; deviceFeatures?: DeviceFeatureSpec },
    options: Omit<JsonDecoderOptions, "features" | "device">,
    bounds: DeviceStateBounds,
  ): JsonDecoder {
    const device = model.deviceFeatures && new DeviceFeatureState(model.deviceFeatures, bounds);
    return new JsonDecoder({ ...options, features: model.features, device });
  }

  /** The per-device state, when the model has per-device features. */
  get device(): DeviceFeatureState | undefined {
    return this.options.device;
  }

  decode(text: string, row: Float32Array, offset: number, meta: DecodedMeta): string | undefined {
    let event: unknown;
    try {
      event = JSON.parse(text);
    } catch (err) {
      return `invalid JSON: ${(err as Error).message}`;
    }
    if (typeof event !== "object" || event === null || Array.isArray(event)) {
      return `expected a JSON object, found ${Array.isArray(event) ? "an array" : typeof event}`;
    }
    const fields = event as Record<string, unknown>;
    const features = this.options.features;
    for (let i = 0; i < features.length; i++) {
      const value = fields[features[i]];
      if (typeof value !== "number") {
        return value === undefined || value === null
          ? `missing feature '${features[i]}'`
          : `feature '${features[i]}' is not a number: ${JSON.stringify(value).slice(0, 40)}`;
      }
      if (!(value < F32_LIMIT && value > -F32_LIMIT)) return outOfRange(features[i], value);
      row[offset + i] = value;
    }

    const { keyField, idField, passthrough } = this.options;
    if (keyField !== undefined) {
      const key = fields[keyField];
      if (typeof key !== "string" && typeof key !== "number") return `missing key field '${keyField}'`;
      meta.key = String(key);
    } else {
      meta.key = undefined;
    }
    const id = fields[idField];
    meta.id = typeof id === "string" || typeof id === "number" ? id : undefined;
    meta.passthrough = passthrough.length === 0 ? undefined : passthrough.map((name) => fields[name]);
    // Last: a reading refused above must not move its device's state.
    return this.options.device?.compute(fields, row, offset + features.length);
  }
}

/** Why feature `name` = `value` (±Infinity, or beyond float32; JSON.parse never gives NaN) is refused. */
function outOfRange(name: string, value: number): string {
  return Number.isFinite(value)
    ? `feature '${name}' = ${value} is outside the float32 range of the model input (±3.4e38)`
    : `feature '${name}' is not a finite number: its JSON numeral overflows a double (parsed as ${value})`;
}
