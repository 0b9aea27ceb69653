import assert from "node:assert/strict";
import { F32_LIMIT, parseDecimal } from "../../src/codecs/decimal.ts";

const parse = (s: string) => parseDecimal(s, 0, s.length);

Deno.test("parseDecimal equals Number() on plain decimals, signs, spaces, exponents and long mantissas", () => {
  const cases = [
    "2.10",
    " 2.13",
    "-0.5",
    "+7",
    "0",
    "0.1",
    "0.3",
    "123456789012345",
    "1234567890.12345",
    "5.",
    ".5",
    "1e3",
    "-2.5E-4",
    "12345678901234567890",
    "0.1234567890123456789",
    "1.7976931348623157e308",
    "\t2.5\r\n",
    " 1E+2 ",
    "-.5e-3",
    "00012",
  ];
  for (const text of cases) assert.equal(parse(text), Number(text), text);
  // Exhaustive over short decimals: the fast path must round exactly like Number().
  for (let m = 0; m < 20000; m += 7) {
    for (const k of [1, 2, 3, 4, 6]) {
      const text = (m / 10 ** k).toFixed(k);
      assert.equal(parse(text), Number(text), text);
    }
  }
});

Deno.test("parseDecimal gives NaN for empty and non-numeric tokens", () => {
  for (const text of ["", "   ", "-", ".", "1.2.3", "abc", "1,5", "1e", "--1"]) {
    assert.ok(Number.isNaN(parse(text)), text);
  }
});

Deno.test("parseDecimal reads a slice of a longer string", () => {
  const text = "1,2.5#3.25#x";
  assert.equal(parseDecimal(text, 2, 5), 2.5);
  assert.equal(parseDecimal(text, 6, 10), 3.25);
});

Deno.test("parseDecimal gives NaN for hex, octal, binary, Infinity, NaN, separators and Java suffixes", () => {
  const cases = [
    "0x1A",
    "0X1a",
    "-0x1A",
    "0o7",
    "0b11",
    "Infinity",
    "-Infinity",
    "+Infinity",
    " Infinity ",
    "NaN",
    "1_000",
    "1_000.5",
    "1e1_0",
    "1.5f",
    "1.5d",
    "0x1p3",
    "1e+",
    "e5",
    ".e5",
    "1 2",
    "\u00a01",
  ];
  for (const text of cases) assert.ok(Number.isNaN(parse(text)), text);
});

Deno.test("parseDecimal gives ±Infinity for a decimal numeral that overflows a double", () => {
  assert.equal(parse("1e400"), Infinity);
  assert.equal(parse("-1e400"), -Infinity);
  assert.equal(parse("1" + "0".repeat(400)), Infinity);
  assert.equal(parse("1e-400"), 0); // underflow is a value, not an error
});

Deno.test("F32_LIMIT is the smallest magnitude that Math.fround turns into Infinity", () => {
  assert.equal(Math.fround(F32_LIMIT), Infinity);
  const below = new Float64Array([F32_LIMIT]);
  new BigUint64Array(below.buffer)[0] -= 1n; // the next double down
  assert.equal(Math.fround(below[0]), 3.4028234663852886e38);
  assert.equal(Math.fround(-below[0]), -3.4028234663852886e38);
});
