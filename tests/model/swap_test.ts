import assert from "node:assert/strict";
import { PredictionEncoder } from "../../src/codecs/prediction.ts";
import { Model } from "../../src/model/model.ts";
import { incompatibility, ModelSwapper, type ReloadResult } from "../../src/model/swap.ts";
import { linearModel } from "../fixtures/linear_model.ts";
import { Logger } from "../../src/log.ts";

Deno.test("compatibility: same width and features fit; a different width or feature is named", () => {
  assert.equal(
    incompatibility({ width: 2, features: ["a", "b"] }, { width: 2, features: ["a", "b"] }),
    undefined,
  );
  assert.equal(
    incompatibility({ width: 2, features: undefined }, { width: 2, features: ["x", "y"] }),
    undefined,
  );
  assert.equal(
    incompatibility({ width: 2, features: ["a", "b"] }, { width: 3, features: ["a", "b", "c"] }),
    "input width 3 differs from the running model's 2",
  );
  assert.match(
    incompatibility({ width: 2, features: ["a", "b"] }, { width: 2, features: ["a", "c"] })!,
    /features a,c differ from the running model's a,b \(column 2: 'c' instead of 'b'\)/,
  );
  assert.match(
    incompatibility({ width: 1, features: ["a"] }, { width: 1, features: undefined })!,
    /names no features/,
  );
});

async function swapper() {
  const first = await Model.fromBytes(
    linearModel({ features: ["a"], weights: [1], bias: 0, version: "1" }),
    "v1",
  );
  const logs: string[] = [];
  const events: string[] = [];
  const encoderFor = (m: Model) =>
    new PredictionEncoder({
      modelName: m.name,
      modelVersion: m.version,
      threshold: m.threshold,
      passthrough: [],
    });
  const s = new ModelSwapper(first, {}, encoderFor, Logger.messages((line) => logs.push(line)));
  s.listen({
    modelLoaded: (m) => events.push(`loaded ${m.name} ${m.version} ${m.sha256.length}`),
    modelReload: (result: ReloadResult, reason?: string) =>
      events.push(`reload ${result}${reason ? " (reason)" : ""}`),
  });
  return { s, logs, events };
}

const meta = { passthrough: undefined } as never;
const origin = { kind: "file", path: "x", line: 1 } as const;

Deno.test("swapper: a compatible model is swapped in; a batch that took the old one finishes with it", async () => {
  const { s, logs, events } = await swapper();
  const batch = s.acquire();
  const result = await s.offer(
    linearModel({ features: ["a"], weights: [1], bias: 100, version: "2" }),
    "v2.onnx",
  );
  assert.equal(result, "ok");
  assert.equal(s.current.version, "2");
  // The batch in progress still scores and names version 1; it was not released under it.
  const [old] = await batch.model.score(Float32Array.of(5), 1);
  assert.equal(old, 5);
  assert.match(batch.encoder.encode(meta, "k", origin, old, 1).value, /"version":"1"/);
  s.release(batch);
  const next = s.acquire();
  assert.equal((await next.model.score(Float32Array.of(5), 1))[0], 105);
  assert.match(next.encoder.encode(meta, "k", origin, 105, 1).value, /"version":"2"/);
  s.release(next);
  assert.deepEqual(events, ["loaded linear 1 64", "loaded linear 2 64", "reload ok"]);
  assert.match(logs[0], /^model swapped: linear v1 → linear v2 \(sha256 [0-9a-f]{12}…, from v2.onnx\)/);
  s.close();
});

Deno.test("swapper: corrupt, incompatible and unchanged models leave the running one, with one line each", async () => {
  const { s, logs, events } = await swapper();
  assert.equal(await s.offer(new TextEncoder().encode("garbage"), "bad.onnx"), "failed");
  assert.equal(
    await s.offer(linearModel({ features: ["a", "b"], weights: [1, 1], bias: 0, version: "3" }), "wide.onnx"),
    "refused",
  );
  assert.equal(
    await s.offer(linearModel({ features: ["a"], weights: [1], bias: 0, version: "1" }), "same"),
    "unchanged",
  );
  assert.equal(await s.reloadFile("/nonexistent/model.onnx"), "failed");
  assert.equal(s.current.version, "1");
  assert.deepEqual(events.slice(1), [
    "reload failed (reason)",
    "reload refused (reason)",
    "reload failed (reason)",
  ]);
  assert.equal(logs.length, 3);
  assert.match(
    logs[0],
    /^model reload failed: 'bad.onnx' is not an ONNX model .*; still scoring with linear v1$/,
  );
  assert.match(
    logs[1],
    /^model reload refused: 'wide.onnx' \(linear v3\) does not fit: input width 2 differs from the running model's 1; still scoring with linear v1$/,
  );
  assert.match(logs[2], /^model reload failed: cannot read \/nonexistent\/model.onnx/);
  for (const line of logs) assert.doesNotMatch(line, /\n/);
  s.close();
});
