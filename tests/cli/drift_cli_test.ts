/**
 * Drift watch, file → file: the car model with a baseline added by scripts/add_baseline.ts from a healthy fleet;
 * a healthy fleet of other cars (another seed) is silent, the same fleet 8 °C hotter (simulate --shift) is not.
 */
import assert from "node:assert/strict";
import { PERMISSIONS, runCli } from "./run_cli.ts";

const ROOT = new URL("../../", import.meta.url);
const dir = await Deno.makeTempDir({ prefix: "edgeinfer-drift-" });
const HEALTHY = ["simulate", "--healthy", "--rate", "0", "--interval", "1", "--quiet"];

async function simulate(file: string, args: string[]): Promise<string> {
  const path = `${dir}/${file}`;
  const result = await runCli([...HEALTHY, ...args, "--target", `file:${path}`]);
  assert.equal(result.code, 0, result.stderr);
  return path;
}

/** The shipped car model with an edgeinfer.baseline from 300 healthy cars (seed 2), made once. */
let modelWithBaseline: Promise<string> | undefined;
function carModelWithBaseline(): Promise<string> {
  return modelWithBaseline ??= (async () => {
    const healthy = await simulate("baseline.jsonl", ["--cars", "300", "--count", "30000", "--seed", "2"]);
    const out = `${dir}/car-anomaly-baseline.onnx`;
    const result = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...PERMISSIONS,
        "--config",
        new URL("deno.json", ROOT).pathname,
        new URL("scripts/add_baseline.ts", ROOT).pathname,
        "--model",
        new URL("models/car-anomaly.onnx", ROOT).pathname,
        "--healthy",
        healthy,
        "--out",
        out,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(result.code, 0, new TextDecoder().decode(result.stderr));
    return out;
  })();
}

async function scoreWithDriftWatch(events: string, extra: string[] = []) {
  const result = await runCli([
    "run",
    "--model",
    await carModelWithBaseline(),
    "--source",
    `file:${events}`,
    "--sink",
    `file:${events}.out`,
    "--key-field",
    "car",
    "--drift-window",
    "10000",
    ...extra,
  ]);
  assert.equal(result.code, 0, result.stderr);
  // The positive signal first: the run ended and wrote its drift summary.
  assert.match(result.stderr, /done: 12000 events acked/);
  const summary = /drift: PSI over the last (\d+) events: (.*)$/m.exec(result.stderr);
  assert.ok(summary, result.stderr);
  const psi = Object.fromEntries(
    summary[2].split(";")[0].split(", ").map((item) => {
      const [name, value] = item.split(" ");
      return [name, Number(value)];
    }),
  );
  return { stderr: result.stderr, psi, events: Number(summary[1]) };
}

const FLEET = ["--cars", "300", "--count", "12000", "--seed", "7"];

Deno.test("drift watch: a healthy fleet of other cars is silent, PSI small everywhere", async () => {
  const { stderr, psi, events } = await scoreWithDriftWatch(await simulate("unshifted.jsonl", FLEET));
  assert.match(stderr, /drift watch on 19 series \(window 10000 events, PSI threshold 0\.2\)/);
  assert.equal(events, 9000);
  assert.equal(Object.keys(psi).length, 19);
  for (const [name, value] of Object.entries(psi)) assert.ok(value < 0.1, `${name}: PSI ${value}\n${stderr}`);
  assert.match(stderr, /; none over 0\.2$/m);
  assert.doesNotMatch(stderr, /has moved from the model's baseline/);
});

Deno.test("drift watch: the same fleet 8 °C hotter is flagged: coolant_temp and the score, once each", async () => {
  const { stderr, psi } = await scoreWithDriftWatch(
    await simulate("shifted.jsonl", [...FLEET, "--shift", "coolant_temp=+8"]),
  );
  assert.ok(psi.coolant_temp > 1, stderr);
  assert.ok(psi.score > 0.2, stderr);
  assert.ok(psi.speed < 0.1, stderr);
  const warnings = stderr.split("\n").filter((l) => /has moved from the model's baseline/.test(l));
  assert.equal(warnings.length, 2, stderr);
  assert.match(
    warnings[0],
    /drift: feature coolant_temp has moved from the model's baseline: PSI \d+\.\d+ > --drift-threshold 0\.2/,
  );
  assert.match(warnings[1], /drift: the score has moved/);
  assert.match(stderr, /; over 0\.2: coolant_temp, score$/m);
});

Deno.test("drift watch: --drift-window 0 turns it off; usage errors name the flag", async () => {
  const events = await simulate("off.jsonl", ["--cars", "10", "--count", "300", "--seed", "9"]);
  const off = await runCli([
    "run",
    "--model",
    await carModelWithBaseline(),
    "--source",
    `file:${events}`,
    "--sink",
    `file:${events}.out`,
    "--drift-window",
    "0",
  ]);
  assert.equal(off.code, 0, off.stderr);
  assert.match(off.stderr, /done: 300 events acked/);
  assert.doesNotMatch(off.stderr, /drift watch|drift:/);
  for (
    const [flag, value, message] of [
      ["--drift-window", "50", /--drift-window must be 0 \(off\) or at least 100 events/],
      ["--drift-threshold", "0", /--drift-threshold must be a PSI > 0/],
      ["--drift-threshold", "x", /--drift-threshold must be a number, got 'x'/],
    ] as const
  ) {
    const bad = await runCli(["run", "--model", "models/car-anomaly.onnx", "--source", "-", flag, value]);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, message);
  }
  const shift = await runCli(["simulate", "--count", "1", "--shift", "coolant=+1"]);
  assert.equal(shift.code, 2, shift.stderr);
  assert.match(shift.stderr, /--shift names 'coolant', not a sensor field/);
});

Deno.test({
  name: "drift watch: temporary files removed",
  fn: () => Deno.remove(dir, { recursive: true }),
});
