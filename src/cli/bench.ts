import * as ort from "onnxruntime-node";
import type { EndToEndResult } from "../bench/end_to_end.ts";
import { type BatchResult, benchInference, randomRows, tileRows } from "../bench/inference.ts";
import { decodeRows, randomEvents, readEventLines, repeatEvents } from "../bench/input.ts";
import type { Decoder } from "../codecs/decoder.ts";
import { DelimitedDecoder } from "../codecs/delimited.ts";
import { JsonDecoder } from "../codecs/json.ts";
import { maskUrl } from "../config/endpoint.ts";
import { UsageError } from "../errors.ts";
import { type Logger, rootLogger } from "../log.ts";
import { Model } from "../model/model.ts";
import { durationFlag, intFlag, listFlag, LOG_FLAGS, logSettings, parseFlags } from "./args.ts";

export const BENCH_HELP = `edgeinfer bench: how fast a model scores on this machine, per batch size

Usage: edgeinfer bench --model PATH [--batch-sizes 1,16,64,256,1024] [--threads N] [--duration D]
                       [--input FILE [--format json|delimited]] [--json]
       edgeinfer bench --model PATH --source URL [--sink URL] [--events N] [...]

Inference (the default): for each batch size, after a warm-up (0.5 s, at most a quarter of
--duration), the model scores one batch after another for --duration, the way 'run' calls it.
Prints rows/s and the per-call latency (p50, p99, max) for each batch size.

End to end (--source): for each batch size, fills the source with --events events, runs
'edgeinfer run --max-events N' from it to --sink, and prints events acknowledged per second (from
the first event to the last ack), batches, the peak in flight and the peak RSS of the run.
  file:<path>   the events are written to <path> (created or truncated)
  kafka://host:port/<topic>
                produced once (acks=all) to a new topic <topic>-<run id> that the broker creates;
                each batch size reads it with a new consumer group. The topic is left on the broker.
  mqtt://host:port/<topic>[?qos=1&version=5&username=…&password-file=…]
                for each batch size a new persistent session subscribes, the events are published
                at QoS 1 and queued by the broker, then 'run' drains them (the broker must queue
                --events messages per client: Mosquitto's max_queued_messages)

Model and events
  --model PATH            ONNX model file (required)
  --threads N             ONNX Runtime intra-op threads, as for 'run' (default 1)
  --input FILE            events to score (one per line; - for stdin), decoded as 'run' does;
                          they are repeated as needed. Default: random values of the model's width
  --format json|delimited the payload format of --input, and of the events of --source (default json)
  --features a,b,c        input field names in tensor column order (default: the model's
                          edgeinfer.features metadata; json only)

Measurement
  --batch-sizes LIST      batch sizes to measure, in order (default 1,16,64,256,1024)
  --duration D            inference: measuring time per batch size (default 3s; 500ms, 10s, 1m)
  --source URL            measure end to end from this source (file:, kafka://, mqtt://, above)
  --sink URL              end to end: where the predictions go (default -: discarded)
  --events N              end to end: events per batch size (default 50000)

Output
  --json                  one JSON object on stdout instead of the table
  --quiet                 no progress line on stderr (= --log-level error)
  --log-format text|json  as for 'edgeinfer run' (also --log-level, --log-timestamps)

Examples
  edgeinfer bench --model models/car-anomaly.onnx
  edgeinfer bench --model models/car-anomaly.onnx --threads 2 --batch-sizes 256,4096 --json
  edgeinfer simulate --count 10000 --rate 0 --quiet --target file:cars.jsonl
  edgeinfer bench --model models/car-anomaly.onnx --input cars.jsonl --duration 5s
  edgeinfer bench --model models/car-anomaly.onnx --input cars.jsonl --batch-sizes 1,256 \\
    --source 'mqtt://127.0.0.1:1883/bench/cars' --sink kafka://127.0.0.1:9092/bench-predictions
`;

const DEFAULT_BATCH_SIZES = [1, 16, 64, 256, 1024];
/** Rows of an --input file used at most (beyond this, more rows add nothing to the measurement). */
const MAX_INPUT_ROWS = 100_000;

export async function benchCommand(argv: string[]): Promise<void> {
  const { values: f } = parseFlags("bench", argv, {
    model: { type: "string" },
    "batch-sizes": { type: "string" },
    threads: { type: "string" },
    duration: { type: "string" },
    input: { type: "string" },
    format: { type: "string", default: "json" },
    features: { type: "string" },
    source: { type: "string" },
    sink: { type: "string" },
    events: { type: "string" },
    json: { type: "boolean", default: false },
    quiet: { type: "boolean", default: false },
    ...LOG_FLAGS,
  });
  rootLogger.configure(logSettings(f));
  if (f.model === undefined) throw new UsageError("bench needs --model PATH (see 'edgeinfer bench --help')");
  if (f.format !== "json" && f.format !== "delimited") {
    throw new UsageError(`--format must be json or delimited, got '${f.format}'`);
  }
  if (f.format === "delimited" && f.features !== undefined) {
    throw new UsageError(`--features applies to --format json only`);
  }
  const batchSizes = batchSizesFlag(f["batch-sizes"]);
  const threads = intFlag("threads", f.threads, 1, 1);
  const endToEnd = f.source !== undefined;
  if (endToEnd && f.duration !== undefined) {
    throw new UsageError(`--duration is for the inference benchmark; with --source, give --events N`);
  }
  if (!endToEnd) {
    for (const flag of ["sink", "events"] as const) {
      if (f[flag] !== undefined) {
        throw new UsageError(`--${flag} needs --source URL (the end-to-end benchmark)`);
      }
    }
  }
  const durationMs = durationFlag("duration", f.duration, 3000);
  if (durationMs < 1) throw new UsageError(`--duration must be at least 1ms, got '${f.duration}'`);
  const events = intFlag("events", f.events, 50_000, 1);
  const features = listFlag(f.features);
  const progress = progressLine(rootLogger);

  const model = await Model.load(f.model, { features, threads });
  let lines: string[] | undefined;
  let decoder: Decoder | undefined;
  try {
    if (f.format === "json" && (f.input !== undefined || endToEnd) && model.features === undefined) {
      throw new UsageError(
        `model '${f.model}' names no input fields (no edgeinfer.features metadata): pass --features a,b,c ` +
          `with its ${model.width} input field names in column order, or use --format delimited`,
      );
    }
    if (f.input !== undefined) {
      lines = await readEventLines(f.input, endToEnd ? Infinity : MAX_INPUT_ROWS);
      decoder = f.format === "json"
        // Per-device columns as `run` computes them (a first reading per device, then its state).
        ? JsonDecoder.forModel(
          { features: model.features!, deviceFeatures: model.deviceFeatures },
          { idField: "id", passthrough: [] },
          { maxDevices: 1_000_000, idleSeconds: 3600 },
        )
        : new DelimitedDecoder(model.width);
    }
    const modelLabel = `${model.name}${model.version ? ` v${model.version}` : ""} (${model.width} features)`;
    const machine = {
      cpus: navigator.hardwareConcurrency,
      os: Deno.build.os,
      arch: Deno.build.arch,
      deno: Deno.version.deno,
      onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
    };
    const modelInfo = { path: f.model, name: model.name, version: model.version, width: model.width };

    if (!endToEnd) {
      let pool: Float32Array;
      let inputLabel = "random rows";
      if (lines !== undefined) {
        const decoded = decodeRows(lines, decoder!, model.width);
        if (decoded.count === 0) {
          const first = decoded.firstRejection!;
          throw new UsageError(
            `--input '${f.input}': no event could be decoded as --format ${f.format} (line ${first.line}: ` +
              `${first.reason})`,
          );
        }
        if (decoded.rejected > 0) {
          rootLogger.warn(
            `bench: ${decoded.rejected} of ${lines.length} input lines skipped (line ` +
              `${decoded.firstRejection!.line}: ${decoded.firstRejection!.reason})`,
          );
        }
        pool = decoded.rows;
        inputLabel = `${decoded.count} rows of ${f.input === "-" ? "stdin" : f.input}`;
      } else {
        pool = randomRows(Math.max(4096, 2 * Math.max(...batchSizes)), model.width);
      }
      pool = tileRows(pool, model.width, Math.max(...batchSizes));
      const warmupMs = Math.min(500, durationMs / 4);
      const results = await benchInference(model, pool, {
        batchSizes,
        durationMs,
        warmupMs,
        onProgress: (p) => {
          if (p.phase === "done") return;
          const at = `bench: batch ${p.batchSize} (${p.index + 1}/${p.of})`;
          progress(
            p.phase === "warm-up"
              ? `${at}: warming up, then measuring for ${formatSeconds(durationMs)}`
              : `${at}: ${(p.elapsedMs / 1000).toFixed(1)} of ${
                (durationMs / 1000).toFixed(1)
              } s, ${p.calls} calls`,
            p.phase === "warm-up",
          );
        },
      });
      progress.clear();
      if (f.json) {
        console.log(JSON.stringify(
          {
            mode: "inference",
            model: modelInfo,
            threads,
            input: lines === undefined
              ? { kind: "random", rows: pool.length / model.width }
              : { kind: "file", path: f.input, format: f.format, rows: pool.length / model.width },
            durationSeconds: durationMs / 1000,
            warmupSeconds: warmupMs / 1000,
            machine,
            results,
          },
          null,
          2,
        ));
      } else {
        console.log(
          `${modelLabel}, ${threads} thread${threads === 1 ? "" : "s"}, ${inputLabel}; ` +
            `${formatSeconds(durationMs)} per batch size after ${formatSeconds(warmupMs)} warm-up; ` +
            `${machine.cpus} CPUs`,
        );
        console.log(inferenceTable(results));
      }
      return;
    }

    // End to end: the events, then one `edgeinfer run` per batch size.
    let payloads: string[];
    if (lines !== undefined) {
      const decoded = decodeRows(lines.slice(0, 10_000), decoder!, model.width);
      if (decoded.rejected > 0) {
        const first = decoded.firstRejection!;
        throw new UsageError(
          `--input '${f.input}' line ${first.line} cannot be scored as --format ${f.format} (${first.reason}); ` +
            `the end-to-end rate would count rejected events`,
        );
      }
      payloads = repeatEvents(lines, events, f.format);
    } else {
      payloads = randomEvents(events, model.width, f.format, model.features, 1, model.deviceFeatures);
    }
    await model.close();
    const sink = f.sink ?? "-";
    // Loaded on use: the inference benchmark needs no Kafka or MQTT client.
    const { benchEndToEnd } = await import("../bench/end_to_end.ts");
    const { source, results } = await benchEndToEnd({
      model: f.model,
      format: f.format,
      features,
      threads,
      source: f.source!,
      sink,
      batchSizes,
      events: payloads,
      onProgress: (line) => progress(`bench: ${line}`, !/acknowledged$/.test(line)),
    });
    progress.clear();
    const input = lines === undefined ? "random events" : `events of ${f.input}`;
    if (f.json) {
      console.log(JSON.stringify(
        {
          mode: "end-to-end",
          model: modelInfo,
          threads,
          source,
          sink: maskUrl(sink),
          input: lines === undefined ? { kind: "random" } : { kind: "file", path: f.input, format: f.format },
          events,
          machine,
          results,
        },
        null,
        2,
      ));
    } else {
      console.log(
        `${modelLabel}, ${threads} thread${threads === 1 ? "" : "s"}; ${source} → ${maskUrl(sink)}; ` +
          `${events} ${input} (${f.format}) per batch size; ${machine.cpus} CPUs`,
      );
      console.log(endToEndTable(results));
      const rejected = results.filter((r) => r.deadLettered > 0);
      if (rejected.length > 0) {
        console.log(
          `warning: ${rejected[0].deadLettered} events were dead-lettered at batch ${
            rejected[0].batchSize
          }: ` +
            `the rate counts events that were not scored`,
        );
      }
    }
  } finally {
    progress.clear();
    await model.close().catch(() => {});
  }
}

function batchSizesFlag(value: string | undefined): number[] {
  if (value === undefined) return DEFAULT_BATCH_SIZES;
  const items = listFlag(value)!;
  if (items.length === 0 || !items.every((s) => /^\d+$/.test(s) && Number(s) >= 1)) {
    throw new UsageError(
      `--batch-sizes must be a comma-separated list of integers >= 1, e.g. 1,16,256, got '${value}'`,
    );
  }
  return items.map(Number);
}

function formatSeconds(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${ms / 1000} s`;
}

const int = (n: number) => Math.round(n).toLocaleString("en-US");
const ms = (n: number) => n.toFixed(3);

/** The inference figures as a table, one row per batch size. */
export function inferenceTable(results: BatchResult[]): string {
  const rows = [["batch", "rows/s", "calls", "p50 ms", "p99 ms", "max ms"]];
  for (const r of results) {
    rows.push([
      String(r.batchSize),
      int(r.rowsPerSecond),
      int(r.calls),
      ms(r.latencyMs.p50),
      ms(r.latencyMs.p99),
      ms(r.latencyMs.max),
    ]);
  }
  return alignRight(rows);
}

/** The end-to-end figures as a table, one row per batch size. */
export function endToEndTable(results: EndToEndResult[]): string {
  const rows = [[
    "batch",
    "events/s",
    "events",
    "seconds",
    "batches",
    "mean batch",
    "peak in flight",
    "peak RSS MB",
  ]];
  for (const r of results) {
    rows.push([
      String(r.batchSize),
      int(r.eventsPerSecond),
      int(r.acked),
      r.seconds.toFixed(2),
      int(r.batches),
      r.meanBatch.toFixed(1),
      `${r.peakInFlightBatches} / ${r.peakInFlightEvents}`,
      r.peakRssMB === null ? "n/a" : r.peakRssMB.toFixed(0),
    ]);
  }
  return alignRight(rows);
}

function alignRight(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => cell.padStart(widths[c])).join("  ")).join("\n");
}

interface ProgressLine {
  /** Shows `text`: rewrites one line on a terminal; elsewhere logs it when `milestone` (not every tick). */
  (text: string, milestone: boolean): void;
  /** Removes the terminal line (before the results are printed). */
  clear(): void;
}

/** The progress line (info): rewritten in place on a terminal, plain milestone lines elsewhere. */
function progressLine(log: Logger): ProgressLine {
  const terminal = log.onTerminal;
  let shown = false;
  const show = (text: string, milestone: boolean) => {
    if (terminal) {
      log.rewrite(text.slice(0, 200));
      shown = true;
    } else if (milestone) {
      log.info(text);
    }
  };
  show.clear = () => {
    if (shown) log.rewrite("");
    shown = false;
  };
  return show;
}
