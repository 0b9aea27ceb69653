/**
 * Computes and writes a model's `edgeinfer.baseline` metadata (the drift watch's reference; README, Drift
 * watch) the way scripts/train/train.py does: per feature and for the score, the inner edges at the
 * 1/bins … (bins−1)/bins quantiles of healthy data (numpy's linear interpolation, 6 significant digits,
 * repeated edges merged) and the measured fraction of the data in each bin (bin of x = edges <= x).
 */
import onnxProto from "onnx-proto";
import { binOf } from "./drift.ts";

export const DEFAULT_BASELINE_BINS = 10;

/** Bins of one series, as stored in the metadata. */
export interface BaselineBins {
  edges: number[];
  expected: number[];
}

export interface BaselineJson {
  version: 1;
  features: Record<string, BaselineBins>;
  score: BaselineBins;
  events: { features: number; score: number };
}

/** Quantile q (0–1) of sorted values, interpolated linearly between neighbours (numpy's default). */
export function quantile(sorted: Float64Array, q: number): number {
  const h = (sorted.length - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
}

/** Quantile bins of `values` (not empty). */
export function baselineBins(values: ArrayLike<number>, bins = DEFAULT_BASELINE_BINS): BaselineBins {
  const sorted = Float64Array.from(values).sort();
  const edgeSet = new Set<number>();
  for (let i = 1; i < bins; i++) edgeSet.add(Number(quantile(sorted, i / bins).toPrecision(6)));
  const edges = [...edgeSet].sort((a, b) => a - b);
  const edgeArray = Float64Array.from(edges);
  const counts = new Array<number>(edges.length + 1).fill(0);
  for (let i = 0; i < sorted.length; i++) counts[binOf(edgeArray, sorted[i])]++;
  return { edges, expected: counts.map((c) => Math.round((c / sorted.length) * 1e6) / 1e6) };
}

/**
 * The baseline of `rows` rows (row-major, `width` columns of which `features` are the first) and their
 * scores.
 */
export function baselineOf(
  features: readonly string[],
  rows: Float32Array,
  count: number,
  scores: Float32Array,
  bins = DEFAULT_BASELINE_BINS,
  width = features.length,
): BaselineJson {
  const column = new Float64Array(count);
  const byName: Record<string, BaselineBins> = {};
  features.forEach((name, c) => {
    for (let r = 0; r < count; r++) column[r] = rows[r * width + c];
    byName[name] = baselineBins(column, bins);
  });
  return {
    version: 1,
    features: byName,
    score: baselineBins(scores.subarray(0, count), bins),
    events: { features: count, score: count },
  };
}

// deno-lint-ignore no-explicit-any
const { onnx } = onnxProto as any;

/** A copy of the model's bytes whose `key` metadata is `value` (replaced when present). */
export function withMetadata(modelBytes: Uint8Array, key: string, value: string): Uint8Array {
  const model = onnx.ModelProto.decode(modelBytes);
  const props = ((model.metadataProps ?? []) as { key: string; value: string }[]).filter((p) =>
    p.key !== key
  );
  props.push(onnx.StringStringEntryProto.create({ key, value }));
  model.metadataProps = props;
  return onnx.ModelProto.encode(model).finish();
}
