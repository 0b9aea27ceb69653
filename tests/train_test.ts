/**
 * The training pipeline end to end on a tiny fleet (scripts/train.sh --small): it installs its
 * pinned dependencies from PyPI into a cached venv the first time (~20 s), then trains in seconds.
 * When PyPI cannot be reached the test says so and passes without checking anything.
 */
import assert from "node:assert/strict";
import { baselineOf } from "../src/model/baseline.ts";
import { Model } from "../src/model/model.ts";
import { FEATURES } from "../src/sim/fleet.ts";

const ROOT = new URL("../", import.meta.url).pathname;

Deno.test("scripts/train.sh --small writes a model with the edgeinfer metadata that scores raw readings", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgeinfer-train-test-" });
  try {
    const out = `${dir}/m.onnx`;
    const result = await new Deno.Command("bash", {
      args: [`${ROOT}scripts/train.sh`, "--small", "--out", out, "--work-dir", `${dir}/work`],
      cwd: ROOT,
      env: { EDGEINFER_CMD: `${Deno.execPath()} run -A ${ROOT}main.ts` },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(result.stderr);
    if (result.code === 75) {
      console.warn(
        `SKIPPED: scripts/train.sh could not install its Python dependencies from PyPI:\n${stderr}`,
      );
      return;
    }
    assert.equal(result.code, 0, stderr);
    assert.match(stderr, /held-out fleet/);

    const model = await Model.load(out);
    try {
      assert.deepEqual(model.features, [...FEATURES]);
      const spec = model.deviceFeatures!;
      assert.equal(spec.key, "car");
      assert.equal(spec.time, "ts");
      assert.equal(model.width, 18 + spec.features.length);
      assert.equal(model.scoreOutput, "score");
      assert.equal(model.name, "car-anomaly");
      assert.equal(model.version, "2");
      assert.ok(model.threshold !== undefined && model.threshold > 0);
      // Raw readings and per-device columns in, one finite score per row out; outdated firmware scores far
      // above normal, and so does a coolant far above the car's own baseline.
      const derived = spec.features.map(() => 0);
      const healthy = [
        90,
        25,
        20,
        80,
        12.5,
        30,
        60,
        1.9,
        30,
        32,
        32,
        32,
        32,
        0.4,
        0.4,
        0.4,
        0.4,
        2000,
        ...derived,
      ];
      const broken = [...healthy];
      broken[17] = 1000;
      const heating = [...healthy];
      heating[18 + spec.features.findIndex((f) => f.field === "coolant_temp" && f.op === "delta")] = 30;
      const scores = await model.score(new Float32Array([...healthy, ...broken, ...heating]), 3);
      assert.equal(scores.length, 3);
      assert.ok(scores.every(Number.isFinite));
      assert.ok(scores[1] > scores[0] && scores[1] > model.threshold!);
      assert.ok(scores[2] > scores[0] && scores[2] > model.threshold!);

      // The drift baseline: every sensor reading (not the per-device columns) and the score; the readings'
      // bins are those edgeinfer's own code (scripts/add_baseline.ts) computes from the same training fleet.
      const baseline = model.baseline!;
      assert.deepEqual(baseline.columns.map((c) => c.name), [...FEATURES]);
      assert.ok(baseline.score && baseline.score.edges.length > 0);
      const lines = (await Deno.readTextFile(`${dir}/work/train.jsonl`)).split("\n").filter((l) => l !== "");
      const rows = new Float32Array(lines.length * FEATURES.length);
      lines.forEach((line, r) => {
        const event = JSON.parse(line);
        FEATURES.forEach((f, c) => rows[r * FEATURES.length + c] = event[f]);
      });
      const ours = baselineOf([...FEATURES], rows, lines.length, new Float32Array(lines.length));
      for (const column of baseline.columns) {
        assert.deepEqual([...column.bins.edges], ours.features[column.name].edges, column.name);
        assert.deepEqual([...column.bins.expected], ours.features[column.name].expected, column.name);
      }
    } finally {
      await model.close();
    }
    const metrics = JSON.parse(await Deno.readTextFile(`${dir}/m.metrics.json`));
    assert.equal(typeof metrics.threshold, "number");
    assert.ok(metrics.overall.events > 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
