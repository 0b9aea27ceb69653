/**
 * Drift watch (README, "Drift watch"): how far the events a pipeline scores have moved from the healthy data the
 * model was trained on, per feature and for the score.
 *
 * The model's `edgeinfer.baseline` metadata gives, per feature and for the score, inner bin edges (quantiles of
 * healthy data) and the fraction of healthy data in each bin. The bin of a value x is the number of edges <= x
 * (as scripts/train/train.py counts). edgeinfer counts the bins of the last --drift-window events and reports the
 * population stability index PSI = Σ (a − e)·ln(a / e) over the bins (a: the window's fraction, e: the baseline's,
 * both floored at PSI_EPSILON), a gauge per feature and for the score, and a warning once per crossing of
 * --drift-threshold (cleared below half of it).
 *
 * The window is a ring of WINDOW_BLOCKS blocks of counts: the current block fills, and when it holds
 * window/WINDOW_BLOCKS events the oldest block's counts leave the totals. So the window holds between 9/10 of
 * --drift-window and --drift-window events; memory is blocks × bins × 4 bytes, no allocation per event.
 */
import { UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";

/** Blocks of the sliding window: the oldest tenth leaves at once. */
export const WINDOW_BLOCKS = 10;
/** A bin's fraction is floored at this, so that an empty bin gives a large but finite PSI term. */
export const PSI_EPSILON = 1e-4;
export const DEFAULT_DRIFT_WINDOW = 20_000;
export const DEFAULT_DRIFT_THRESHOLD = 0.2;
/** The name the score's PSI carries beside the features' (edgeinfer_drift_psi{feature="score"}). */
export const SCORE = "score";

/** Bins of one feature (or the score): inner edges in ascending order, and the expected fraction per bin. */
export interface Bins {
  edges: Float64Array;
  expected: Float64Array;
}

/** The model's baseline: bins per watched input column (by column index), and for the score when given. */
export interface DriftBaseline {
  columns: { name: string; column: number; bins: Bins }[];
  score: Bins | undefined;
}

/** Bin of `x`: the number of edges <= x (binary search; a NaN falls in bin 0). */
export function binOf(edges: Float64Array, x: number): number {
  let lo = 0;
  let hi = edges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (edges[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** PSI of `counts[offset .. offset + expected.length)` (out of `total`) against the expected fractions. */
export function psi(
  counts: ArrayLike<number>,
  offset: number,
  total: number,
  expected: Float64Array,
): number {
  if (total <= 0) return 0;
  let sum = 0;
  for (let b = 0; b < expected.length; b++) {
    const a = Math.max(counts[offset + b] / total, PSI_EPSILON);
    const e = Math.max(expected[b], PSI_EPSILON);
    sum += (a - e) * Math.log(a / e);
  }
  return sum;
}

/**
 * Reads `edgeinfer.baseline` (JSON: {"features": {name: {"edges": [...], "expected": [...]}}, "score": {...}}).
 * Features the model does not read are ignored; features without bins are not watched.
 */
export function parseBaseline(
  label: string,
  value: string | undefined,
  features: readonly string[] | undefined,
): DriftBaseline | undefined {
  if (value === undefined) return undefined;
  const fail = (why: string): never => {
    throw new UsageError(`--model '${label}' has an edgeinfer.baseline that ${why}; fix or remove it`);
  };
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    fail("is not JSON");
  }
  if (typeof parsed !== "object" || parsed === null) return fail("is not a JSON object");
  const { features: byName, score } = parsed as { features?: unknown; score?: unknown };
  const columns: DriftBaseline["columns"] = [];
  if (byName !== undefined) {
    if (typeof byName !== "object" || byName === null) return fail("has 'features' that is not an object");
    for (const [name, spec] of Object.entries(byName)) {
      const column = features?.indexOf(name) ?? -1;
      if (column >= 0) columns.push({ name, column, bins: readBins(spec, `features.${name}`, fail) });
    }
    columns.sort((a, b) => a.column - b.column);
  }
  return { columns, score: score === undefined ? undefined : readBins(score, "score", fail) };
}

function readBins(spec: unknown, where: string, fail: (why: string) => never): Bins {
  const { edges, expected } = (spec ?? {}) as { edges?: unknown; expected?: unknown };
  const numbers = (v: unknown) =>
    Array.isArray(v) && v.every((n) => typeof n === "number" && Number.isFinite(n));
  if (!numbers(edges) || !numbers(expected)) {
    return fail(`has ${where} without numeric 'edges' and 'expected'`);
  }
  const e = edges as number[];
  const x = expected as number[];
  if (x.length !== e.length + 1) return fail(`has ${where} with ${e.length} edges but ${x.length} fractions`);
  if (e.some((v, i) => i > 0 && v < e[i - 1])) return fail(`has ${where} with edges out of order`);
  return { edges: Float64Array.from(e), expected: Float64Array.from(x) };
}

/**
 * Bin counts over the last `window` events: WINDOW_BLOCKS blocks of `binCount` counters each, plus their totals.
 * `add` counts into the current block; `endEvent` closes an event and turns the ring when the block is full.
 */
export class WindowedCounts {
  readonly totals: Float64Array;
  private readonly blocks: Uint32Array;
  private readonly blockEvents = new Uint32Array(WINDOW_BLOCKS);
  private readonly blockSize: number;
  private current = 0;
  private inBlock = 0;
  /** Events counted in the totals. */
  events = 0;
  /** Blocks completed since the start (the window is full once WINDOW_BLOCKS - 1 were). */
  completedBlocks = 0;

  constructor(readonly binCount: number, readonly window: number) {
    this.blockSize = Math.max(1, Math.ceil(window / WINDOW_BLOCKS));
    this.blocks = new Uint32Array(WINDOW_BLOCKS * binCount);
    this.totals = new Float64Array(binCount);
  }

  add(bin: number): void {
    this.blocks[this.current * this.binCount + bin]++;
    this.totals[bin]++;
  }

  /** Ends one event; returns true when that filled a block (the window moved on). */
  endEvent(): boolean {
    this.events++;
    this.blockEvents[this.current]++;
    if (++this.inBlock < this.blockSize) return false;
    this.inBlock = 0;
    this.completedBlocks++;
    this.current = (this.current + 1) % WINDOW_BLOCKS;
    // The block now current is the oldest: its counts leave the window.
    const start = this.current * this.binCount;
    for (let b = 0; b < this.binCount; b++) {
      this.totals[b] -= this.blocks[start + b];
      this.blocks[start + b] = 0;
    }
    this.events -= this.blockEvents[this.current];
    this.blockEvents[this.current] = 0;
    return true;
  }
}

/** One watched series: a feature column or the score, its bins, and where its counters start. */
interface Series {
  name: string;
  column: number; // -1: the score
  bins: Bins;
  offset: number;
  psi: number;
  warned: boolean;
}

/**
 * Keeps the window's bin counts from each batch's input rows and scores, and the PSI of each series, updated each
 * time a block fills. Warns through `log` when a series' PSI rises above `threshold`, once, until it falls below
 * half of it.
 */
export class DriftWatch {
  readonly counts: WindowedCounts;
  private readonly series: Series[];
  private readonly scoreSeries: Series | undefined;

  constructor(
    baseline: DriftBaseline,
    readonly window: number,
    readonly threshold: number,
    private readonly log: Logger,
  ) {
    let offset = 0;
    const series: Series[] = [];
    const add = (name: string, column: number, bins: Bins) => {
      const s = { name, column, bins, offset, psi: 0, warned: false };
      offset += bins.expected.length;
      series.push(s);
      return s;
    };
    for (const c of baseline.columns) add(c.name, c.column, c.bins);
    this.scoreSeries = baseline.score && add(SCORE, -1, baseline.score);
    this.series = series;
    this.counts = new WindowedCounts(offset, window);
  }

  /** Names of the watched series, features in column order then "score". */
  get names(): string[] {
    return this.series.map((s) => s.name);
  }

  /** Whether PSI is meaningful yet: the window has been filled once (else it is 0). */
  get full(): boolean {
    return this.counts.completedBlocks >= WINDOW_BLOCKS - 1;
  }

  /** Counts a batch: `rows` rows of `width` columns at the start of `input`, and their scores. */
  observe(input: Float32Array, width: number, rows: number, scores: Float32Array): void {
    const counts = this.counts;
    const series = this.series;
    const score = this.scoreSeries;
    for (let r = 0; r < rows; r++) {
      const base = r * width;
      for (let i = 0; i < series.length; i++) {
        const s = series[i];
        if (s === score) continue;
        counts.add(s.offset + binOf(s.bins.edges, input[base + s.column]));
      }
      if (score) counts.add(score.offset + binOf(score.bins.edges, scores[r]));
      if (counts.endEvent()) this.update();
    }
  }

  /** PSI per series, features in column order then "score" (0 until the window was filled once). */
  values(): [string, number][] {
    return this.series.map((s) => [s.name, s.psi]);
  }

  /** The series whose PSI is over the threshold now. */
  drifting(): string[] {
    return this.series.filter((s) => s.warned).map((s) => s.name);
  }

  private update(): void {
    if (!this.full) return;
    const totals = this.counts.totals;
    const events = this.counts.events;
    for (const s of this.series) {
      s.psi = psi(totals, s.offset, events, s.bins.expected);
      if (!s.warned && s.psi > this.threshold) {
        s.warned = true;
        this.log.warn(
          `drift: ${
            s.name === SCORE ? "the score" : `feature ${s.name}`
          } has moved from the model's baseline: ` +
            `PSI ${s.psi.toFixed(3)} > --drift-threshold ${this.threshold} over the last ${events} events`,
          { feature: s.name, psi: round(s.psi), events },
        );
      } else if (s.warned && s.psi < this.threshold / 2) {
        s.warned = false;
        this.log.info(
          `drift: ${s.name === SCORE ? "the score" : `feature ${s.name}`} is back near the baseline: ` +
            `PSI ${s.psi.toFixed(3)} < ${this.threshold / 2} (half of --drift-threshold)`,
          { feature: s.name, psi: round(s.psi), events },
        );
      }
    }
  }
}

function round(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}
