import { parseDecimal, POW10 } from "./decimal.ts";
import type { DecodedMeta, Decoder } from "./decoder.ts";

/**
 * `--format delimited`: `<id>,<v1>#<v2>#…`, the message format of the original KSQL UDF stream.
 * Values map to the model's input columns in order. Like Java's Double.parseDouble (which the UDF
 * used), surrounding whitespace is allowed.
 */
export class DelimitedDecoder implements Decoder {
  constructor(private readonly width: number) {}

  decode(text: string, row: Float32Array, offset: number, meta: DecodedMeta): string | undefined {
    const comma = text.indexOf(",");
    if (comma === -1) return `expected '<id>,<v1>#<v2>#…', found no ',' after the id`;
    const id = text.slice(0, comma).trim();
    // One pass over the characters, no substring per value: plain decimals ("2.10", "-0.5") are
    // accumulated digit by digit; any other token is handed to parseDecimal.
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
          const value = plain && digits > 0 && digits <= 15 && scale <= 22
            ? (negative ? -1 : 1) * (scale === 0 ? mantissa : mantissa / POW10[scale])
            : parseDecimal(text, tokenStart, i);
          if (!Number.isFinite(value)) {
            return `value ${count + 1} is not a number: ${
              JSON.stringify(text.slice(tokenStart, i).slice(0, 40))
            }`;
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
