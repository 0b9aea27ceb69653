/**
 * How a model travels over a Kafka topic (`--model-source`, `edgeinfer model publish`).
 *
 * A model file is cut into chunks of at most `chunk-bytes`; each chunk is one record:
 *   key     `<name>/<version>/<chunk index>`: one key per chunk of each version, so compaction keeps the
 *           last copy of every chunk of every version, and a partial publish of a new version never
 *           overwrites a chunk of the previous one
 *   value   the chunk's bytes
 *   header  `edgeinfer-model`: JSON {"name","version","sha256" (of the whole file),"bytes" (whole file),
 *           "chunk" (index from 0),"chunks" (count),"published" (ms since the epoch)}
 * A reader puts the chunks of one (name, version, sha256) together; a model is complete when it holds every
 * chunk, and good when the whole file's sha256 matches. Of the good ones the newest `published` wins.
 */
import { createHash } from "node:crypto";

export const MODEL_HEADER = "edgeinfer-model";
/** Well under Kafka's default message.max.bytes (1 MB), with room for the key and header. */
export const DEFAULT_CHUNK_BYTES = 512 * 1024;

export interface ModelEnvelope {
  name: string;
  version: string;
  sha256: string;
  bytes: number;
  chunk: number;
  chunks: number;
  published: number;
}

export interface ModelChunk {
  key: string;
  value: Uint8Array;
  header: string;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

export function modelKey(name: string, version: string, chunk: number): string {
  return `${name}/${version}/${chunk}`;
}

/** The records that publish `bytes` as model `name` version `version`. */
export function chunkModel(
  bytes: Uint8Array,
  meta: { name: string; version: string; chunkBytes: number; published: number },
): ModelChunk[] {
  if (!(meta.chunkBytes >= 1)) throw new Error(`chunk size must be at least 1 byte, got ${meta.chunkBytes}`);
  const sha256 = sha256Hex(bytes);
  const chunks = Math.max(1, Math.ceil(bytes.length / meta.chunkBytes));
  const out: ModelChunk[] = [];
  for (let chunk = 0; chunk < chunks; chunk++) {
    const envelope: ModelEnvelope = {
      name: meta.name,
      version: meta.version,
      sha256,
      bytes: bytes.length,
      chunk,
      chunks,
      published: meta.published,
    };
    out.push({
      key: modelKey(meta.name, meta.version, chunk),
      value: bytes.subarray(chunk * meta.chunkBytes, (chunk + 1) * meta.chunkBytes),
      header: JSON.stringify(envelope),
    });
  }
  return out;
}

/** The envelope of a chunk record, or why it is not one. */
export function parseEnvelope(header: string | undefined): ModelEnvelope | string {
  if (header === undefined) return `no ${MODEL_HEADER} header`;
  let e: Record<string, unknown>;
  try {
    e = JSON.parse(header);
  } catch {
    return `${MODEL_HEADER} header is not JSON`;
  }
  const text = (k: string) => typeof e[k] === "string" && e[k] !== "";
  const whole = (k: string, min: number) => Number.isInteger(e[k]) && (e[k] as number) >= min;
  if (e === null || typeof e !== "object") return `${MODEL_HEADER} header is not a JSON object`;
  for (const k of ["name", "version"]) if (!text(k)) return `${MODEL_HEADER} header has no ${k}`;
  if (typeof e.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(e.sha256)) {
    return `${MODEL_HEADER} header has no sha256 (64 hex digits)`;
  }
  for (const [k, min] of [["bytes", 0], ["chunk", 0], ["chunks", 1], ["published", 0]] as const) {
    if (!whole(k, min)) return `${MODEL_HEADER} header has no valid ${k}`;
  }
  if ((e.chunk as number) >= (e.chunks as number)) return `chunk ${e.chunk} of ${e.chunks} is out of range`;
  return e as unknown as ModelEnvelope;
}

export type Assembled =
  | { kind: "complete"; envelope: ModelEnvelope; bytes: Uint8Array }
  | { kind: "ignored"; reason: string }
  | { kind: "pending" };

interface Partial {
  envelope: ModelEnvelope;
  parts: (Uint8Array | undefined)[];
  have: number;
}

/** Puts chunk records back together into model files (see the wire format above). */
export class ModelAssembler {
  /** By `<name>/<version>`: the chunks of the publish seen last. */
  private readonly partial = new Map<string, Partial>();

  add(key: string, value: Uint8Array | null | undefined, header: string | undefined): Assembled {
    const id = key.replace(/\/\d+$/, "");
    if (value == null) {
      // A tombstone: that version is being deleted.
      this.partial.delete(id);
      return { kind: "pending" };
    }
    const envelope = parseEnvelope(header);
    if (typeof envelope === "string") return { kind: "ignored", reason: `record ${key}: ${envelope}` };
    const label = `model ${envelope.name} v${envelope.version} (sha256 ${envelope.sha256.slice(0, 12)}…)`;
    if (key !== modelKey(envelope.name, envelope.version, envelope.chunk)) {
      return { kind: "ignored", reason: `record ${key}: its key does not match its header (${label})` };
    }
    let p = this.partial.get(id);
    const same = p && p.envelope.sha256 === envelope.sha256 && p.envelope.chunks === envelope.chunks &&
      p.envelope.bytes === envelope.bytes;
    if (!p || !same) {
      // The first chunk of this version, or a republish of it with other content: start over.
      p = { envelope, parts: new Array(envelope.chunks), have: 0 };
      this.partial.set(id, p);
    }
    if (p.parts[envelope.chunk] === undefined) p.have++;
    p.parts[envelope.chunk] = value;
    if (p.envelope.published < envelope.published) {
      p.envelope = { ...p.envelope, published: envelope.published };
    }
    if (p.have < envelope.chunks) return { kind: "pending" };
    this.partial.delete(id);
    const bytes = new Uint8Array(envelope.bytes);
    let at = 0;
    for (const part of p.parts as Uint8Array[]) {
      if (at + part.length > bytes.length) {
        return {
          kind: "ignored",
          reason: `${label}: its chunks hold more than the ${envelope.bytes} bytes announced`,
        };
      }
      bytes.set(part, at);
      at += part.length;
    }
    if (at !== envelope.bytes) {
      return {
        kind: "ignored",
        reason: `${label}: its chunks hold ${at} bytes, not the ${envelope.bytes} announced`,
      };
    }
    const actual = sha256Hex(bytes);
    if (actual !== envelope.sha256) {
      return {
        kind: "ignored",
        reason: `${label}: checksum mismatch (the chunks' sha256 is ${actual.slice(0, 12)}…)`,
      };
    }
    return { kind: "complete", envelope: p.envelope, bytes };
  }

  /** Models some of whose chunks were seen, not all (a publish cut short, or still under way). */
  incomplete(): string[] {
    return [...this.partial.values()].map(({ envelope: e, have }) =>
      `model ${e.name} v${e.version} (sha256 ${e.sha256.slice(0, 12)}…): ${have} of ${e.chunks} chunks`
    );
  }
}
