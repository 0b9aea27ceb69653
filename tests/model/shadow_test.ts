import assert from "node:assert/strict";
import { PredictionEncoder } from "../../src/codecs/prediction.ts";
import { emptyMeta } from "../../src/codecs/decoder.ts";
import { Model } from "../../src/model/model.ts";
import { Shadow, ShadowAgreement } from "../../src/model/shadow.ts";
import { Logger } from "../../src/log.ts";
import type { OutRecord, SourceEvent } from "../../src/pipeline/types.ts";
import { linearModel } from "../fixtures/linear_model.ts";

Deno.test("agreement: identical scores agree fully, correlation 1, no difference", () => {
  const a = new ShadowAgreement();
  const scores = [0.1, 0.7, 0.3, 0.9, 0.5];
  a.add(scores, scores, scores.length, 0.6, 0.6);
  assert.equal(a.compared, 5);
  assert.equal(a.bothAnomalous, 2);
  assert.equal(a.disagreements, 0);
  assert.equal(a.agreementRatio, 1);
  assert.ok(Math.abs(a.correlation! - 1) < 1e-12);
  assert.equal(a.meanAbsoluteDifference, 0);
});

Deno.test("agreement: known disagreements, shifted scores correlate 1, opposite ones -1", () => {
  // Production score a, shadow a + 10, both with threshold 50: a in (40, 50] is shadow-only.
  const production = [10, 39, 40, 41, 45, 50, 51, 90];
  const shadow = production.map((x) => x + 10);
  const a = new ShadowAgreement();
  a.add(production, shadow, production.length, 50, 50);
  assert.equal(a.compared, 8);
  assert.equal(a.shadowOnly, 3); // 41, 45, 50
  assert.equal(a.productionOnly, 0);
  assert.equal(a.bothAnomalous, 2); // 51, 90
  assert.equal(a.agreementRatio, 5 / 8);
  assert.ok(Math.abs(a.correlation! - 1) < 1e-12);
  assert.equal(a.meanAbsoluteDifference, 10);

  const opposite = new ShadowAgreement();
  opposite.add([1, 2, 3], [3, 2, 1], 3, 2.5, 2.5);
  assert.ok(Math.abs(opposite.correlation! + 1) < 1e-12);
  assert.equal(opposite.productionOnly, 1);
  assert.equal(opposite.shadowOnly, 1);
});

Deno.test("agreement: non-finite pairs are left out; too few or constant scores give no correlation", () => {
  const a = new ShadowAgreement();
  assert.equal(a.agreementRatio, undefined);
  assert.equal(a.correlation, undefined);
  a.add([1, NaN, 3], [1, 2, Infinity], 3, undefined, undefined);
  assert.equal(a.compared, 1);
  assert.equal(a.correlation, undefined);
  a.add([1, 1], [2, 3], 2, undefined, undefined);
  assert.equal(a.correlation, undefined); // production constant
  assert.equal(a.agreementRatio, 1); // no thresholds: nothing is anomalous for either
});

Deno.test("agreement: the streaming correlation matches the two-pass one on many scores", () => {
  const x: number[] = [];
  const y: number[] = [];
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let i = 0; i < 10_000; i++) {
    const v = 1000 + random();
    x.push(v);
    y.push(0.5 * v + 0.2 * random());
  }
  const a = new ShadowAgreement();
  for (let i = 0; i < x.length; i += 256) {
    const n = Math.min(256, x.length - i);
    a.add(x.slice(i, i + n), y.slice(i, i + n), n, undefined, undefined);
  }
  const mean = (v: number[]) => v.reduce((s, e) => s + e, 0) / v.length;
  const mx = mean(x), my = mean(y);
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < x.length; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
    syy += (y[i] - my) ** 2;
  }
  assert.ok(Math.abs(a.correlation! - sxy / Math.sqrt(sxx * syy)) < 1e-4);
});

function events(n: number): SourceEvent[] {
  return Array.from({ length: n }, (_, i) => ({
    payload: new Uint8Array(),
    key: `k${i}`,
    receivedAt: 0,
    origin: { kind: "file", path: "x", line: i + 1 },
    ack() {},
  }));
}

function encoderFor(m: Model) {
  return new PredictionEncoder({
    modelName: m.name,
    modelVersion: m.version,
    threshold: m.threshold,
    passthrough: [],
  });
}

Deno.test("shadow: scores a copy of the rows (the buffer may change at once), records to its sink", async () => {
  const model = await Model.fromBytes(
    linearModel({ features: ["a"], weights: [1], bias: 10, threshold: 50, name: "lin", version: "2" }),
    "shadow.onnx",
  );
  const sent: OutRecord[] = [];
  const shadow = new Shadow(
    model,
    encoderFor(model),
    {
      description: "test sink",
      send: (r) => (sent.push(...r), Promise.resolve()),
      close: () => Promise.resolve(),
    },
    Logger.messages(() => {}),
  );
  const input = new Float32Array([30, 45, 60]);
  shadow.offer({
    input,
    rows: 3,
    productionScores: new Float32Array([30, 45, 60]),
    productionThreshold: 50,
    metas: [emptyMeta(), emptyMeta(), emptyMeta()],
    events: events(3),
  });
  input.fill(-1000); // the next batch reuses the buffer
  await shadow.close(10_000);
  assert.equal(shadow.agreement.compared, 3);
  assert.equal(shadow.agreement.shadowOnly, 1);
  assert.deepEqual(sent.map((r) => JSON.parse(r.value).score), [40, 55, 70]);
  assert.deepEqual(JSON.parse(sent[0].value).model, { name: "lin", version: "2" });
  assert.match(
    shadow.describe(),
    /^shadow lin v2: 3 compared, agreement 66\.7 %, 1 disagreements \(1 shadow-only/,
  );
});

Deno.test("shadow: behind by more than its pending bound, batches are skipped and counted", async () => {
  const model = await Model.fromBytes(linearModel({ features: ["a"], weights: [1], bias: 0 }), "s.onnx");
  let release!: () => void;
  const blocked = new Promise<void>((resolve) => release = resolve);
  const shadow = new Shadow(
    model,
    encoderFor(model),
    { description: "slow sink", send: () => blocked, close: () => Promise.resolve() },
    Logger.messages(() => {}),
    2,
  );
  for (let i = 0; i < 5; i++) {
    shadow.offer({
      input: new Float32Array([1, 2]),
      rows: 2,
      productionScores: [1, 2],
      productionThreshold: undefined,
      metas: [emptyMeta(), emptyMeta()],
      events: events(2),
    });
  }
  assert.equal(shadow.pendingBatches, 2);
  assert.equal(shadow.skipped, 6);
  release();
  await shadow.close(10_000);
  assert.equal(shadow.agreement.compared, 4);
});

Deno.test("shadow: a model that throws is dropped with one line; later batches are counted as dropped", async () => {
  const model = await Model.fromBytes(
    linearModel({ features: ["a"], weights: [1], bias: 0, failsToScore: true }),
    "broken.onnx",
  );
  const lines: string[] = [];
  const shadow = new Shadow(model, encoderFor(model), undefined, Logger.messages((m) => lines.push(m)));
  const batch = {
    input: new Float32Array([1, 2]),
    rows: 2,
    productionScores: [1, 2],
    productionThreshold: undefined,
    metas: [emptyMeta(), emptyMeta()],
    events: events(2),
  };
  shadow.offer(batch);
  while (shadow.pendingBatches > 0) await new Promise((r) => setTimeout(r, 1));
  shadow.offer(batch);
  await shadow.close(10_000);
  assert.equal(lines.length, 1);
  assert.match(
    lines[0],
    /^shadow model linear v1 dropped: scoring failed: model output 'score' has 4 values/,
  );
  assert.equal(shadow.droppedEvents, 4);
  assert.equal(shadow.agreement.compared, 0);
});

Deno.test("shadow: a sink failing for good drops the shadow; an unfinished one does not hold the end", async () => {
  const model = await Model.fromBytes(linearModel({ features: ["a"], weights: [1], bias: 0 }), "s.onnx");
  const lines: string[] = [];
  const failing = new Shadow(
    model,
    encoderFor(model),
    {
      description: "bad sink",
      send: () => Promise.reject(new Error("disk full")),
      close: () => Promise.resolve(),
    },
    Logger.messages((m) => lines.push(m)),
  );
  const batch = {
    input: new Float32Array([1, 2]),
    rows: 2,
    productionScores: [1, 2],
    productionThreshold: undefined,
    metas: [emptyMeta(), emptyMeta()],
    events: events(2),
  };
  failing.offer(batch);
  await failing.close(10_000);
  assert.deepEqual(lines, [
    "shadow model linear v1 dropped: --shadow-sink failed: disk full; production scoring goes on without it",
  ]);
  assert.equal(failing.agreement.compared, 2);

  const stuck = new Shadow(
    await Model.fromBytes(linearModel({ features: ["a"], weights: [1], bias: 0 }), "s.onnx"),
    encoderFor(model),
    { description: "stuck sink", send: () => new Promise(() => {}), close: () => new Promise(() => {}) },
    Logger.messages((m) => lines.push(m)),
  );
  stuck.offer(batch);
  const started = performance.now();
  await stuck.close(50);
  assert.ok(performance.now() - started < 2000);
  assert.match(lines[1], /dropped: 1 shadow batches still under way at the end/);
});
