import assert from "node:assert/strict";
import { emptyMeta } from "../../src/codecs/decoder.ts";
import { JsonDecoder } from "../../src/codecs/json.ts";

const decoder = new JsonDecoder({
  features: ["speed", "temp"],
  keyField: "car",
  idField: "id",
  passthrough: ["ts"],
});

Deno.test("JsonDecoder writes features in column order at the row offset and reads key, id, passthrough", () => {
  const row = new Float32Array(6).fill(-1);
  const meta = emptyMeta();
  const error = decoder.decode(
    '{"temp":90.5,"speed":42,"car":"car-00007","id":17,"ts":1700000000000}',
    row,
    2,
    meta,
  );
  assert.equal(error, undefined);
  assert.deepEqual([...row], [-1, -1, 42, 90.5, -1, -1]);
  assert.equal(meta.key, "car-00007");
  assert.equal(meta.id, 17);
  assert.deepEqual(meta.passthrough, [1700000000000]);
});

Deno.test("JsonDecoder explains why a payload cannot be scored", () => {
  const row = new Float32Array(2);
  const cases: [string, RegExp][] = [
    ["{not json", /^invalid JSON: /],
    ["[1,2]", /expected a JSON object, found an array/],
    ['"text"', /expected a JSON object, found string/],
    ['{"speed":1,"car":"a"}', /missing feature 'temp'/],
    ['{"speed":1,"temp":null,"car":"a"}', /missing feature 'temp'/],
    ['{"speed":"fast","temp":1,"car":"a"}', /feature 'speed' is not a number: "fast"/],
    ['{"speed":1,"temp":2}', /missing key field 'car'/],
  ];
  for (const [payload, reason] of cases) {
    assert.match(decoder.decode(payload, row, 0, emptyMeta()) ?? "(no error)", reason, payload);
  }
});

Deno.test("JsonDecoder without a key field leaves the transport key in charge", () => {
  const plain = new JsonDecoder({ features: ["a"], idField: "id", passthrough: [] });
  const meta = emptyMeta();
  meta.key = "stale";
  assert.equal(plain.decode('{"a":1}', new Float32Array(1), 0, meta), undefined);
  assert.equal(meta.key, undefined);
  assert.equal(meta.passthrough, undefined);
});
