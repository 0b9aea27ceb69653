/**
 * `simulate --shift`: a fleet that has moved from the one a model was trained on — a sensor bias, a hotter
 * climate — as a list of per-feature changes applied to every generated reading, after the fleet's own
 * dynamics (so failures, ground truth and the random stream are those of the unshifted fleet).
 *
 *   coolant_temp=+8            add 8 to every coolant_temp (also =-3)
 *   battery_voltage=*0.95      multiply every battery_voltage by 0.95
 */
import { UsageError } from "../errors.ts";
import { type CarEvent, type Feature, FEATURES } from "./fleet.ts";

export interface FeatureShift {
  feature: Feature;
  /** "+": add `value` (a negative value subtracts); "*": multiply by it. */
  op: "+" | "*";
  value: number;
}

/** Parses `feature=+N,feature=*F,…`; a mistake is a UsageError naming --shift and the right form. */
export function parseShift(spec: string): FeatureShift[] {
  const shifts: FeatureShift[] = [];
  for (const item of spec.split(",").map((s) => s.trim()).filter((s) => s.length > 0)) {
    const m = /^([a-z0-9_]+)=([+*-])\s*([0-9.eE+-]+)$/.exec(item);
    const value = m ? Number(m[2] === "-" ? `-${m[3]}` : m[3]) : NaN;
    if (!m || !Number.isFinite(value)) {
      throw new UsageError(
        `--shift item '${item}' must be FEATURE=+N, FEATURE=-N or FEATURE=*F, e.g. coolant_temp=+8,battery_voltage=*0.95`,
      );
    }
    if (!(FEATURES as readonly string[]).includes(m[1])) {
      throw new UsageError(
        `--shift names '${m[1]}', not a sensor field; the fields are: ${FEATURES.join(", ")}`,
      );
    }
    shifts.push({ feature: m[1] as Feature, op: m[2] === "*" ? "*" : "+", value });
  }
  if (shifts.length === 0) throw new UsageError(`--shift needs at least one FEATURE=+N or FEATURE=*F`);
  return shifts;
}

/** Applies the shifts to one reading in place (values rounded to 4 decimals, like the readings' own). */
export function applyShift(event: CarEvent, shifts: readonly FeatureShift[]): void {
  for (const { feature, op, value } of shifts) {
    const x = event[feature];
    event[feature] = Math.round((op === "+" ? x + value : x * value) * 1e4) / 1e4;
  }
}

/** `coolant_temp +8, battery_voltage ×0.95`, for the start line. */
export function describeShift(shifts: readonly FeatureShift[]): string {
  return shifts.map((s) => `${s.feature} ${s.op === "*" ? "×" : s.value >= 0 ? "+" : ""}${s.value}`).join(
    ", ",
  );
}
