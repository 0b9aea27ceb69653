import assert from "node:assert/strict";
import {
  binOf,
  DriftWatch,
  parseBaseline,
  psi,
  PSI_EPSILON,
  WINDOW_BLOCKS,
  WindowedCounts,
} from "../../src/model/drift.ts";
import { baselineBins, quantile, withMetadata } from "../../src/model/baseline.ts";
import { readOnnxInfo } from "../../src/model/onnx_file.ts";
import { Logger } from "../../src/log.ts";
import { UsageError } from "../../src/errors.ts";
import { linearModel } from "../fixtures/linear_model.ts";

Deno.test("binOf: the number of edges <= x", () => {
  const edges = Float64Array.from([1, 2, 3]);
  assert.deepEqual([-5, 0.99, 1, 1.5, 2, 2.99, 3, 99].map((x) => binOf(edges, x)), [0, 0, 1, 1, 2, 2, 3, 3]);
  assert.equal(binOf(Float64Array.from([2000]), 2000), 1, "a constant feature's values fall in the last bin");
  assert.equal(binOf(new Float64Array(0), 7), 0);
});

Deno.test("psi: 0 for the expected distribution, the textbook value otherwise, finite for empty bins", () => {
  const expected = Float64Array.from([0.9, 0.1]);
  assert.equal(psi([90, 10], 0, 100, expected), 0);
  const value = psi([50, 50], 0, 100, expected);
  assert.ok(Math.abs(value - (-0.4 * Math.log(0.5 / 0.9) + 0.4 * Math.log(5))) < 1e-12);
  // An offset into a larger counts array, and an empty bin floored at PSI_EPSILON.
  const empty = psi([7, 0, 100], 1, 100, expected);
  assert.ok(
    Math.abs(empty - ((PSI_EPSILON - 0.9) * Math.log(PSI_EPSILON / 0.9) + 0.9 * Math.log(10))) < 1e-12,
  );
  assert.equal(psi([0, 0], 0, 0, expected), 0, "no events: no drift");
});

Deno.test("WindowedCounts: the totals hold the last window's events, a block leaving at a time", () => {
  const counts = new WindowedCounts(2, 100); // blocks of 10 events
  const feed = (bin: number, n: number) => {
    for (let i = 0; i < n; i++) {
      counts.add(bin);
      counts.endEvent();
    }
  };
  feed(0, 95);
  assert.equal(counts.completedBlocks, 9);
  // 9 full blocks turned: the oldest (block 0, still empty) left; 90 + 5 events are in the window.
  assert.equal(counts.events, 95);
  assert.deepEqual([...counts.totals], [95, 0]);
  feed(1, 100);
  // 195 events counted; the window holds between 90 and 100 of the last, all of bin 1.
  assert.ok(counts.events >= 90 && counts.events <= 100, `${counts.events}`);
  assert.deepEqual([...counts.totals], [0, counts.events]);
  assert.equal(counts.completedBlocks, 19);
  assert.equal(WINDOW_BLOCKS, 10);
});

function baselineJson() {
  // Feature "a": edges [0], half below and half at or above; the score: edges [1], all below.
  return JSON.stringify({
    features: { a: { edges: [0], expected: [0.5, 0.5] }, ignored: { edges: [], expected: [1] } },
    score: { edges: [1], expected: [0.9, 0.1] },
  });
}

Deno.test("parseBaseline: watched columns by the model's feature order; mistakes name the metadata", () => {
  const baseline = parseBaseline("m.onnx", baselineJson(), ["b", "a"])!;
  assert.deepEqual(baseline.columns.map((c) => [c.name, c.column]), [["a", 1]]);
  assert.deepEqual([...baseline.score!.edges], [1]);
  assert.equal(parseBaseline("m.onnx", undefined, ["a"]), undefined);
  for (
    const bad of [
      "{",
      `{"score":{"edges":[1],"expected":[1]}}`,
      `{"score":{"edges":[2,1],"expected":[0.3,0.3,0.4]}}`,
      `{"features":{"a":{"edges":"x"}}}`,
    ]
  ) {
    assert.throws(() => parseBaseline("m.onnx", bad, ["a"]), (err: Error) => {
      assert.ok(err instanceof UsageError);
      assert.match(err.message, /^--model 'm\.onnx' has an edgeinfer\.baseline that .*; fix or remove it$/);
      return true;
    });
  }
});

Deno.test("DriftWatch: silent in distribution; one warning per crossing, naming the feature; cleared below half", () => {
  const lines: string[] = [];
  const watch = new DriftWatch(
    parseBaseline("m", baselineJson(), ["a"])!,
    1000,
    0.2,
    Logger.messages((m) => lines.push(m)),
  );
  const batch = (rows: number, value: (r: number) => number, score: (r: number) => number) => {
    const input = Float32Array.from({ length: rows }, (_, r) => value(r));
    watch.observe(input, 1, rows, Float32Array.from({ length: rows }, (_, r) => score(r)));
  };
  // In distribution: a alternates -1 / +1 (half each side of 0); the score is mostly below 1.
  for (let i = 0; i < 20; i++) batch(100, (r) => (r % 2 ? 1 : -1), (r) => (r % 10 === 0 ? 2 : 0));
  assert.ok(watch.full);
  assert.deepEqual(lines, []);
  assert.ok(watch.values().every(([, v]) => v < 0.01), JSON.stringify(watch.values()));
  // Shifted: every a is positive: feature a drifts, the score does not.
  for (let i = 0; i < 30; i++) batch(100, () => 1, (r) => (r % 10 === 0 ? 2 : 0));
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(
    lines[0],
    /^drift: feature a has moved from the model's baseline: PSI \d+\.\d{3} > --drift-threshold 0\.2/,
  );
  assert.deepEqual(watch.drifting(), ["a"]);
  const [[, a], [name, score]] = watch.values();
  assert.ok(a > 2, `${a}`);
  assert.equal(name, "score");
  assert.ok(score < 0.01);
  // Back: one info line when PSI falls below 0.1.
  for (let i = 0; i < 30; i++) batch(100, (r) => (r % 2 ? 1 : -1), () => 0.5);
  assert.equal(
    lines.filter((l) => /feature a is back near the baseline/.test(l)).length,
    1,
    lines.join("\n"),
  );
  assert.deepEqual(watch.drifting(), ["score"], "all scores below 1 now: the score's bins moved");
});

Deno.test("baselineBins: numpy's quantiles, merged edges, measured fractions", () => {
  const values = Array.from({ length: 100 }, (_, i) => i);
  assert.equal(quantile(Float64Array.from(values), 0.1), 9.9);
  const bins = baselineBins(values);
  assert.deepEqual(bins.edges, [9.9, 19.8, 29.7, 39.6, 49.5, 59.4, 69.3, 79.2, 89.1]);
  assert.deepEqual(bins.expected, Array(10).fill(0.1));
  assert.deepEqual(baselineBins([2000, 2000, 2000]), { edges: [2000], expected: [0, 1] });
});

Deno.test("withMetadata: a copy of the model with the entry added or replaced", () => {
  const model = linearModel({ features: ["a"], weights: [1], bias: 0, threshold: 3 });
  const once = withMetadata(model, "edgeinfer.baseline", "{}");
  const twice = withMetadata(once, "edgeinfer.baseline", baselineJson());
  const meta = readOnnxInfo(twice).metadata;
  assert.equal(meta["edgeinfer.baseline"], baselineJson());
  assert.equal(meta["edgeinfer.threshold"], "3");
});
