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

Deno.test("DelimitedDecoder rejects hex, octal, binary, Infinity, NaN, 1_000 and empty values, naming them", () => {
  const decoder = new DelimitedDecoder(3);
  const row = new Float32Array(3);
  for (
    const token of ["0x1A", "0o7", "0b11", "Infinity", "-Infinity", "NaN", "1_000", "", "  ", "1.5f", "+-1"]
  ) {
    assert.equal(
      decoder.decode(`1,1#${token}#3`, row, 0, emptyMeta()),
      `value 2 is not a number: ${JSON.stringify(token)}`,
      token,
    );
  }
});

Deno.test("DelimitedDecoder rejects a value beyond float32 range, naming the value", () => {
  const decoder = new DelimitedDecoder(3);
  const row = new Float32Array(3);
  const reason = (token: string) => decoder.decode(`1,1#2#${token}`, row, 0, emptyMeta());
  const range = "is outside the float32 range of the model input (±3.4e38)";
  assert.equal(reason("1e39"), `value 3 = 1e39 ${range}`);
  assert.equal(reason(" -3.5E38 "), `value 3 = -3.5E38 ${range}`);
  assert.equal(reason("1" + "0".repeat(39)), `value 3 = 1${"0".repeat(39)} ${range}`);
  assert.equal(reason("1" + "0".repeat(60)), `value 3 = 1${"0".repeat(39)}… ${range}`);
  assert.equal(reason("1.7976931348623157e308"), `value 3 = 1.7976931348623157e308 ${range}`);
});

Deno.test("DelimitedDecoder rejects a numeral that overflows a double as not finite, naming the value", () => {
  const decoder = new DelimitedDecoder(3);
  const row = new Float32Array(3);
  assert.equal(
    decoder.decode("1,1e400#2#3", row, 0, emptyMeta()),
    "value 1 = 1e400 is not a finite number (overflows a double)",
  );
  assert.equal(
    decoder.decode("1,1#-1e400 #3", row, 0, emptyMeta()),
    "value 2 = -1e400 is not a finite number (overflows a double)",
  );
});

Deno.test("DelimitedDecoder accepts values that round to the float32 limits, underflow or lose precision", () => {
  const decoder = new DelimitedDecoder(6);
  const row = new Float32Array(6);
  const error = decoder.decode(
    "1,3.4028235e38#-3.4028234663852886e38#1e-50#1e-45#0.1234567890123456789#\t2.5\t",
    row,
    0,
    emptyMeta(),
  );
  assert.equal(error, undefined);
  assert.deepEqual([...row], [
    3.4028234663852886e38,
    -3.4028234663852886e38,
    0,
    Math.fround(1e-45),
    Math.fround(0.1234567890123456789),
    2.5,
  ]);
});
