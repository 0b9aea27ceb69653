/**
 * What the model-quality features cost, measured in one run: `edgeinfer run` file → file over the same car
 * fleet with
 *   stateless        models/car-anomaly-v1.onnx (18 readings, no per-device state)
 *   per-device state models/car-anomaly.onnx (v2: the readings and 6 per-device columns, state per car)
 *   v1 + shadow v2   production v1, v2 as --shadow-model (decodes each event again, keeps its own state)
 *   v2 + shadow v2   production v2 with itself as the shadow (same columns: a copy of the batch's rows)
 * in interleaved rounds (the machine's noise spreads over all of them), the drift watch off in all; the rate is the run's own summary
 * (events acknowledged per second from the first event). Then the per-device state's memory: the heap taken
 * by the car model's state for --devices devices, in this process.
 *
 *   deno run -A --v8-flags=--expose-gc scripts/bench_model_quality.ts [--events 300000] [--cars 1000]
 *     [--rounds 5] [--devices 100000]
 */
import { parseArgs } from "node:util";
import { DeviceFeatureState } from "../src/features/state.ts";
import { Model } from "../src/model/model.ts";

const { values: f } = parseArgs({
  args: Deno.args,
  options: {
    events: { type: "string", default: "300000" },
    cars: { type: "string", default: "1000" },
    rounds: { type: "string", default: "5" },
    devices: { type: "string", default: "100000" },
  },
});
const ROOT = new URL("../", import.meta.url).pathname;
const V1 = `${ROOT}models/car-anomaly-v1.onnx`;
const V2 = `${ROOT}models/car-anomaly.onnx`;
const dir = await Deno.makeTempDir({ prefix: "edgeinfer-bench-quality-" });

async function edgeinfer(args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts", ...args],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`edgeinfer ${args.join(" ")}: ${stderr}`);
  return stderr;
}

const fleet = `${dir}/fleet.jsonl`;
console.error(`simulating ${f.events} readings of ${f.cars} cars …`);
await edgeinfer([
  "simulate",
  ...[
    "--cars",
    f.cars!,
    "--count",
    f.events!,
    "--rate",
    "0",
    "--seed",
    "77",
    "--quiet",
    "--target",
    `file:${fleet}`,
  ],
]);

const configs: { name: string; args: string[] }[] = [
  { name: "stateless (v1)", args: ["--model", V1] },
  { name: "per-device state (v2)", args: ["--model", V2] },
  { name: "v1 + shadow v2", args: ["--model", V1, "--shadow-model", V2] },
  { name: "v2 + shadow v2", args: ["--model", V2, "--shadow-model", V2] },
];
const rates = new Map<string, number[]>(configs.map((c) => [c.name, []]));
for (let round = 1; round <= Number(f.rounds); round++) {
  for (const c of configs) {
    const stderr = await edgeinfer([
      "run",
      ...c.args,
      ...["--source", `file:${fleet}`, "--sink", `file:${dir}/out.jsonl`, "--key-field", "car"],
      // v2 carries a drift baseline, v1 none: the drift watch (~0.4 µs per event) is off in all of them.
      ...["--drift-window", "0"],
      // The shadow may lag by many batches without skipping any: every event is compared.
      ...(c.args.includes("--shadow-model") ? ["--shadow-max-pending", "1000"] : []),
    ]);
    const done = /done: (\d+) events acked \((\d+)\/s\)/.exec(stderr);
    if (!done) throw new Error(`no summary: ${stderr}`);
    const skipped = /(\d+) events skipped/.exec(stderr);
    if (skipped) throw new Error(`${c.name}: the shadow skipped ${skipped[1]} events`);
    rates.get(c.name)!.push(Number(done[2]));
    console.error(`round ${round}: ${c.name}: ${done[2]} events/s`);
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = median(rates.get(configs[0].name)!);
console.log(`| configuration | events/s (median of ${f.rounds}) | ratio to stateless | µs per event more |`);
console.log("| --- | ---: | ---: | ---: |");
for (const c of configs) {
  const m = median(rates.get(c.name)!);
  const extra = (1e6 / m - 1e6 / base).toFixed(2);
  console.log(`| ${c.name} | ${m.toLocaleString("en-US")} | ${(m / base).toFixed(2)} | ${extra} |`);
}

// Memory of the state: the car model's spec, one reading each for --devices devices.
const model = await Model.load(V2);
const spec = model.deviceFeatures!;
await model.close();
const gc = (globalThis as { gc?: () => void }).gc;
const devices = Number(f.devices);
const state = new DeviceFeatureState(spec, { maxDevices: devices, idleSeconds: 3600 });
const row = new Float32Array(spec.features.length);
const event: Record<string, unknown> = {};
for (const feature of spec.features) event[feature.field] = 30;
gc?.();
const before = Deno.memoryUsage().heapUsed;
for (let i = 0; i < devices; i++) {
  // A fresh key string per device, as a decoded event brings it.
  event[spec.key] = `car-${String(i).padStart(6, "0")}`;
  event[spec.time] = 1_735_689_600_000 + i;
  state.compute(event, row, 0);
}
gc?.();
const bytes = Deno.memoryUsage().heapUsed - before;
console.log(
  `\nper-device state of ${state.size.toLocaleString("en-US")} devices (${spec.features.length} columns): ` +
    `${(bytes / 1048576).toFixed(1)} MiB of heap, ${Math.round(bytes / devices)} bytes per device` +
    (gc ? "" : " (run with --v8-flags=--expose-gc for a settled figure)"),
);
await Deno.remove(dir, { recursive: true });
