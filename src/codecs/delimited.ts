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
    let count = 0;
    let start = comma + 1;
    // Scan tokens in place: no split() array per event.
    while (true) {
      const end = text.indexOf("#", start);
      const token = end === -1 ? text.slice(start) : text.slice(start, end);
      if (count < this.width) {
        const value = token.trim() === "" ? NaN : Number(token);
        if (!Number.isFinite(value)) {
          return `value ${count + 1} is not a number: ${JSON.stringify(token.slice(0, 40))}`;
        }
        row[offset + count] = value;
      }
      count++;
      if (end === -1) break;
      start = end + 1;
    }
    if (count !== this.width) return `expected ${this.width} values, found ${count}`;
    meta.id = id === "" ? undefined : id;
    meta.key = undefined;
    meta.passthrough = undefined;
    return undefined;
  }
}
