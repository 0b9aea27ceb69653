import assert from "node:assert/strict";
import {
  type DeadLetterOptions,
  deadLetterRecord,
  describePayloadDigest,
  MAX_DEAD_LETTER_REASON,
} from "../../src/codecs/dead_letter.ts";
import type { Origin } from "../../src/pipeline/types.ts";

const origin: Origin = { kind: "mqtt", topic: "cars/car-1/sensors" };
const encoder = new TextEncoder();

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function record(payload: Uint8Array, options?: DeadLetterOptions, reason = "bad event") {
  const out = deadLetterRecord(payload, "car-1", origin, reason, 1795666998123, options);
  return { out, json: JSON.parse(out.value), bytes: encoder.encode(out.value).length };
}

/** Bytes of the encoded payload field: the JSON literal of `payload`, or the base64 text. */
function fieldBytes(json: { payload?: string; payload_base64?: string }): number {
  if (json.payload !== undefined) return encoder.encode(JSON.stringify(json.payload)).length;
  return json.payload_base64!.length;
}

Deno.test("dead letter embeds a small payload whole, with its size and sha256 and no truncation mark", async () => {
  const payload = encoder.encode('{"speed":"fast","note":"ünïcödé ✓ 🚗"}');
  const { out, json } = record(payload);
  assert.equal(json.payload, '{"speed":"fast","note":"ünïcödé ✓ 🚗"}');
  assert.equal(json.payload_bytes, payload.length);
  assert.equal(json.payload_sha256, await sha256Hex(payload));
  assert.equal("payload_truncated" in json, false);
  assert.equal(json.error, "bad event");
  assert.equal(json.source, "mqtt:cars/car-1/sensors");
  assert.equal(json.ts, 1795666998123);
  assert.equal(out.key, "car-1");
  assert.deepEqual(out.headers, {
    "edgeinfer-error": "bad event",
    "edgeinfer-source": "mqtt:cars/car-1/sensors",
  });
});

Deno.test("dead letter of a 2 MB payload fits far under Kafka's 1 MB and keeps the original's size and sha256", async () => {
  const payload = new Uint8Array(2 * 1024 * 1024);
  for (let i = 0; i < payload.length; i++) payload[i] = 0x61 + (i % 26);
  const { json, bytes } = record(payload);
  assert.ok(bytes < 65536 + 2048, `record is ${bytes} bytes`);
  assert.equal(json.payload_bytes, 2097152);
  assert.equal(json.payload_sha256, await sha256Hex(payload));
  assert.equal(json.payload_truncated, true);
  assert.ok(fieldBytes(json) <= 65536);
  assert.ok(fieldBytes(json) > 65536 - 8, "the cap is used, not wasted");
  assert.equal(json.payload, new TextDecoder().decode(payload.subarray(0, json.payload.length)));
});

Deno.test("dead letter of 200 KB of control characters (escaped ×6) stays within the cap", () => {
  const payload = new Uint8Array(200 * 1024).fill(0x01);
  for (const maxPayloadBytes of [65536, 1000, 7]) {
    const { json, bytes } = record(payload, { maxPayloadBytes });
    assert.ok(fieldBytes(json) <= maxPayloadBytes, `cap ${maxPayloadBytes}: ${fieldBytes(json)}`);
    assert.ok(bytes < maxPayloadBytes + 2048);
    assert.equal(json.payload_truncated, true);
    assert.equal(json.payload, "\x01".repeat(json.payload.length), "no half escape");
    assert.equal(json.payload_bytes, 200 * 1024);
  }
});

Deno.test("dead letter cuts multibyte UTF-8 on a character boundary, never inside a surrogate pair", () => {
  const text = "é✓🚗".repeat(20_000); // 2 + 3 + 4 bytes
  const payload = encoder.encode(text);
  for (let cap = 100; cap < 120; cap++) {
    const { json } = record(payload, { maxPayloadBytes: cap });
    assert.ok(json.payload !== undefined, "still text: the cut inside a character is not invalid UTF-8");
    assert.ok(fieldBytes(json) <= cap);
    assert.ok(fieldBytes(json) > cap - 6, `cap ${cap}: ${fieldBytes(json)}`);
    assert.ok(text.startsWith(json.payload), `cap ${cap}: a prefix of the original text`);
    assert.equal(json.payload_truncated, true);
    assert.ok(!/[\ud800-\udbff]$/.test(json.payload), "no lone high surrogate");
  }
  // The source-byte cut (at cap bytes) also falls inside characters: still text.
  const ascii = encoder.encode("x" + "🚗".repeat(100));
  for (let cap = 10; cap < 16; cap++) {
    const { json } = record(ascii, { maxPayloadBytes: cap });
    assert.equal(typeof json.payload, "string", `cap ${cap}`);
  }
});

Deno.test("dead letter keeps invalid UTF-8 as base64 within the cap, decoding to a prefix of the original", () => {
  const payload = new Uint8Array(300_000);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 131 + 7) & 0xff;
  payload[0] = 0xff; // invalid from the first byte
  for (const maxPayloadBytes of [65536, 1001, 1002, 1003, 1004]) {
    const { json } = record(payload, { maxPayloadBytes });
    assert.equal(json.payload, undefined);
    assert.ok(json.payload_base64.length <= maxPayloadBytes);
    assert.ok(json.payload_base64.length > maxPayloadBytes - 4);
    const decoded = Uint8Array.from(atob(json.payload_base64), (c) => c.charCodeAt(0));
    assert.equal(decoded.length % 3, 0, "cut on a 3-byte boundary");
    assert.deepEqual(decoded, payload.subarray(0, decoded.length));
    assert.equal(json.payload_truncated, true);
    assert.equal(json.payload_bytes, 300_000);
  }
  const small = record(new Uint8Array([0x7b, 0xc3, 0x28, 0x7d]));
  assert.equal(small.json.payload_base64, btoa("\x7b\xc3\x28\x7d"));
  assert.equal("payload_truncated" in small.json, false);
});

Deno.test("dead letter uses the figures of a payload the source already cut", () => {
  const original = new Uint8Array(5_000_000).fill(0x41);
  const digest = describePayloadDigest(original);
  const { json } = record(original.subarray(0, 1000), { original: digest });
  assert.equal(json.payload_bytes, 5_000_000);
  assert.equal(json.payload_sha256, digest.sha256);
  assert.equal(json.payload_truncated, true);
  assert.equal(json.payload, "A".repeat(1000));
});

Deno.test("dead letter caps the reason in the record and in the header", () => {
  const reason = "feature 'x' is not a number: " + "🚗".repeat(5000);
  const { out, json } = record(new Uint8Array(0), undefined, reason);
  assert.ok(json.error.length <= MAX_DEAD_LETTER_REASON);
  assert.equal(out.headers["edgeinfer-error"], json.error);
  assert.ok(json.error.endsWith("…"));
  assert.ok(reason.startsWith(json.error.slice(0, -1)));
  assert.ok(!/[\ud800-\udbff]…$/.test(json.error), "no lone high surrogate");
  assert.equal(json.payload, "");
  assert.equal(json.payload_bytes, 0);
});

Deno.test("dead letter with maxPayloadBytes 0 keeps only the size and digest", () => {
  const { json } = record(encoder.encode("hello"), { maxPayloadBytes: 0 });
  assert.equal(json.payload, undefined);
  assert.equal(json.payload_base64, undefined);
  assert.equal(json.payload_bytes, 5);
  assert.equal(json.payload_truncated, true);
});
