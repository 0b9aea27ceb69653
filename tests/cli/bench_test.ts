import assert from "node:assert/strict";
import { parseRunSummary } from "../../src/bench/end_to_end.ts";
import { FEATURES } from "../../src/sim/fleet.ts";
import { type CliResult, runCli } from "./run_cli.ts";

const MODEL = "models/car-anomaly.onnx";
/** bench samples the run's memory with `ps`. */
const hasPs = await new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(Deno.pid)] }).output()
  .then((o) => o.success, () => false);

/** Asserts a usage error: exit 2, one line on stderr matching `message`, nothing on stdout. */
function assertUsageError(result: CliResult, message: RegExp) {
  assert.equal(result.code, 2, `exit code (stderr: ${result.stderr})`);
  assert.equal(result.stdout, "");
  const lines = result.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line of error, got:\n${result.stderr}`);
  assert.match(lines[0], message);
  assert.doesNotMatch(result.stderr, /\s+at .*\.ts:\d+/, "no stack trace");
}

/** Car events as JSON lines: the model's 18 features with plausible values, and an id. */
function carEvents(count: number): string[] {
  return Array.from({ length: count }, (_, i) => {
    // The car model keeps per-device state: each event names its car and carries its time.
    const event: Record<string, number | string> = {
      id: i,
      car: `car-${i % 5}`,
      ts: 1_735_689_600_000 + i * 1000,
    };
    FEATURES.forEach((name, c) => event[name] = 10 + ((i * 7 + c * 13) % 50));
    return JSON.stringify(event);
  });
}

Deno.test("edgeinfer bench names a bad flag and its fix in one line, exit 2", async () => {
  const [help, noModel, badSizes, badDuration, durationWithSource, sinkAlone, stdinSource, badInput] =
    await Promise
      .all([
        runCli(["bench", "--help"]),
        runCli(["bench"]),
        runCli(["bench", "--model", MODEL, "--batch-sizes", "1,0,x"]),
        runCli(["bench", "--model", MODEL, "--duration", "soon"]),
        runCli(["bench", "--model", MODEL, "--source", "file:/tmp/x", "--duration", "1s"]),
        runCli(["bench", "--model", MODEL, "--sink", "-"]),
        runCli(["bench", "--model", MODEL, "--source", "-"]),
        runCli(["bench", "--model", MODEL, "--input", "/no/such/events.jsonl"]),
      ]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--batch-sizes LIST/);
  assert.match(help.stdout, /Examples\n {2}edgeinfer bench --model models\/car-anomaly.onnx\n/);
  assertUsageError(noModel, /bench needs --model PATH \(see 'edgeinfer bench --help'\)/);
  assertUsageError(
    badSizes,
    /--batch-sizes must be a comma-separated list of integers >= 1, e\.g\. 1,16,256, got '1,0,x'/,
  );
  assertUsageError(badDuration, /--duration must be a duration such as 500ms, 10s, 5m or 1h, got 'soon'/);
  assertUsageError(
    durationWithSource,
    /--duration is for the inference benchmark; with --source, give --events N/,
  );
  assertUsageError(sinkAlone, /--sink needs --source URL/);
  assertUsageError(stdinSource, /bench cannot fill --source - \(stdin\); use file:<path>/);
  assertUsageError(badInput, /--input '\/no\/such\/events.jsonl' cannot be read \(no such file\)/);
});

Deno.test("edgeinfer bench --json: rows/s and p50 <= p99 <= max per batch size, in the order given", async () => {
  const result = await runCli([
    "bench",
    "--model",
    MODEL,
    "--batch-sizes",
    "1,64",
    "--duration",
    "0.2s",
    "--json",
  ]);
  assert.equal(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout);
  assert.equal(report.mode, "inference");
  assert.deepEqual(report.model, { path: MODEL, name: "car-anomaly", version: "2", width: 24 });
  assert.equal(report.threads, 1);
  assert.equal(report.durationSeconds, 0.2);
  assert.equal(report.warmupSeconds, 0.05);
  assert.equal(report.input.kind, "random");
  assert.equal(report.machine.cpus, navigator.hardwareConcurrency);
  assert.deepEqual(report.results.map((r: { batchSize: number }) => r.batchSize), [1, 64]);
  for (const r of report.results) {
    assert.ok(r.calls >= 1, `calls ${r.calls}`);
    assert.equal(r.rows, r.calls * r.batchSize);
    assert.ok(r.seconds >= 0.2 && r.seconds < 1, `seconds ${r.seconds}`);
    assert.ok(Math.abs(r.rowsPerSecond - r.rows / r.seconds) < 1e-6 * r.rowsPerSecond);
    const { p50, p99, max, mean } = r.latencyMs;
    assert.ok(p50 > 0 && p50 <= p99 && p99 <= max && mean <= max, JSON.stringify(r.latencyMs));
  }
  // Batching is the point: 64 rows per call score faster than one.
  assert.ok(report.results[1].rowsPerSecond > report.results[0].rowsPerSecond);
  // stderr is not a terminal here: one plain progress line per batch size.
  assert.match(result.stderr, /^edgeinfer: bench: batch 1 \(1\/2\): warming up, then measuring for 200 ms$/m);
  assert.match(result.stderr, /^edgeinfer: bench: batch 64 \(2\/2\): warming up/m);
});

Deno.test("edgeinfer bench --input scores the file's events (same codecs as run) and prints a table", async () => {
  const dir = await Deno.makeTempDir();
  const input = `${dir}/cars.jsonl`;
  await Deno.writeTextFile(input, [...carEvents(40), `{"id": "bad", "speed": "fast"}`].join("\n") + "\n");
  const result = await runCli([
    "bench",
    "--model",
    MODEL,
    "--input",
    input,
    "--batch-sizes",
    "16,100",
    "--duration",
    "100ms",
  ]);
  assert.equal(result.code, 0, result.stderr);
  const lines = result.stdout.trim().split("\n");
  assert.match(
    lines[0],
    /^car-anomaly v2 \(24 features\), 1 thread, 40 rows of .*cars\.jsonl; 100 ms per batch size/,
  );
  assert.match(lines[1], /^batch\s+rows\/s\s+calls\s+p50 ms\s+p99 ms\s+max ms$/);
  assert.match(lines[2], /^\s+16\s+[\d,]+\s+[\d,]+\s+\d+\.\d{3}\s+\d+\.\d{3}\s+\d+\.\d{3}$/);
  assert.match(lines[3], /^\s+100\s/);
  assert.equal(lines.length, 4);
  assert.match(result.stderr, /1 of 41 input lines skipped \(line 41: missing feature 'coolant_temp'\)/);

  const delimited = await runCli(["bench", "--model", MODEL, "--input", input, "--format", "delimited"]);
  assertUsageError(
    delimited,
    /--input '.*cars\.jsonl': no event could be decoded as --format delimited \(line 1: /,
  );
});

Deno.test("edgeinfer bench --source file: --sink file: runs edgeinfer run per batch size and reports its figures", async () => {
  const dir = await Deno.makeTempDir();
  const result = await runCli([
    "bench",
    "--model",
    MODEL,
    "--source",
    `file:${dir}/events.jsonl`,
    "--sink",
    `file:${dir}/predictions.jsonl`,
    "--events",
    "3000",
    "--batch-sizes",
    "1,256",
    "--json",
  ]);
  assert.equal(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout);
  assert.equal(report.mode, "end-to-end");
  assert.equal(report.events, 3000);
  assert.equal(report.source, `file:${dir}/events.jsonl`);
  assert.deepEqual(report.results.map((r: { batchSize: number }) => r.batchSize), [1, 256]);
  for (const r of report.results) {
    assert.equal(r.acked, 3000);
    assert.equal(r.predictions, 3000);
    assert.equal(r.deadLettered, 0);
    assert.ok(r.eventsPerSecond > 0 && r.seconds > 0 && r.wallSeconds > r.seconds);
    if (hasPs) assert.ok(r.peakRssMB > 20 && r.peakRssMB < 2000, `peak RSS ${r.peakRssMB}`);
    else assert.equal(r.peakRssMB, null);
    assert.ok(r.peakInFlightEvents <= r.batchSize * 5);
  }
  assert.equal(report.results[0].batches, 3000, "batch 1: one batch per event");
  assert.ok(report.results[1].batches <= 3000 / 256 + 20, `batch 256: ${report.results[1].batches} batches`);
  // The source file holds the events; the sink got one prediction per event and run.
  const events = (await Deno.readTextFile(`${dir}/events.jsonl`)).trim().split("\n");
  assert.equal(events.length, 3000);
  // id, the car and the time (the model's per-device features need them), and 18 features.
  assert.deepEqual(Object.keys(JSON.parse(events[0])).length, 21, "id, car, ts and 18 features");
  const predictions = (await Deno.readTextFile(`${dir}/predictions.jsonl`)).trim().split("\n");
  assert.equal(predictions.length, 6000);
  assert.equal(typeof JSON.parse(predictions[0]).score, "number");
  assert.match(result.stderr, /bench: batch 256: edgeinfer run file:.* → file:/);
});

Deno.test("parseRunSummary reads run's done line, and nothing from other output", () => {
  const line = "edgeinfer: done: 50000 events acked (193195/s), 50000 predictions, 1234 anomalies, " +
    "0 dead-lettered, 196 batches (mean 255.1), 0 in flight in 0.26 s from the first event; " +
    "peak 4 batches / 1024 events in flight (bound 5 / 1280)";
  assert.deepEqual(parseRunSummary(`edgeinfer: model …\n${line}\n`), {
    acked: 50000,
    eventsPerSecond: 193195,
    predictions: 50000,
    anomalies: 1234,
    deadLettered: 0,
    batches: 196,
    meanBatch: 255.1,
    seconds: 0.26,
    peakInFlightBatches: 4,
    peakInFlightEvents: 1024,
  });
  assert.equal(parseRunSummary("edgeinfer: status: 10 events acked (5/s), 10 predictions"), undefined);
});
