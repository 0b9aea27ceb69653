import { F32_LIMIT, parseDecimal, POW10 } from "./decimal.ts";
import type { DecodedMeta, Decoder } from "./decoder.ts";

/**
 * `--format delimited`: `<id>,<v1>#<v2>#…`, the message format of the original KSQL UDF stream.
 * Values map to the model's input columns in order. Like Java's Double.parseDouble (which the UDF
 * used), surrounding whitespace is allowed; unlike it, only plain decimals are (no hex, "Infinity",
 * "NaN"; see parseDecimal), and a value must fit the model's float32 input.
 */
export class DelimitedDecoder implements Decoder {
  constructor(private readonly width: number) {}

  decode(text: string, row: Float32Array, offset: number, meta: DecodedMeta): string | undefined {
    const comma = text.indexOf(",");
    if (comma === -1) return `expected '<id>,<v1>#<v2>#…', found no ',' after the id`;
    const id = text.slice(0, comma).trim();
    // One pass over the characters, no substring per value: plain decimals ("2.10", "-0.5") are
    // accumulated digit by digit (at most 15 digits: always finite and within float32); any other
    // token is handed to parseDecimal and its result checked.
    const width = this.width;
    const end = text.length;
    let count = 0;
    let tokenStart = comma + 1;
    let mantissa = 0;
    let digits = 0;
    let scale = 0;
    let dot = false;
    let negative = false;
    let plain = true;
    let closed = false; // a space came after the number started: only spaces may follow
    for (let i = tokenStart; i <= end; i++) {
      const c = i === end ? 35 : text.charCodeAt(i);
      if (closed && c !== 32 && c !== 35) plain = false;
      if (c >= 48 && c <= 57) {
        mantissa = mantissa * 10 + (c - 48);
        digits++;
        if (dot) scale++;
      } else if (c === 35) { // '#': the token is complete
        if (count < width) {
          let value: number;
          if (plain && digits > 0 && digits <= 15 && scale <= 22) {
            value = (negative ? -1 : 1) * (scale === 0 ? mantissa : mantissa / POW10[scale]);
          } else {
            value = parseDecimal(text, tokenStart, i);
            if (!(value < F32_LIMIT && value > -F32_LIMIT)) {
              return rejection(count + 1, value, text, tokenStart, i);
            }
          }
          row[offset + count] = value;
        }
        count++;
        tokenStart = i + 1;
        mantissa = digits = scale = 0;
        dot = negative = closed = false;
        plain = true;
      } else if (c === 46 && !dot) {
        dot = true;
      } else if (c === 45 && digits === 0 && !dot && !negative) {
        negative = true;
      } else if (c === 32) {
        if (digits > 0 || dot || negative) closed = true;
      } else {
        plain = false; // exponent, '+', stray characters: parseDecimal decides
      }
    }
    if (count !== this.width) return `expected ${this.width} values, found ${count}`;
    meta.id = id === "" ? undefined : id;
    meta.key = undefined;
    meta.passthrough = undefined;
    return undefined;
  }
}

/** Why the value at `position` (1-based), `text[start, end)`, parsed as `value`, cannot be used. */
function rejection(position: number, value: number, text: string, start: number, end: number): string {
  const token = text.slice(start, end);
  if (Number.isNaN(value)) return `value ${position} is not a number: ${JSON.stringify(token.slice(0, 40))}`;
  const numeral = token.trim();
  const shown = numeral.length > 40 ? `${numeral.slice(0, 40)}…` : numeral;
  return Number.isFinite(value)
    ? `value ${position} = ${shown} is outside the float32 range of the model input (±3.4e38)`
    : `value ${position} = ${shown} is not a finite number (overflows a double)`;
}
