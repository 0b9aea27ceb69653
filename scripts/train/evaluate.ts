/**
 * Precision / recall / F1 of anomaly flags against the simulator's ground truth, from edgeinfer's
 * own output records. The definitions are those of scripts/train/train.py's `metrics`.
 *
 *   deno run -A main.ts simulate ... --rate 0 --target file:fleet.jsonl
 *   deno run -A main.ts run --model models/car-anomaly.onnx --source file:fleet.jsonl --sink - \
 *     --passthrough failure_occurred,failure_modes --quiet > records.jsonl
 *   deno run -A scripts/train/evaluate.ts records.jsonl [--json]
 *
 * Each record needs `anomaly` (boolean) and the passed-through `failure_occurred` and
 * `failure_modes`. Events are counted one by one:
 * - overall: all events; positive = failure_occurred.
 * - per mode: the healthy events plus the events whose only active failure is that mode (so each
 *   mode's precision is charged with the false alarms on healthy cars), and `recallAny`, the recall
 *   over every event with that mode active, alone or with others.
 */

export const FAILURE_MODES = ["tire_pressure", "shock", "drive_shaft", "overheating", "firmware"] as const;

export interface Counts {
  events: number;
  positives: number;
  tp: number;
  fp: number;
  fn: number;
  /** null when undefined (nothing flagged / no positives). */
  precision: number | null;
  recall: number | null;
  f1: number | null;
}

export interface Metrics {
  overall: Counts;
  /** Share of healthy events flagged. */
  falsePositiveRate: number;
  modes: Record<string, Counts & { recallAny: number | null }>;
}

export interface LabelledFlag {
  anomaly: boolean;
  failure_occurred: boolean;
  failure_modes: readonly string[];
}

class Tally {
  events = 0;
  positives = 0;
  tp = 0;
  fp = 0;
  fn = 0;

  add(flagged: boolean, positive: boolean): void {
    this.events++;
    if (positive) {
      this.positives++;
      if (flagged) this.tp++;
      else this.fn++;
    } else if (flagged) {
      this.fp++;
    }
  }

  counts(): Counts {
    const { tp, fp, fn } = this;
    const precision = tp + fp > 0 ? tp / (tp + fp) : null;
    const recall = tp + fn > 0 ? tp / (tp + fn) : null;
    const f1 = precision === null || recall === null
      ? null
      : precision + recall > 0
      ? (2 * precision * recall) / (precision + recall)
      : 0;
    return {
      events: this.events,
      positives: this.positives,
      tp,
      fp,
      fn,
      precision: round4(precision),
      recall: round4(recall),
      f1: round4(f1),
    };
  }
}

function round4(v: number | null): number | null {
  return v === null ? null : Math.round(v * 10000) / 10000;
}

export function evaluate(records: Iterable<LabelledFlag>): Metrics {
  const overall = new Tally();
  const healthyFlags = new Tally();
  const modes = new Map<string, { only: Tally; anyEvents: number; anyFlagged: number }>();
  for (const mode of FAILURE_MODES) modes.set(mode, { only: new Tally(), anyEvents: 0, anyFlagged: 0 });
  for (const r of records) {
    if (
      typeof r.anomaly !== "boolean" || typeof r.failure_occurred !== "boolean" ||
      !Array.isArray(r.failure_modes)
    ) {
      throw new Error(
        `a record lacks anomaly / failure_occurred / failure_modes (run edgeinfer with ` +
          `--passthrough failure_occurred,failure_modes and a model with a threshold): ${
            JSON.stringify(r).slice(0, 200)
          }`,
      );
    }
    overall.add(r.anomaly, r.failure_occurred);
    if (!r.failure_occurred) healthyFlags.add(r.anomaly, false);
    for (const [mode, m] of modes) {
      if (!r.failure_occurred) m.only.add(r.anomaly, false);
      else if (r.failure_modes.length === 1 && r.failure_modes[0] === mode) m.only.add(r.anomaly, true);
      if (r.failure_modes.includes(mode)) {
        m.anyEvents++;
        if (r.anomaly) m.anyFlagged++;
      }
    }
  }
  const byMode: Metrics["modes"] = {};
  for (const [mode, m] of modes) {
    byMode[mode] = { ...m.only.counts(), recallAny: m.anyEvents ? round4(m.anyFlagged / m.anyEvents) : null };
  }
  return {
    overall: overall.counts(),
    falsePositiveRate: healthyFlags.events
      ? Math.round((healthyFlags.fp / healthyFlags.events) * 1e5) / 1e5
      : 0,
    modes: byMode,
  };
}

/** A markdown table of the metrics (the model card's format). */
export function formatTable(m: Metrics): string {
  const f = (v: number | null) => (v === null ? "n/a" : v.toFixed(4));
  const row = (name: string, c: Counts) =>
    `| ${name} | ${c.positives} | ${f(c.precision)} | ${f(c.recall)} | ${f(c.f1)} |`;
  const lines = [
    "| failure mode | failing readings | precision | recall | F1 |",
    "| --- | ---: | ---: | ---: | ---: |",
    row("**all**", m.overall),
    ...Object.entries(m.modes).map(([mode, c]) => row(mode, c)),
  ];
  return lines.join("\n") +
    `\n\nEvents: ${m.overall.events}; false alarms on healthy readings: ${
      (m.falsePositiveRate * 100).toFixed(3)
    } %.`;
}

async function readLines(path: string): Promise<string[]> {
  const text = path === "-" ? await new Response(Deno.stdin.readable).text() : await Deno.readTextFile(path);
  return text.split("\n").filter((l) => l.trim() !== "");
}

if (import.meta.main) {
  const args = Deno.args.filter((a) => a !== "--json");
  if (args.length !== 1) {
    console.error("usage: deno run -A scripts/train/evaluate.ts <records.jsonl | -> [--json]");
    Deno.exit(2);
  }
  const records = (await readLines(args[0])).map((l) => JSON.parse(l) as LabelledFlag);
  const metrics = evaluate(records);
  console.log(Deno.args.includes("--json") ? JSON.stringify(metrics, null, 2) : formatTable(metrics));
}
