/**
 * The per-device feature spec a model declares in its `edgeinfer.device_features` metadata (README,
 * Per-device features). The training script reads the same JSON (scripts/train/car_features.json for
 * the car model) and writes it into the model, so the definitions exist once; src/features/state.ts
 * and scripts/train/device_features.py implement the three operations the same way, and
 * tests/integration/feature_parity_test.ts holds them to it.
 */

/**
 * - `mean`: the device's exponentially weighted mean of the field, over event time with time constant
 *   `seconds`, including this reading.
 * - `delta`: this reading's value minus that mean before this reading (the device's own baseline).
 * - `slope`: the field's rate of change per second (reading to reading), exponentially weighted the same way.
 */
export const DEVICE_FEATURE_OPS = ["mean", "delta", "slope"] as const;
export type DeviceFeatureOp = typeof DEVICE_FEATURE_OPS[number];

export interface DeviceFeature {
  /** The input column's name. */
  name: string;
  op: DeviceFeatureOp;
  /** The event field it is computed from (a number). */
  field: string;
  /** Time constant, in seconds of event time. */
  seconds: number;
}

export interface DeviceFeatureSpec {
  /** Event field naming the device (string or number). */
  key: string;
  /** Event field holding the reading's timestamp (a number). */
  time: string;
  /** Unit of `time`: epoch milliseconds (default) or seconds. */
  timeUnit: "ms" | "s";
  /** Columns appended after the model's edgeinfer.features, in this order. */
  features: DeviceFeature[];
}

/**
 * Validates the metadata's JSON. Throws an Error whose message names the offending part (the caller
 * wraps it in a UsageError naming the model).
 */
export function parseDeviceFeatureSpec(value: string): DeviceFeatureSpec {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw new Error("is not JSON");
  }
  return readSpec(parsed);
}

export function readSpec(parsed: unknown): DeviceFeatureSpec {
  if (!isObject(parsed)) throw new Error("is not a JSON object");
  const { key, time, time_unit: timeUnit = "ms", features } = parsed;
  if (typeof key !== "string" || key === "") {
    throw new Error("needs 'key': the event field naming the device");
  }
  if (typeof time !== "string" || time === "") {
    throw new Error("needs 'time': the event field holding the reading's timestamp");
  }
  if (timeUnit !== "ms" && timeUnit !== "s") {
    throw new Error(`has time_unit ${JSON.stringify(timeUnit)}; use "ms" or "s"`);
  }
  if (!Array.isArray(features) || features.length === 0) {
    throw new Error("needs 'features': a non-empty list");
  }
  const names = new Set<string>();
  const list = features.map((f, i): DeviceFeature => {
    const where = `features[${i}]`;
    if (!isObject(f)) throw new Error(`has ${where} that is not an object`);
    const { name, op, field, seconds } = f;
    if (typeof name !== "string" || name === "") throw new Error(`has ${where} without a 'name'`);
    if (names.has(name)) throw new Error(`names feature '${name}' twice`);
    names.add(name);
    if (!DEVICE_FEATURE_OPS.includes(op as DeviceFeatureOp)) {
      throw new Error(
        `has ${where} ('${name}') with op ${JSON.stringify(op)}; use one of ${DEVICE_FEATURE_OPS.join(", ")}`,
      );
    }
    if (typeof field !== "string" || field === "") {
      throw new Error(`has ${where} ('${name}') without a 'field'`);
    }
    if (typeof seconds !== "number" || !(seconds > 0) || !Number.isFinite(seconds)) {
      throw new Error(`has ${where} ('${name}') whose 'seconds' is not a positive number`);
    }
    return { name, op: op as DeviceFeatureOp, field, seconds };
  });
  return { key, time, timeUnit, features: list };
}

/** The spec as stored in metadata (field order fixed): two equal specs give the same string. */
export function specJson(spec: DeviceFeatureSpec): string {
  return JSON.stringify({
    key: spec.key,
    time: spec.time,
    time_unit: spec.timeUnit,
    features: spec.features.map((f) => ({ name: f.name, op: f.op, field: f.field, seconds: f.seconds })),
  });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
