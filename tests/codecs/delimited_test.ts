import assert from "node:assert/strict";
import { DelimitedDecoder } from "../../src/codecs/delimited.ts";
import { emptyMeta } from "../../src/codecs/decoder.ts";

Deno.test("DelimitedDecoder reads '<id>,<v1>#<v2>#…' like the KSQL UDF, spaces allowed", () => {
  const row = new Float32Array(4);
  const meta = emptyMeta();
  assert.equal(new DelimitedDecoder(3).decode("99999,2.10# 2.13#-1e-2", row, 1, meta), undefined);
  assert.deepEqual([...row], [0, 2.0999999046325684, 2.130000114440918, -0.009999999776482582]);
  assert.equal(meta.id, "99999");
});

Deno.test("DelimitedDecoder rejects a wrong number of values or a non-number, naming it", () => {
  const decoder = new DelimitedDecoder(3);
  const row = new Float32Array(3);
  assert.equal(decoder.decode("1,1#2", row, 0, emptyMeta()), "expected 3 values, found 2");
  assert.equal(decoder.decode("1,1#2#3#4", row, 0, emptyMeta()), "expected 3 values, found 4");
  assert.equal(decoder.decode("1,1#x#3", row, 0, emptyMeta()), 'value 2 is not a number: "x"');
  assert.equal(decoder.decode("1,1##3", row, 0, emptyMeta()), 'value 2 is not a number: ""');
  assert.match(decoder.decode("1#2#3", row, 0, emptyMeta()) ?? "", /no ',' after the id/);
});

Deno.test("DelimitedDecoder parses each value exactly as Number() would, or rejects it", () => {
  const tokens = [
    "2.10",
    " 2.13 ",
    "-0.5",
    "+7",
    "5.",
    ".5",
    "1e3",
    "-2.5E-4",
    "0.1234567890123456789",
    "2 3",
    "--1",
    "1-2",
    "-",
    ".",
  ];
  const decoder = new DelimitedDecoder(1);
  for (const token of tokens) {
    const row = new Float32Array(1);
    const error = decoder.decode(`id,${token}`, row, 0, emptyMeta());
    const expected = token.trim() === "" ? NaN : Number(token);
    if (Number.isFinite(expected)) assert.equal(row[0], Math.fround(expected), token);
    else assert.match(error ?? "", /value 1 is not a number/, token);
  }
});
