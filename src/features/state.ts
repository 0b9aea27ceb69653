/**
 * Per-device state for a model's per-device features (src/features/spec.ts; README, Per-device features).
 *
 * Per device, per feature, at most two float64s (an exponentially weighted mean or rate, and the previous
 * value for a rate) plus the device's newest timestamp: the state does not grow with the readings'
 * rate or the time constants. For a reading x at event time t, with Δt the seconds since the device's
 * newest reading and a = 1 − exp(−Δt / seconds):
 *   mean:  m ← m + a·(x − m), the column is m
 *   delta: the column is x − m, then m ← m + a·(x − m)
 *   slope: r ← r + a·((x − previous x) / Δt − r), the column is r
 * A device's first reading sets m = x, r = 0. A long gap makes a close to 1, so the state refills by itself.
 *
 * Order: a reading whose timestamp is not newer than its device's newest (late, out of order, or a
 * redelivery) is scored against the device's state as it is and does not change it: the past is never
 * rewritten, and a redelivered batch does not count twice. scripts/train/device_features.py does the same,
 * operation for operation (tests/integration/feature_parity_test.ts).
 *
 * Bounds: at most `maxDevices` devices (the least recently seen leaves first), and a device not seen for
 * `idleSeconds` of wall time leaves; a device that comes back starts afresh, as after a restart.
 */
import { F32_LIMIT } from "../codecs/decimal.ts";
import type { DeviceFeatureSpec } from "./spec.ts";

export interface DeviceStateBounds {
  /** Devices kept at most (the config's memory bound). */
  maxDevices: number;
  /** A device with no reading for this long (wall time) is forgotten. */
  idleSeconds: number;
}

export const DEFAULT_DEVICE_STATE_MAX = 100_000;
export const DEFAULT_DEVICE_STATE_IDLE_SECONDS = 3600;

interface Device {
  /** Newest event time, ms. */
  newest: number;
  /** Wall time of the last reading, ms (for the idle expiry). */
  seen: number;
  /** Two slots per feature: [mean or rate, previous value]. */
  values: Float64Array;
}

/** Evictions so far, by reason (metrics). */
export interface DeviceStateCounts {
  devices: number;
  evictedCap: number;
  evictedIdle: number;
  late: number;
}

/** How often (in readings) the wall clock is read for `seen` and the idle expiry. */
const CLOCK_EVERY = 256;

export class DeviceFeatureState {
  /** Insertion order = least recently seen first (a device is moved to the end on each reading). */
  private readonly devices = new Map<string, Device>();
  private readonly fieldNames: string[];
  private readonly ops: number[];
  private readonly taus: Float64Array;
  private readonly scratch: Float64Array;
  private readonly timeScale: number;
  private wall = Date.now();
  private untilClock = CLOCK_EVERY;
  evictedCap = 0;
  evictedIdle = 0;
  /** Readings older than their device's newest (scored, not counted into the state). */
  late = 0;

  constructor(readonly spec: DeviceFeatureSpec, readonly bounds: DeviceStateBounds) {
    this.fieldNames = spec.features.map((f) => f.field);
    this.ops = spec.features.map((f) => f.op === "mean" ? 0 : f.op === "delta" ? 1 : 2);
    this.taus = Float64Array.from(spec.features, (f) => f.seconds);
    this.scratch = new Float64Array(2 * spec.features.length);
    this.timeScale = spec.timeUnit === "s" ? 1000 : 1;
  }

  /** Number of derived columns. */
  get width(): number {
    return this.ops.length;
  }

  get size(): number {
    return this.devices.size;
  }

  counts(): DeviceStateCounts {
    return {
      devices: this.devices.size,
      evictedCap: this.evictedCap,
      evictedIdle: this.evictedIdle,
      late: this.late,
    };
  }

  /**
   * Writes the reading's derived columns into `row[offset…]` and updates its device's state. Returns the
   * reason when the reading cannot be used (no key, no timestamp, a field that is not a number); the
   * state is then unchanged.
   */
  compute(fields: Record<string, unknown>, row: Float32Array, offset: number): string | undefined {
    const spec = this.spec;
    const rawKey = fields[spec.key];
    if (typeof rawKey !== "string" && typeof rawKey !== "number") {
      return `missing device field '${spec.key}' (the model's per-device features are kept per device)`;
    }
    const rawTime = fields[spec.time];
    if (typeof rawTime !== "number" || !Number.isFinite(rawTime)) {
      return rawTime === undefined || rawTime === null
        ? `missing time field '${spec.time}' (the model's per-device features use event time)`
        : `time field '${spec.time}' is not a number: ${JSON.stringify(rawTime).slice(0, 40)}`;
    }
    const t = rawTime * this.timeScale;
    if (--this.untilClock === 0) this.tick();
    const key = typeof rawKey === "string" ? rawKey : String(rawKey);
    const device = this.devices.get(key);
    const ops = this.ops;
    const names = this.fieldNames;
    const out = this.scratch;
    const n = ops.length;

    if (device === undefined) {
      for (let i = 0; i < n; i++) {
        const x = fields[names[i]];
        if (typeof x !== "number") return notANumber(names[i], x);
        if (!(x < F32_LIMIT && x > -F32_LIMIT)) return outOfRange(spec.features[i].name, x);
        out[2 * i] = ops[i] === 2 ? 0 : x;
        out[2 * i + 1] = x;
        row[offset + i] = ops[i] === 0 ? x : 0;
      }
      this.admit(key, t, out);
      return undefined;
    }

    const values = device.values;
    const dt = (t - device.newest) / 1000;
    if (!(dt > 0)) {
      // Not newer than the device's newest reading: scored against the state, which stays as it is.
      for (let i = 0; i < n; i++) {
        const x = fields[names[i]];
        if (typeof x !== "number") return notANumber(names[i], x);
        const m = values[2 * i];
        const v = ops[i] === 1 ? x - m : m;
        if (!(v < F32_LIMIT && v > -F32_LIMIT)) return outOfRange(spec.features[i].name, v);
        row[offset + i] = v;
      }
      if (dt < 0) this.late++;
      this.touch(key, device);
      return undefined;
    }

    const taus = this.taus;
    for (let i = 0; i < n; i++) {
      const x = fields[names[i]];
      if (typeof x !== "number") return notANumber(names[i], x);
      const a = 1 - Math.exp(-dt / taus[i]);
      const s = values[2 * i];
      let v: number;
      if (ops[i] === 2) {
        const rate = (x - values[2 * i + 1]) / dt;
        out[2 * i] = v = s + a * (rate - s);
      } else {
        out[2 * i] = s + a * (x - s);
        v = ops[i] === 0 ? out[2 * i] : x - s;
      }
      out[2 * i + 1] = x;
      if (!(v < F32_LIMIT && v > -F32_LIMIT)) return outOfRange(spec.features[i].name, v);
      row[offset + i] = v;
    }
    values.set(out);
    device.newest = t;
    this.touch(key, device);
    return undefined;
  }

  /** Forgets devices not seen for `idleSeconds` (from the least recently seen; stops at the first kept). */
  expireIdle(now = Date.now()): void {
    const before = now - this.bounds.idleSeconds * 1000;
    for (const [key, device] of this.devices) {
      if (device.seen > before) break;
      this.devices.delete(key);
      this.evictedIdle++;
    }
  }

  private tick(): void {
    this.untilClock = CLOCK_EVERY;
    this.wall = Date.now();
    this.expireIdle(this.wall);
  }

  private touch(key: string, device: Device): void {
    device.seen = this.wall;
    // Move to the end of the map's order (most recently seen).
    this.devices.delete(key);
    this.devices.set(key, device);
  }

  private admit(key: string, t: number, values: Float64Array): void {
    if (this.devices.size >= this.bounds.maxDevices) {
      const oldest = this.devices.keys().next().value;
      if (oldest !== undefined) {
        this.devices.delete(oldest);
        this.evictedCap++;
      }
    }
    this.devices.set(key, { newest: t, seen: this.wall, values: Float64Array.from(values) });
  }
}

function notANumber(field: string, value: unknown): string {
  return value === undefined || value === null
    ? `missing field '${field}' (a per-device feature of the model reads it)`
    : `field '${field}' is not a number: ${JSON.stringify(value).slice(0, 40)}`;
}

function outOfRange(name: string, value: number): string {
  return `per-device feature '${name}' = ${value} is outside the float32 range of the model input`;
}
