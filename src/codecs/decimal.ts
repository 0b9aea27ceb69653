// 10^0 … 10^22: every one is exact as a double.
export const POW10 = Array.from({ length: 23 }, (_, i) => Number(`1e${i}`));

/**
 * Bound of the float32 range: the smallest magnitude that Math.fround() turns into ±Infinity
 * (2^128 − 2^103, halfway between the largest float32, 3.4028234663852886e38, and 2^128). A double
 * v fits the model's float32 input iff -F32_LIMIT < v < F32_LIMIT; NaN fails both comparisons.
 */
export const F32_LIMIT = 3.4028235677973366e38;

/**
 * A plain decimal numeral: optional sign, digits with an optional fraction (or ".5"), optional
 * exponent, surrounding whitespace allowed; what Java's Double.parseDouble accepts minus its hex,
 * "Infinity", "NaN" and "d"/"f" suffix forms. The whitespace is the ASCII set that both Java's trim()
 * and Number() strip (space, \t, \n, \v, \f, \r). Number() alone would also take "0x1A", "0b11",
 * "0o7" and "Infinity".
 */
const DECIMAL = /^[\t\n\v\f\r ]*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[\t\n\v\f\r ]*$/;

/**
 * Parses the plain decimal numeral (see DECIMAL) in `text[start, end)`; NaN when it is not one.
 * Decimals of up to 15 significant digits without exponent ("2.10", "-0.5") take a fast path
 * without creating a substring: the digits form an exact integer m, and m / 10^k is then correctly
 * rounded (Clinger's fast path), so the result equals Number()'s. Anything else (exponents, long
 * mantissas) is checked against DECIMAL and then converted by Number(); the result can be
 * ±Infinity when the numeral overflows a double ("1e400").
 */
export function parseDecimal(text: string, start: number, end: number): number {
  let i = start;
  let j = end;
  while (i < j && text.charCodeAt(i) === 32) i++;
  while (j > i && text.charCodeAt(j - 1) === 32) j--;
  if (i === j) return NaN;
  let negative = false;
  const first = text.charCodeAt(i);
  if (first === 45 || first === 43) { // '-' or '+'
    negative = first === 45;
    i++;
  }
  let mantissa = 0;
  let digits = 0;
  let scale = 0;
  let dot = false;
  for (; i < j; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      mantissa = mantissa * 10 + (c - 48);
      digits++;
      if (dot) scale++;
    } else if (c === 46 && !dot) {
      dot = true;
    } else {
      return slowParse(text, start, end);
    }
  }
  if (digits === 0 || digits > 15 || scale > 22) return slowParse(text, start, end);
  const value = scale === 0 ? mantissa : mantissa / POW10[scale];
  return negative ? -value : value;
}

function slowParse(text: string, start: number, end: number): number {
  const token = text.slice(start, end);
  return DECIMAL.test(token) ? Number(token) : NaN;
}
