import assert from "node:assert/strict";
import { deltaModelFile, linearModelFile } from "../fixtures/linear_model.ts";
import { runCli } from "./run_cli.ts";

// Production: score = a, threshold 50. Shadow: score = a + 10, threshold 50. For a = 0 … 99, exactly the
// events with a in (40, 50] (41 … 50: ten) are anomalous for the shadow only; the scores correlate exactly.
const EVENTS = Array.from({ length: 100 }, (_, a) => `{"car":"car-${a % 7}","id":${a},"a":${a}}`);
const production = () =>
  linearModelFile({ features: ["a"], weights: [1], bias: 0, threshold: 50, name: "lin" });
const candidate = (spec: { failsToScore?: boolean; features?: string[] } = {}) =>
  linearModelFile({
    features: spec.features ?? ["a"],
    weights: [1],
    bias: 10,
    threshold: 50,
    name: "lin",
    version: "2",
    failsToScore: spec.failsToScore,
  });

async function run(extra: string[], events = EVENTS) {
  const sink = await Deno.makeTempFile({ suffix: ".jsonl" });
  const result = await runCli(
    [
      "run",
      "--model",
      await production(),
      "--source",
      "-",
      "--key-field",
      "car",
      "--sink",
      `file:${sink}`,
      // Small batches: the shadow sees many of them; it may lag by all of them, so that none is skipped.
      "--batch-size",
      "8",
      "--shadow-max-pending",
      "100",
      ...extra,
    ],
    { stdin: events.join("\n") + "\n" },
  );
  const text = (await Deno.readTextFile(sink)).trim();
  const records = text === "" ? [] : text.split("\n").map((line) => JSON.parse(line));
  return { ...result, records };
}

Deno.test("--shadow-model: agreement figures on a known pair, and the shadow's records in --shadow-sink", async () => {
  const shadowSink = await Deno.makeTempFile({ suffix: ".jsonl" });
  const result = await run(["--shadow-model", await candidate(), "--shadow-sink", `file:${shadowSink}`]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.records.length, 100);
  assert.ok(result.records.every((r) => r.model.version === "1" && r.score === r.id));
  assert.match(result.stderr, /; shadow lin v2 → file:/);
  assert.match(
    result.stderr,
    /shadow lin v2: 100 compared, agreement 90\.0 %, 10 disagreements \(10 shadow-only, 0 production-only\), score correlation 1\.000, mean \|score difference\| 10\n/,
  );
  const shadowed = (await Deno.readTextFile(shadowSink)).trim().split("\n").map((line) => JSON.parse(line));
  assert.equal(shadowed.length, 100);
  shadowed.sort((x, y) => x.id - y.id);
  assert.deepEqual(shadowed[45], {
    key: "car-3",
    id: 45,
    score: 55,
    anomaly: true,
    threshold: 50,
    model: { name: "lin", version: "2" },
    ts: shadowed[45].ts,
  });
  const shadowOnly = shadowed.filter((s) => s.anomaly && !result.records.find((r) => r.id === s.id).anomaly);
  assert.deepEqual(shadowOnly.map((s) => s.id), [41, 42, 43, 44, 45, 46, 47, 48, 49, 50]);
});

Deno.test("--shadow-threshold overrides the shadow's own threshold", async () => {
  const result = await run(["--shadow-model", await candidate(), "--shadow-threshold", "60"]);
  assert.equal(result.code, 0, result.stderr);
  // Shadow anomalous for a + 10 > 60, i.e. a > 50: the same events as production.
  assert.match(result.stderr, /shadow lin v2: 100 compared, agreement 100\.0 %, 0 disagreements/);
});

Deno.test("--shadow-model: a shadow that throws is dropped; production completes", async () => {
  for (
    const [extra, reason] of [
      [
        ["--shadow-model", await candidate({ failsToScore: true })],
        /scoring failed: model output 'score' has/,
      ],
    ] as const
  ) {
    const result = await run([...extra]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.records.length, 100, result.stderr);
    assert.match(result.stderr, /done: 100 events acked .* 100 predictions, 49 anomalies/);
    const drops = result.stderr.split("\n").filter((l) => l.includes("dropped:"));
    assert.equal(drops.length, 1, result.stderr);
    assert.match(drops[0], /shadow model lin v2 dropped: /);
    assert.match(drops[0], reason);
    assert.match(result.stderr, /; dropped \(.*\), 100 events not compared/);
  }
});

Deno.test("--shadow-model: an unreachable shadow sink never holds production: batches skipped, the end not delayed", async () => {
  const started = performance.now();
  const result = await run([
    "--shadow-model",
    await candidate(),
    "--shadow-sink",
    "kafka://127.0.0.1:1/shadow", // nothing listens: retried for ever
    "--shadow-max-pending",
    "2",
    "--shutdown-timeout",
    "1s",
  ]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.records.length, 100);
  assert.ok(performance.now() - started < 15_000);
  assert.match(
    result.stderr,
    /shadow lin v2: 16 compared, .* 84 events skipped \(shadow behind\); dropped \(2 shadow batches still under way at the end\)/,
  );
});

Deno.test("--shadow-model: a shadow reading other columns decodes the events itself; known agreement", async () => {
  // Shadow: score = b + 10 with b = 2a: anomalous for a in 21 … 99; production for a in 51 … 99.
  const events = Array.from(
    { length: 100 },
    (_, a) => `{"car":"car-${a % 7}","id":${a},"a":${a},"b":${2 * a}}`,
  );
  const shadowSink = await Deno.makeTempFile({ suffix: ".jsonl" });
  const result = await run([
    "--shadow-model",
    await candidate({ features: ["b"] }),
    "--shadow-sink",
    `file:${shadowSink}`,
  ], events);
  assert.equal(result.code, 0, result.stderr);
  assert.match(
    result.stderr,
    /shadow lin v2 reads other columns than lin v1 \(features b differ .*\): it decodes each event again/,
  );
  assert.match(
    result.stderr,
    /shadow lin v2: 100 compared, agreement 70\.0 %, 30 disagreements \(30 shadow-only, 0 production-only\), score correlation 1\.000/,
  );
  const shadowScores = (await Deno.readTextFile(shadowSink)).trim().split("\n").map((l) =>
    JSON.parse(l).score
  );
  assert.deepEqual(shadowScores.sort((x, y) => x - y), events.map((_, a) => 2 * a + 10));

  // A stateful shadow beside a stateless production model: score = a − the car's previous a (time constant
  // 1 ms: the mean is the previous reading), threshold 5. Per car (a % 7) readings 7 apart: 7, except the
  // first of each car (0). Production flags a in 51 … 99 (all of them 7 for the shadow too); the shadow also
  // flags a in 7 … 50 (44 events).
  const stateful = await deltaModelFile();
  const timed = Array.from(
    { length: 100 },
    (_, a) => `{"car":"car-${a % 7}","id":${a},"a":${a},"ts":${a * 1000}}`,
  );
  const withState = await run(["--shadow-model", stateful], timed);
  assert.equal(withState.code, 0, withState.stderr);
  assert.match(
    withState.stderr,
    /shadow delta v1 reads other columns than lin v1 \(input width 2 differs from the running model's 1\)/,
  );
  assert.match(
    withState.stderr,
    /shadow delta v1: 100 compared, agreement 56\.0 %, 44 disagreements \(44 shadow-only, 0 production-only\)/,
  );
  // Events without the time field the shadow needs are not compared; production scores them all.
  const untimed = await run(["--shadow-model", stateful]);
  assert.equal(untimed.code, 0, untimed.stderr);
  assert.equal(untimed.records.length, 100);
  assert.match(
    untimed.stderr,
    /shadow delta v1: 0 compared.*; 100 events it could not decode \(not compared\)/,
  );
});

Deno.test("--shadow-model: a shadow the events cannot feed is refused at start, naming the difference", async () => {
  const wider = await linearModelFile({
    features: ["a", "b"],
    weights: [1, 1],
    bias: 0,
    name: "lin",
    version: "2",
  });
  const delimited = await runCli([
    "run",
    "--model",
    await production(),
    "--source",
    "-",
    "--format",
    "delimited",
    "--shadow-model",
    wider,
  ]);
  assert.equal(delimited.code, 2);
  assert.match(
    delimited.stderr,
    /--shadow-model '.*' \(lin v2\) does not read the production model's input: input width 2 differs from the running model's 1; a shadow with other columns needs --format json/,
  );
  const missing = await run(["--shadow-model", "/no/such.onnx"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--shadow-model '\/no\/such\.onnx' does not exist/);
  const alone = await runCli([
    "run",
    "--model",
    await production(),
    "--source",
    "-",
    "--shadow-sink",
    "file:/tmp/x.jsonl",
  ]);
  assert.equal(alone.code, 2);
  assert.match(alone.stderr, /--shadow-sink needs --shadow-model PATH/);
});
