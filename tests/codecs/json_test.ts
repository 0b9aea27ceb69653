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

Deno.test("JsonDecoder rejects a value beyond float32 range, naming the feature", () => {
  const row = new Float32Array(2);
  const range = "is outside the float32 range of the model input (±3.4e38)";
  const cases: [string, string][] = [
    ['{"speed":1e39,"temp":1,"car":"a"}', `feature 'speed' = 1e+39 ${range}`],
    ['{"speed":1,"temp":-3.5e38,"car":"a"}', `feature 'temp' = -3.5e+38 ${range}`],
    [
      '{"speed":1.7976931348623157e308,"temp":1,"car":"a"}',
      `feature 'speed' = 1.7976931348623157e+308 ${range}`,
    ],
  ];
  for (const [payload, reason] of cases) {
    assert.equal(decoder.decode(payload, row, 0, emptyMeta()), reason, payload);
  }
});

Deno.test("JsonDecoder rejects a numeral that overflows a double as not finite, naming the feature", () => {
  const row = new Float32Array(2);
  assert.equal(
    decoder.decode('{"speed":1e400,"temp":1,"car":"a"}', row, 0, emptyMeta()),
    "feature 'speed' is not a finite number: its JSON numeral overflows a double (parsed as Infinity)",
  );
  assert.equal(
    decoder.decode('{"speed":1,"temp":-1e400,"car":"a"}', row, 0, emptyMeta()),
    "feature 'temp' is not a finite number: its JSON numeral overflows a double (parsed as -Infinity)",
  );
});

Deno.test("JsonDecoder accepts values that round to the float32 limit, underflow or lose precision", () => {
  const row = new Float32Array(2);
  assert.equal(
    decoder.decode('{"speed":3.4028235e38,"temp":-1e-50,"car":"a"}', row, 0, emptyMeta()),
    undefined,
  );
  assert.deepEqual([...row], [3.4028234663852886e38, -0]);
  assert.equal(
    decoder.decode('{"speed":0.1234567890123456789,"temp":1e-45,"car":"a"}', row, 0, emptyMeta()),
    undefined,
  );
  assert.deepEqual([...row], [Math.fround(0.1234567890123456789), Math.fround(1e-45)]);
});

Deno.test("JsonDecoder rejects hex, octal, binary, Infinity, NaN, 1_000 as invalid JSON or as strings", () => {
  const row = new Float32Array(2);
  for (const numeral of ["0x1A", "0o7", "0b11", "Infinity", "-Infinity", "NaN", "1_000", ".5", "+1", "01"]) {
    const reason = decoder.decode(`{"speed":${numeral},"temp":1,"car":"a"}`, row, 0, emptyMeta());
    assert.match(reason ?? "(no error)", /^invalid JSON: /, numeral);
  }
  for (const text of ["0x1A", "Infinity", "NaN", "1e39", "12"]) {
    assert.equal(
      decoder.decode(`{"speed":${JSON.stringify(text)},"temp":1,"car":"a"}`, row, 0, emptyMeta()),
      `feature 'speed' is not a number: ${JSON.stringify(text)}`,
      text,
    );
  }
});
