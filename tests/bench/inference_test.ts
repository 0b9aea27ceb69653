import assert from "node:assert/strict";
import {
  benchInference,
  type BenchProgress,
  percentile,
  randomRows,
  type Scorer,
  summarize,
  tileRows,
} from "../../src/bench/inference.ts";

Deno.test("percentile is nearest-rank: p50 of 1..10 is 5, p99 is 10, p0 the minimum", () => {
  const values = Float64Array.from({ length: 10 }, (_, i) => i + 1);
  assert.equal(percentile(values, 50), 5);
  assert.equal(percentile(values, 90), 9);
  assert.equal(percentile(values, 99), 10);
  assert.equal(percentile(values, 100), 10);
  assert.equal(percentile(values, 0), 1);
  assert.equal(percentile([7], 99), 7);
  assert.ok(Number.isNaN(percentile([], 50)));
  // 1000 values: p99 is the 990th, not the maximum.
  const thousand = Float64Array.from({ length: 1000 }, (_, i) => i);
  assert.equal(percentile(thousand, 99), 989);
});

Deno.test("summarize sorts the latencies and derives rows, rows/s, p50, p99, max and mean", () => {
  const latencies = [5, 1, 3, 2, 4, 100, 2, 3, 1, 4]; // ms, unsorted
  const r = summarize(64, latencies, 0.5);
  assert.equal(r.batchSize, 64);
  assert.equal(r.calls, 10);
  assert.equal(r.rows, 640);
  assert.equal(r.rowsPerSecond, 1280);
  assert.equal(r.latencyMs.p50, 3);
  assert.equal(r.latencyMs.p99, 100);
  assert.equal(r.latencyMs.max, 100);
  assert.equal(r.latencyMs.mean, 12.5);
  // Sorting must be numeric, not lexicographic (Array#sort would put 100 before 2).
  assert.equal(summarize(1, [100, 20, 3], 1).latencyMs.p50, 20);
});

Deno.test("randomRows is repeatable per seed and in [0, 1); tileRows repeats rows to the size asked", () => {
  const a = randomRows(100, 3, 7);
  assert.deepEqual(a, randomRows(100, 3, 7));
  assert.notDeepEqual(a, randomRows(100, 3, 8));
  assert.ok(a.every((v) => v >= 0 && v < 1));
  assert.ok(new Set(a).size > 250, "values vary");

  const rows = Float32Array.of(1, 2, 3, 4); // two rows of width 2
  const tiled = tileRows(rows, 2, 5);
  assert.deepEqual(Array.from(tiled), [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4]);
  assert.equal(tileRows(rows, 2, 2), rows, "enough rows: the same array");
});

/** A scorer that records the rows it was given and takes `costMs` of a fake clock per call. */
function fakeScorer(width: number, costMs: (rows: number) => number) {
  let clock = 0;
  const calls: { rows: number; first: number; length: number }[] = [];
  const scorer: Scorer = {
    width,
    score(input, rows) {
      calls.push({ rows, first: input[0], length: input.length });
      clock += costMs(rows);
      return Promise.resolve(new Float32Array(rows));
    },
  };
  return { scorer, calls, now: () => clock };
}

Deno.test("benchInference measures each batch size for the duration after a warm-up, on different rows", async () => {
  // Cost: 1 ms per call + 0.01 ms per row.
  const { scorer, calls, now } = fakeScorer(2, (rows) => 1 + rows * 0.01);
  const pool = Float32Array.from({ length: 2 * 1000 }, (_, i) => Math.floor(i / 2)); // row r holds r, r
  const progress: BenchProgress[] = [];
  const results = await benchInference(scorer, pool, {
    batchSizes: [1, 100],
    durationMs: 100,
    warmupMs: 10,
    now,
    progressEveryMs: 20,
    onProgress: (p) => progress.push(p),
  });
  assert.deepEqual(results.map((r) => r.batchSize), [1, 100]);
  // Batch 1: 1.01 ms per call → 100 ms is reached after 100 calls (99 × 1.01 < 100).
  assert.equal(results[0].calls, 100);
  assert.ok(Math.abs(results[0].latencyMs.p50 - 1.01) < 1e-9);
  assert.ok(Math.abs(results[0].rowsPerSecond - 1 / 1.01e-3) < 1e-6);
  // Batch 100: 2 ms per call → 50 calls, 50,000 rows/s.
  assert.equal(results[1].calls, 50);
  assert.equal(results[1].rows, 5000);
  assert.ok(Math.abs(results[1].rowsPerSecond - 50_000) < 1e-6);
  assert.ok(Math.abs(results[1].latencyMs.max - 2) < 1e-9);

  // Warm-up calls come first and are not counted: 10 for batch 1 (10 × 1.01 ≥ 10), 5 for batch 100.
  const batch1 = calls.filter((c) => c.rows === 1);
  assert.equal(batch1.length, 10 + 100);
  assert.equal(calls.filter((c) => c.rows === 100).length, 5 + 50);
  // Each call gets exactly its rows, and successive calls see different rows of the pool.
  assert.ok(calls.every((c) => c.length === c.rows * 2));
  assert.deepEqual(batch1.slice(0, 3).map((c) => c.first), [0, 1, 2]);
  const batch100 = calls.filter((c) => c.rows === 100);
  assert.deepEqual(batch100.slice(0, 3).map((c) => c.first), [0, 100, 200]);
  // Offsets wrap within the pool: 901 possible starts for batch 100 out of 1000 rows.
  assert.equal(batch100[10].first, (10 * 100) % 901);

  assert.deepEqual(
    progress.filter((p) => p.phase !== "measuring").map((p) =>
      `${p.batchSize} ${p.phase} ${p.index}/${p.of}`
    ),
    ["1 warm-up 0/2", "1 done 0/2", "100 warm-up 1/2", "100 done 1/2"],
  );
  const measuring = progress.filter((p) => p.phase === "measuring" && p.batchSize === 1);
  assert.ok(measuring.length >= 4 && measuring.length <= 5, `${measuring.length} progress reports`);
});

Deno.test("benchInference measures at least one call however short the duration, and refuses a batch beyond the pool", async () => {
  const { scorer, now } = fakeScorer(1, () => 5);
  const [r] = await benchInference(scorer, new Float32Array(8), {
    batchSizes: [8],
    durationMs: 0,
    warmupMs: 0,
    now,
  });
  assert.equal(r.calls, 1);
  assert.equal(r.latencyMs.p99, 5);
  await assert.rejects(
    benchInference(scorer, new Float32Array(8), { batchSizes: [9], durationMs: 1, warmupMs: 0, now }),
    /batch size 9 exceeds the 8 rows given/,
  );
});
