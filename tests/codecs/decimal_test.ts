import assert from "node:assert/strict";
import { parseDecimal } from "../../src/codecs/decimal.ts";

const parse = (s: string) => parseDecimal(s, 0, s.length);

Deno.test("parseDecimal equals Number() on plain decimals, signs, spaces and the slow-path forms", () => {
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
    "Infinity",
    "1.7976931348623157e308",
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
