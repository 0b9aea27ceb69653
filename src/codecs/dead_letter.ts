import { createHash } from "node:crypto";
import type { Origin, OutRecord } from "../pipeline/types.ts";
import { describeOrigin } from "./prediction.ts";

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Default cap on the embedded payload field: 64 KiB of encoded text. */
export const DEFAULT_MAX_DEAD_LETTER_PAYLOAD = 65536;
/** Longest reason kept, in the record and in the `edgeinfer-error` header (UTF-16 code units). */
export const MAX_DEAD_LETTER_REASON = 1000;

export interface DeadLetterOptions {
  /**
   * Cap on the encoded payload field: the JSON string literal of `payload` (quotes and escapes
   * included) or the base64 text of `payload_base64`, in bytes of UTF-8. Default 65536. 0 leaves
   * the payload out (only its size and digest are kept).
   */
  maxPayloadBytes?: number;
  /**
   * Set when the source already cut the payload: `payload` is then only a prefix, and these
   * describe the original (see describePayloadDigest). The record is marked truncated.
   */
  original?: { bytes: number; sha256: string };
}

/** Size and hex sha256 of a payload, for a source that keeps only a prefix of it. */
export function describePayloadDigest(bytes: Uint8Array): { bytes: number; sha256: string } {
  return { bytes: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") };
}

/**
 * The dead-letter record of an event that could not be scored:
 * {"error":"…","source":"mqtt:cars/1","ts":…,"payload_bytes":N,"payload_sha256":"…","payload":"<text>"}
 * Payloads that are not valid UTF-8 are kept as "payload_base64" instead. The record always fits
 * its sink: the embedded payload is capped (`maxPayloadBytes`, cut on a character boundary, or on
 * 3 bytes for base64) and then carries "payload_truncated":true; `payload_bytes` and
 * `payload_sha256` always describe the original bytes, so the event can be found at its source.
 * The reason (capped at 1000 characters) also travels in the `edgeinfer-error` header.
 *
 * Cost is O(size) for the digest and O(cap) for the rest: only a prefix of a large payload is
 * decoded, checked for UTF-8 and escaped.
 */
export function deadLetterRecord(
  payload: Uint8Array,
  key: string | undefined,
  origin: Origin,
  reason: string,
  ts: number,
  options: DeadLetterOptions = {},
): OutRecord {
  const cap = options.maxPayloadBytes ?? DEFAULT_MAX_DEAD_LETTER_PAYLOAD;
  if (!Number.isSafeInteger(cap) || cap < 0) {
    throw new RangeError(`maxPayloadBytes must be an integer >= 0, got ${cap}`);
  }
  const source = describeOrigin(origin);
  const error = capReason(reason);
  const digest = options.original ?? describePayloadDigest(payload);
  const embedded = encodePayload(payload, cap);
  const truncated = embedded.truncated || options.original !== undefined;
  const value = `{"error":${JSON.stringify(error)},"source":${JSON.stringify(source)},"ts":${ts},` +
    `"payload_bytes":${digest.bytes},"payload_sha256":${JSON.stringify(digest.sha256)}` +
    (truncated ? `,"payload_truncated":true` : "") +
    (embedded.field === "" ? "" : `,${embedded.field}`) + "}";
  return {
    key,
    value,
    headers: { "edgeinfer-error": error, "edgeinfer-source": source },
  };
}

/** The reason, cut to MAX_DEAD_LETTER_REASON code units (never inside a surrogate pair). */
function capReason(reason: string): string {
  if (reason.length <= MAX_DEAD_LETTER_REASON) return reason;
  let end = MAX_DEAD_LETTER_REASON - 1; // room for the ellipsis
  if (isHighSurrogate(reason.charCodeAt(end - 1))) end--;
  return reason.slice(0, end) + "…";
}

/** `"payload":"…"` or `"payload_base64":"…"` (or "" when nothing fits), and whether it was cut. */
function encodePayload(payload: Uint8Array, cap: number): { field: string; truncated: boolean } {
  // Each source byte becomes at least one byte of the JSON literal (escapes only grow), so at
  // most `cap` bytes can ever fit: look at no more than that.
  const cut = payload.length > cap;
  const text = decodePrefix(cut ? payload.subarray(0, cap) : payload, cut);
  if (text !== undefined) {
    if (cap < 2) return { field: "", truncated: payload.length > 0 };
    const end = fittingPrefix(text, cap - 2);
    const whole = !cut && end === text.length;
    return {
      field: `"payload":${JSON.stringify(whole ? text : text.slice(0, end))}`,
      truncated: !whole,
    };
  }
  // Not UTF-8: base64, whose length is 4 per 3 bytes, cut on a 3-byte boundary.
  const fit = Math.floor(cap / 4) * 3;
  if (fit === 0) return { field: "", truncated: payload.length > 0 };
  const bytes = payload.length > fit ? payload.subarray(0, fit) : payload;
  return { field: `"payload_base64":"${toBase64(bytes)}"`, truncated: bytes.length < payload.length };
}

/**
 * Decodes strict UTF-8, or returns undefined. For a prefix (`cut`), an incomplete character at
 * its end is dropped first: the cut fell inside it, which does not make the payload invalid.
 */
function decodePrefix(bytes: Uint8Array, cut: boolean): string | undefined {
  let end = bytes.length;
  if (cut) {
    // Find the start of the last character (at most 3 continuation bytes back).
    let lead = end - 1;
    while (lead >= 0 && lead > end - 4 && (bytes[lead] & 0xc0) === 0x80) lead--;
    if (lead >= 0) {
      const b = bytes[lead];
      const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
      if (end - lead < need) end = lead;
    }
  }
  try {
    return strictUtf8.decode(end === bytes.length ? bytes : bytes.subarray(0, end));
  } catch {
    return undefined;
  }
}

/**
 * How many UTF-16 code units of `text` fit in `budget` bytes once JSON-escaped and UTF-8 encoded
 * (the escapes of JSON.stringify; surrogate pairs are kept whole).
 */
function fittingPrefix(text: string, budget: number): number {
  let used = 0;
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    let units = 1;
    let size: number;
    if (c === 0x22 || c === 0x5c) size = 2; // \" \\
    else if (c < 0x20) size = c === 0x08 || c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d ? 2 : 6;
    else if (c < 0x80) size = 1;
    else if (c < 0x800) size = 2;
    else if (isHighSurrogate(c) && i + 1 < text.length && isLowSurrogate(text.charCodeAt(i + 1))) {
      size = 4;
      units = 2;
    } else if (c >= 0xd800 && c <= 0xdfff) size = 6; // a lone surrogate is escaped as \uXXXX
    else size = 3;
    if (used + size > budget) break;
    used += size;
    i += units;
  }
  return i;
}

function isHighSurrogate(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}

function isLowSurrogate(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
