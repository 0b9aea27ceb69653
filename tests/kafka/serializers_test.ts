import assert from "node:assert/strict";
import { recordSerializers } from "../../src/kafka/client.ts";

Deno.test("recordSerializers encode header strings as UTF-8, reusing the bytes of repeated ones", () => {
  const { headerKey, headerValue, value, key } = recordSerializers();
  const first = headerKey!("edgeinfer-model");
  assert.equal(first!.toString("utf-8"), "edgeinfer-model");
  assert.equal(headerKey!("edgeinfer-model"), first, "the same Buffer for a repeated string");
  // Many unique values (the per-record source header) do not grow the cache without bound, and every
  // value still encodes right after the cache starts again.
  for (let i = 0; i < 1000; i++) {
    assert.equal(headerValue!(`kafka:in/0/${i}`)!.toString("utf-8"), `kafka:in/0/${i}`);
  }
  assert.equal(headerValue!("mödel:1")!.toString("utf-8"), "mödel:1");
  assert.equal(headerValue!(undefined), undefined);
  assert.equal(value!("{}")!.toString("utf-8"), "{}");
  assert.equal(key!(undefined), undefined);
});
