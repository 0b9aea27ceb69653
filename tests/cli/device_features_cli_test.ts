/**
 * Per-device features through `edgeinfer run` (file → file): the state cap, late readings, refusals. The
 * model is linear, so every score can be checked by hand: score = the reading's delta against its device's
 * mean before it (time constant 1 ms: the device's previous reading).
 */
import assert from "node:assert/strict";
import { deltaModelFile } from "../fixtures/linear_model.ts";
import { runCli } from "./run_cli.ts";

const model = deltaModelFile;

async function run(events: object[], extra: string[] = []) {
  const dir = await Deno.makeTempDir();
  const result = await runCli(
    [
      "run",
      "--model",
      await model(),
      "--source",
      "-",
      "--sink",
      `file:${dir}/out.jsonl`,
      "--dlq",
      `file:${dir}/dlq.jsonl`,
      "--passthrough",
      "car,ts:event_ts",
      ...extra,
    ],
    { stdin: events.map((e) => JSON.stringify(e)).join("\n") + "\n" },
  );
  const read = async (name: string) => {
    const text = (await Deno.readTextFile(`${dir}/${name}`).catch(() => "")).trim();
    return text === "" ? [] : text.split("\n").map((l) => JSON.parse(l));
  };
  return { ...result, records: await read("out.jsonl"), dead: await read("dlq.jsonl") };
}

Deno.test("per-device features: scores from each device's own past; late readings scored, state unchanged", async () => {
  const events = [
    { car: "x", ts: 1000, a: 10 },
    { car: "y", ts: 1000, a: 100 },
    { car: "x", ts: 2000, a: 13 }, // 13 - 10
    { car: "y", ts: 2000, a: 90 }, // 90 - 100
    { car: "x", ts: 1500, a: 50 }, // late: 50 - 13, x's state unchanged
    { car: "x", ts: 3000, a: 20 }, // 20 - 13 (not 20 - 50)
  ];
  const { code, stderr, records } = await run(events);
  assert.equal(code, 0, stderr);
  assert.deepEqual(records.map((r) => r.score), [0, 0, 3, -10, 37, 7]);
  assert.match(stderr, /1 per-device features \(state for at most 100000 devices, idle after 3600 s\)/);
  assert.match(
    stderr,
    /per-device features: 2 devices in state; 1 readings older than their device's newest/,
  );
});

Deno.test("per-device features: --device-state-max bounds the devices kept; a forgotten device starts afresh", async () => {
  // Ten cars, twice each: with room for 3, each car has been forgotten when it comes back (delta 0 again).
  const events = [0, 1].flatMap((round) =>
    Array.from({ length: 10 }, (_, c) => ({ car: `c${c}`, ts: 1000 * (round + 1), a: c + 10 * round }))
  );
  const capped = await run(events, ["--device-state-max", "3"]);
  assert.equal(capped.code, 0, capped.stderr);
  assert.deepEqual(capped.records.map((r) => r.score), events.map(() => 0));
  assert.match(
    capped.stderr,
    /per-device features: 3 devices in state \(17 forgotten by --device-state-max, 0 by/,
  );
  // With room for all, the second round is scored against the first.
  const roomy = await run(events);
  assert.deepEqual(roomy.records.slice(10).map((r) => r.score), events.slice(10).map(() => 10));
});

Deno.test("per-device features: a reading without device or time is dead-lettered with the reason", async () => {
  const { code, stderr, records, dead } = await run([
    { car: "x", ts: 1000, a: 1 },
    { ts: 2000, a: 2 },
    { car: "x", a: 3 },
    { car: "x", ts: 3000, a: 4 },
  ]);
  assert.equal(code, 0, stderr);
  assert.deepEqual(records.map((r) => r.score), [0, 3]);
  assert.deepEqual(dead.map((d) => d.error), [
    "missing device field 'car' (the model's per-device features are kept per device)",
    "missing time field 'ts' (the model's per-device features use event time)",
  ]);
});

Deno.test("per-device features: usage errors name the fix", async () => {
  const delimited = await runCli([
    "run",
    "--model",
    "models/car-anomaly.onnx",
    "--source",
    "-",
    "--format",
    "delimited",
  ]);
  assert.equal(delimited.code, 2);
  assert.match(
    delimited.stderr,
    /computes per-device features from named event fields \(edgeinfer.device_features\): use --format json/,
  );
  const bad = await runCli([
    "run",
    "--model",
    "models/car-anomaly.onnx",
    "--source",
    "-",
    "--device-state-max",
    "0",
  ]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--device-state-max must be an integer >= 1, got '0'/);
});
