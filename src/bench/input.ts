/**
 * What `edgeinfer bench` feeds the model: the events of an --input file (decoded by the same codecs
 * as `run`), or random ones of the model's input width.
 */
import type { DeviceFeatureSpec } from "../features/spec.ts";
import { type Decoder, emptyMeta } from "../codecs/decoder.ts";
import { UsageError } from "../errors.ts";
import { randomRows } from "./inference.ts";

/** The non-empty lines of an --input file (`-`: stdin), at most `limit` of them. */
export async function readEventLines(path: string, limit = Infinity): Promise<string[]> {
  let text: string;
  try {
    text = path === "-" ? await new Response(Deno.stdin.readable).text() : await Deno.readTextFile(path);
  } catch (err) {
    const reason = err instanceof Deno.errors.NotFound ? "no such file" : (err as Error).message;
    throw new UsageError(`--input '${path}' cannot be read (${reason})`);
  }
  const lines: string[] = [];
  for (const line of text.split("\n")) {
    const trimmed = line.replace(/\r$/, "");
    if (trimmed.trim() === "") continue;
    lines.push(trimmed);
    if (lines.length >= limit) break;
  }
  if (lines.length === 0) throw new UsageError(`--input '${path}' has no events (no non-empty line)`);
  return lines;
}

/** Rows decoded from event lines; the lines that could not be used are counted, the first reason kept. */
export interface DecodedRows {
  rows: Float32Array;
  count: number;
  rejected: number;
  firstRejection?: { line: number; reason: string };
}

/** Decodes each line into a row of `width` features, the way `run` does (rejected lines are skipped). */
export function decodeRows(lines: string[], decoder: Decoder, width: number): DecodedRows {
  const rows = new Float32Array(lines.length * width);
  const meta = emptyMeta();
  let count = 0;
  let rejected = 0;
  let firstRejection: DecodedRows["firstRejection"];
  for (const [i, line] of lines.entries()) {
    const reason = decoder.decode(line, rows, count * width, meta);
    if (reason === undefined) {
      count++;
    } else {
      rejected++;
      firstRejection ??= { line: i + 1, reason };
    }
  }
  return { rows: rows.subarray(0, count * width), count, rejected, firstRejection };
}

/** Devices the random events of a model with per-device features come from (round-robin). */
export const RANDOM_EVENT_DEVICES = 1000;

/**
 * `count` event payloads of random feature values for the end-to-end runs: JSON objects with the
 * model's feature names and an `id`, or delimited `<id>,<v1>#<v2>#…` lines. For a model with per-device
 * features, JSON events also name one of RANDOM_EVENT_DEVICES devices and carry a timestamp 10 ms apart.
 */
export function randomEvents(
  count: number,
  width: number,
  format: "json" | "delimited",
  features: string[] | undefined,
  seed = 1,
  device?: DeviceFeatureSpec,
): string[] {
  const values = randomRows(count, width, seed);
  const events: string[] = [];
  const read = features?.length ?? width;
  for (let i = 0; i < count; i++) {
    const row = Array.from(values.subarray(i * width, i * width + read), (v) => Number(v.toFixed(4)));
    if (format === "delimited") {
      events.push(`${i},${row.join("#")}`);
    } else {
      const event: Record<string, number | string> = { id: i };
      if (device) {
        event[device.key] = `device-${i % RANDOM_EVENT_DEVICES}`;
        event[device.time] = 1_735_689_600_000 + i * 10;
        for (const f of device.features) event[f.field] ??= values[i * width];
      }
      row.forEach((v, c) => event[features![c]] = v);
      events.push(JSON.stringify(event));
    }
  }
  return events;
}

/**
 * `lines` repeated to `count` events. Delimited events get unique ids (their leading field), as a
 * stream would carry; JSON events are used as they are.
 */
export function repeatEvents(lines: string[], count: number, format: "json" | "delimited"): string[] {
  return Array.from({ length: count }, (_, i) => {
    const line = lines[i % lines.length];
    return format === "delimited" ? line.replace(/^[^,]*/, String(i)) : line;
  });
}
