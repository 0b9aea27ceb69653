import assert from "node:assert/strict";
import { deadLetterRecord } from "../../src/codecs/dead_letter.ts";
import { PredictionEncoder } from "../../src/codecs/prediction.ts";

Deno.test("PredictionEncoder writes the documented record, keyed by the decoded key", () => {
  const encoder = new PredictionEncoder({
    modelName: "car-anomaly",
    modelVersion: "3",
    threshold: 0.5,
    passthrough: ["ts_in", "modes"],
  });
  const record = encoder.encode(
    { id: "e1", key: "car-00042", passthrough: [123, ["tire"]] },
    "cars/car-00042/sensors",
    { kind: "mqtt", topic: "cars/car-00042/sensors" },
    0.75,
    1700000000000,
  );
  assert.equal(record.key, "car-00042");
  assert.deepEqual(JSON.parse(record.value), {
    key: "car-00042",
    id: "e1",
    score: 0.75,
    anomaly: true,
    threshold: 0.5,
    model: { name: "car-anomaly", version: "3" },
    ts: 1700000000000,
    ts_in: 123,
    modes: ["tire"],
  });
  assert.deepEqual(record.headers, {
    "edgeinfer-source": "mqtt:cars/car-00042/sensors",
    "edgeinfer-model": "car-anomaly:3",
  });
});

Deno.test("PredictionEncoder falls back to the transport key and omits anomaly without a threshold", () => {
  const encoder = new PredictionEncoder({
    modelName: "m",
    modelVersion: "",
    threshold: undefined,
    passthrough: [],
  });
  const record = encoder.encode(
    { id: undefined, key: undefined, passthrough: undefined },
    "k1",
    { kind: "kafka", topic: "in", partition: 2, offset: "41" },
    0.25,
    5,
  );
  assert.deepEqual(JSON.parse(record.value), {
    key: "k1",
    score: 0.25,
    model: { name: "m", version: "" },
    ts: 5,
  });
  assert.equal(record.headers["edgeinfer-source"], "kafka:in/2/41");
});

Deno.test("deadLetterRecord keeps the original payload and the reason", () => {
  const text = deadLetterRecord(
    new TextEncoder().encode('{"a":'),
    "k",
    { kind: "file", path: "in.jsonl", line: 3 },
    "invalid JSON: x",
    9,
  );
  assert.deepEqual(JSON.parse(text.value), {
    error: "invalid JSON: x",
    source: "file:in.jsonl:3",
    ts: 9,
    payload: '{"a":',
    payload_bytes: 5,
    payload_sha256: "ffb38b22ee3e0ca90325ebce953a9846990f292faf44c50498771602e31cb61f",
  });
  assert.equal(text.headers["edgeinfer-error"], "invalid JSON: x");
  const binary = deadLetterRecord(
    new Uint8Array([0xff, 0x00, 0x41]),
    undefined,
    { kind: "mqtt", topic: "t" },
    "payload is not valid UTF-8",
    9,
  );
  assert.equal(JSON.parse(binary.value).payload_base64, btoa("\xff\x00A"));
});

Deno.test("PredictionEncoder without trace headers gives records with no headers", () => {
  const encoder = new PredictionEncoder({
    modelName: "m",
    modelVersion: "1",
    threshold: undefined,
    passthrough: [],
    traceHeaders: false,
  });
  const origin = { kind: "kafka" as const, topic: "in", partition: 0, offset: "7" };
  const record = encoder.encode({ id: undefined, key: undefined, passthrough: undefined }, "k", origin, 1, 2);
  assert.deepEqual(record.headers, {});
  assert.ok(Object.isFrozen(record.headers), "one shared, frozen empty object");
});
