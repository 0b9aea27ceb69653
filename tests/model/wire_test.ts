import assert from "node:assert/strict";
import { chunkModel, ModelAssembler, parseEnvelope, sha256Hex } from "../../src/model/wire.ts";

const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) % 256);

Deno.test("wire: a model is cut into chunks keyed name/version/index, each with the whole file's sha256", () => {
  const chunks = chunkModel(bytes, { name: "cars", version: "2", chunkBytes: 300, published: 5 });
  assert.deepEqual(chunks.map((c) => c.key), ["cars/2/0", "cars/2/1", "cars/2/2", "cars/2/3"]);
  assert.deepEqual(chunks.map((c) => c.value.length), [300, 300, 300, 100]);
  const e = parseEnvelope(chunks[3].header);
  assert.deepEqual(e, {
    name: "cars",
    version: "2",
    sha256: sha256Hex(bytes),
    bytes: 1000,
    chunk: 3,
    chunks: 4,
    published: 5,
  });
  assert.equal(
    chunkModel(new Uint8Array(0), { name: "x", version: "1", chunkBytes: 10, published: 1 }).length,
    1,
  );
});

Deno.test("wire: envelopes that are not one are named", () => {
  assert.match(parseEnvelope(undefined) as string, /no edgeinfer-model header/);
  assert.match(parseEnvelope("{") as string, /not JSON/);
  assert.match(parseEnvelope(JSON.stringify({ name: "a", version: "1", sha256: "x" })) as string, /sha256/);
  const good = JSON.parse(
    chunkModel(bytes, { name: "a", version: "1", chunkBytes: 500, published: 1 })[0].header,
  );
  assert.match(parseEnvelope(JSON.stringify({ ...good, chunk: 2 })) as string, /out of range/);
  assert.match(parseEnvelope(JSON.stringify({ ...good, chunks: 0 })) as string, /chunks/);
});

Deno.test("wire: chunks in any order make the model; a missing one keeps it pending and listed as incomplete", () => {
  const chunks = chunkModel(bytes, { name: "cars", version: "2", chunkBytes: 256, published: 5 });
  const a = new ModelAssembler();
  for (const c of [chunks[2], chunks[0], chunks[3]]) {
    assert.equal(a.add(c.key, c.value, c.header).kind, "pending");
  }
  assert.deepEqual(a.incomplete(), [
    `model cars v2 (sha256 ${sha256Hex(bytes).slice(0, 12)}…): 3 of 4 chunks`,
  ]);
  const done = a.add(chunks[1].key, chunks[1].value, chunks[1].header);
  assert.equal(done.kind, "complete");
  if (done.kind === "complete") {
    assert.deepEqual(done.bytes, bytes);
    assert.equal(done.envelope.version, "2");
  }
  assert.deepEqual(a.incomplete(), []);
});

Deno.test("wire: a tampered chunk fails the checksum; a key that does not match its header is ignored", () => {
  const chunks = chunkModel(bytes, { name: "cars", version: "3", chunkBytes: 600, published: 5 });
  const a = new ModelAssembler();
  a.add(chunks[0].key, chunks[0].value, chunks[0].header);
  const tampered = chunks[1].value.slice();
  tampered[10] ^= 1;
  const result = a.add(chunks[1].key, tampered, chunks[1].header);
  assert.equal(result.kind, "ignored");
  if (result.kind === "ignored") assert.match(result.reason, /model cars v3 .*checksum mismatch/);
  const moved = a.add("cars/4/0", chunks[0].value, chunks[0].header);
  assert.equal(moved.kind, "ignored");
  if (moved.kind === "ignored") assert.match(moved.reason, /key does not match/);
});

Deno.test("wire: a republish of a version with other content starts over; a tombstone forgets the version", () => {
  const old = chunkModel(bytes, { name: "m", version: "1", chunkBytes: 600, published: 1 });
  const other = bytes.slice().reverse();
  const fresh = chunkModel(other, { name: "m", version: "1", chunkBytes: 600, published: 2 });
  const a = new ModelAssembler();
  a.add(old[0].key, old[0].value, old[0].header);
  a.add(fresh[0].key, fresh[0].value, fresh[0].header);
  const done = a.add(fresh[1].key, fresh[1].value, fresh[1].header);
  assert.equal(done.kind, "complete");
  if (done.kind === "complete") assert.deepEqual(done.bytes, other);
  a.add(old[0].key, old[0].value, old[0].header);
  a.add(old[0].key, null, undefined);
  assert.deepEqual(a.incomplete(), []);
});
