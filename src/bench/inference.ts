/**
 * Inference throughput and per-call latency of a model, per batch size, on this machine: what
 * `edgeinfer bench` measures without --source. The model is called the way the pipeline calls it
 * (Model.score: one float32 tensor of `batch` rows, the score output read back), one call at a time.
 */

/** What is measured: Model, or a stand-in in tests. */
export interface Scorer {
  readonly width: number;
  score(input: Float32Array, rows: number): Promise<Float32Array>;
}

/** The figures of one batch size. */
export interface BatchResult {
  batchSize: number;
  /** Calls measured (after the warm-up). */
  calls: number;
  rows: number;
  seconds: number;
  rowsPerSecond: number;
  /** Per-call latency in milliseconds: nearest-rank percentiles, maximum and mean. */
  latencyMs: { p50: number; p99: number; max: number; mean: number };
}

export interface InferenceBenchOptions {
  batchSizes: number[];
  /** Measuring time per batch size; at least one call is always measured. */
  durationMs: number;
  /** Calls made before measuring, per batch size, for this long (at least one call). */
  warmupMs: number;
  /** Called about every `progressEveryMs` while measuring, and once when a batch size is done. */
  onProgress?: (progress: BenchProgress) => void;
  progressEveryMs?: number;
  /** The clock (ms); tests pass a fake one. */
  now?: () => number;
}

export interface BenchProgress {
  batchSize: number;
  /** 0-based position of this batch size in the list, and the list's length. */
  index: number;
  of: number;
  phase: "warm-up" | "measuring" | "done";
  calls: number;
  elapsedMs: number;
  durationMs: number;
}

/**
 * Nearest-rank percentile (`p` in 0..100) of values sorted ascending: the smallest value with at
 * least p % of the values at or below it. NaN for no values.
 */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** The figures of one batch size from its per-call latencies (ms) and the measured wall time. */
export function summarize(batchSize: number, latenciesMs: ArrayLike<number>, seconds: number): BatchResult {
  const sorted = Float64Array.from(latenciesMs).sort();
  const calls = sorted.length;
  let sum = 0;
  for (let i = 0; i < calls; i++) sum += sorted[i];
  const rows = calls * batchSize;
  return {
    batchSize,
    calls,
    rows,
    seconds,
    rowsPerSecond: seconds > 0 ? rows / seconds : 0,
    latencyMs: {
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      max: calls === 0 ? NaN : sorted[calls - 1],
      mean: calls === 0 ? NaN : sum / calls,
    },
  };
}

/**
 * `rows` rows of `width` random values in [0, 1), the same for the same seed (mulberry32): models
 * scale their inputs inside the graph, and a dense network's speed does not depend on the values.
 */
export function randomRows(rows: number, width: number, seed = 1): Float32Array {
  const out = new Float32Array(rows * width);
  let state = seed >>> 0;
  for (let i = 0; i < out.length; i++) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  return out;
}

/** `rows` (row-major, `width` per row) repeated until there are at least `minRows` rows. */
export function tileRows(rows: Float32Array, width: number, minRows: number): Float32Array {
  const have = rows.length / width;
  if (have >= minRows) return rows;
  if (have === 0) throw new Error("tileRows: no rows to repeat");
  const out = new Float32Array(Math.ceil(minRows / have) * have * width);
  for (let at = 0; at < out.length; at += rows.length) out.set(rows, at);
  return out;
}

/**
 * Measures each batch size in turn: a warm-up, then calls for `durationMs`. Call k scores the
 * `batch` rows of `pool` starting at row (k × batch) mod (pool rows − batch + 1), a view (no copy
 * inside the timed loop), so successive calls see different rows when the pool has them.
 * `pool` must hold at least as many rows as the largest batch size (see tileRows).
 */
export async function benchInference(
  model: Scorer,
  pool: Float32Array,
  options: InferenceBenchOptions,
): Promise<BatchResult[]> {
  const now = options.now ?? (() => performance.now());
  const width = model.width;
  const poolRows = Math.floor(pool.length / width);
  const progressEvery = options.progressEveryMs ?? 250;
  const results: BatchResult[] = [];
  for (const [index, batch] of options.batchSizes.entries()) {
    if (!(Number.isInteger(batch) && batch >= 1)) throw new Error(`batch size ${batch} is not >= 1`);
    if (batch > poolRows) throw new Error(`batch size ${batch} exceeds the ${poolRows} rows given`);
    const starts = poolRows - batch + 1;
    let k = 0;
    const input = () => {
      const start = ((k++ * batch) % starts) * width;
      return pool.subarray(start, start + batch * width);
    };
    const report = (phase: BenchProgress["phase"], calls: number, elapsedMs: number) =>
      options.onProgress?.({
        batchSize: batch,
        index,
        of: options.batchSizes.length,
        phase,
        calls,
        elapsedMs,
        durationMs: options.durationMs,
      });

    report("warm-up", 0, 0);
    const warmupStart = now();
    do await model.score(input(), batch); while (now() - warmupStart < options.warmupMs);

    const latencies: number[] = [];
    const start = now();
    let nextProgress = start + progressEvery;
    let end = start;
    do {
      const t0 = now();
      await model.score(input(), batch);
      end = now();
      latencies.push(end - t0);
      if (end >= nextProgress) {
        report("measuring", latencies.length, end - start);
        nextProgress = end + progressEvery;
      }
    } while (end - start < options.durationMs);
    const result = summarize(batch, latencies, (end - start) / 1000);
    results.push(result);
    report("done", result.calls, end - start);
  }
  return results;
}
