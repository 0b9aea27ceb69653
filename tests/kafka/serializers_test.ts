import assert from "node:assert/strict";
import { HeaderEncoder, recordSerializers } from "../../src/kafka/client.ts";

Deno.test("HeaderEncoder encodes headers as UTF-8 and reuses the bytes of a value that did not change", () => {
  const encoder = new HeaderEncoder();
  const text = (m: Map<Buffer, Buffer> | undefined) =>
    [...m!].map(([k, v]) => [k.toString("utf-8"), v.toString("utf-8")]);
  const first = encoder.encode({ "edgeinfer-source": "kafka:in/0/1", "edgeinfer-model": "mödel:1" });
  assert.deepEqual(text(first), [["edgeinfer-source", "kafka:in/0/1"], ["edgeinfer-model", "mödel:1"]]);
  const second = encoder.encode({ "edgeinfer-source": "kafka:in/0/2", "edgeinfer-model": "mödel:1" });
  assert.deepEqual(text(second), [["edgeinfer-source", "kafka:in/0/2"], ["edgeinfer-model", "mödel:1"]]);
  const [[, firstModel]] = [...first!].slice(1);
  const [[, secondModel]] = [...second!].slice(1);
  assert.equal(secondModel, firstModel, "the same Buffer for the unchanged value");
  assert.equal(encoder.encode({}), undefined, "no headers: no map");
  // Many different header names do not grow it without bound, and still encode right.
  for (let i = 0; i < 200; i++) assert.deepEqual(text(encoder.encode({ [`h${i}`]: "v" })), [[`h${i}`, "v"]]);
});

Deno.test("recordSerializers: string key and value, headers passed through as encoded", () => {
  assert.equal(recordSerializers.value("{}")!.toString("utf-8"), "{}");
  assert.equal(recordSerializers.key(undefined), undefined);
  const bytes = Buffer.from("x");
  assert.equal(recordSerializers.headerValue(bytes), bytes);
});
