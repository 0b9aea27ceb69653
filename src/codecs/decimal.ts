// 10^0 … 10^22: every one is exact as a double.
export const POW10 = Array.from({ length: 23 }, (_, i) => Number(`1e${i}`));

/**
 * Parses the number in `text[start, end)`, allowing surrounding spaces; NaN when it is not one.
 * Plain decimals of up to 15 significant digits ("2.10", "-0.5") take a fast path without
 * creating a substring: the digits form an exact integer m, and m / 10^k is then correctly
 * rounded (Clinger's fast path), so the result equals Number()'s. Anything else (exponents,
 * long mantissas, "Infinity") falls back to Number().
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
  return token.trim() === "" ? NaN : Number(token);
}
