/**
 * Writes a copy of a model with an `edgeinfer.baseline` (the drift watch's reference; README, Drift watch)
 * computed from a file of healthy events (JSON lines) and the model's own scores of them — for a model
 * trained without one (scripts/train/train.py writes it itself), or to take another healthy fleet as the
 * reference, without retraining. Same bins as train.py: 10 quantile bins per feature and for the score.
 *
 *   deno run -A main.ts simulate --healthy --cars 100 --count 60000 --seed 2 --rate 0 --interval 1 \
 *     --quiet --target file:/tmp/healthy.jsonl
 *   deno run -A scripts/add_baseline.ts --model models/car-anomaly.onnx --healthy /tmp/healthy.jsonl \
 *     --out /tmp/car-anomaly-baseline.onnx [--bins 10]
 */
import { parseArgs } from "node:util";
import { Model } from "../src/model/model.ts";
import { baselineOf, DEFAULT_BASELINE_BINS, withMetadata } from "../src/model/baseline.ts";
import { locateModel } from "../src/model/locate.ts";
import { DeviceFeatureState } from "../src/features/state.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    healthy: { type: "string" },
    out: { type: "string" },
    bins: { type: "string", default: String(DEFAULT_BASELINE_BINS) },
  },
});
if (!values.model || !values.healthy || !values.out) {
  console.error("usage: add_baseline.ts --model PATH --healthy EVENTS.jsonl --out PATH [--bins 10]");
  Deno.exit(2);
}
const bins = Number(values.bins);
if (!Number.isInteger(bins) || bins < 2) {
  console.error(`--bins must be an integer >= 2, got '${values.bins}'`);
  Deno.exit(2);
}

const model = await Model.load(values.model);
const features = model.features;
if (!features) {
  console.error(`--model '${values.model}' has no edgeinfer.features metadata: its input fields are unknown`);
  Deno.exit(2);
}
const lines = (await Deno.readTextFile(values.healthy)).split("\n").filter((l) => l.trim() !== "");
const width = model.width;
const rows = new Float32Array(lines.length * width);
// A model with per-device features: their columns as `edgeinfer run` computes them, in the file's order.
const device = model.deviceFeatures &&
  new DeviceFeatureState(model.deviceFeatures, { maxDevices: Number.MAX_SAFE_INTEGER, idleSeconds: 1e9 });
lines.forEach((line, r) => {
  const event = JSON.parse(line) as Record<string, number>;
  features.forEach((name, c) => rows[r * width + c] = Number(event[name]));
  const reason = device?.compute(event, rows, r * width + features.length);
  if (reason !== undefined) {
    console.error(`--healthy '${values.healthy}' line ${r + 1}: ${reason}`);
    Deno.exit(2);
  }
});
const scores = new Float32Array(lines.length);
const chunk = 8192;
for (let start = 0; start < lines.length; start += chunk) {
  const n = Math.min(chunk, lines.length - start);
  scores.set(await model.score(rows.slice(start * width, (start + n) * width), n), start);
}
await model.close();
// The readings' bins and the score's (the drift watch leaves the per-device columns out: README, Drift watch).
const baseline = baselineOf(features, rows, lines.length, scores, bins, width);
const bytes = withMetadata(
  await Deno.readFile(locateModel(values.model)),
  "edgeinfer.baseline",
  JSON.stringify(baseline),
);
await Deno.writeFile(values.out, bytes);
console.error(
  `add_baseline: ${values.out}: ${features.length} features and the score, ${bins} bins each, from ` +
    `${lines.length} healthy events of ${values.healthy}`,
);
