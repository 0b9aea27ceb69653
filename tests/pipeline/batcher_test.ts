import assert from "node:assert/strict";
import { Batcher } from "../../src/pipeline/batcher.ts";

Deno.test("Batcher flushes a full batch at once", () => {
  const batches: number[][] = [];
  const batcher = new Batcher<number>(3, 1000, (b) => batches.push(b));
  for (let i = 0; i < 7; i++) batcher.add(i);
  assert.deepEqual(batches, [[0, 1, 2], [3, 4, 5]]);
  assert.equal(batcher.pending, 1);
  batcher.flush();
  assert.deepEqual(batches.at(-1), [6]);
});

Deno.test("Batcher flushes a partial batch after linger", async () => {
  const batches: number[][] = [];
  const batcher = new Batcher<number>(100, 20, (b) => batches.push(b));
  batcher.add(1);
  batcher.add(2);
  assert.equal(batches.length, 0);
  await new Promise((r) => setTimeout(r, 60));
  assert.deepEqual(batches, [[1, 2]]);
});

Deno.test("Batcher's linger counts from the first event of a batch, not the last", async () => {
  const batches: number[][] = [];
  const batcher = new Batcher<number>(100, 400, (b) => batches.push(b));
  const started = performance.now();
  batcher.add(1);
  await new Promise((r) => setTimeout(r, 200));
  batcher.add(2);
  // Flushed at 400 ms after the first event; counting from the last would flush at 600 ms.
  await new Promise((r) => setTimeout(r, 500 - (performance.now() - started)));
  assert.deepEqual(batches, [[1, 2]], "flushed 400 ms after the first event");
  batcher.flush();
});

Deno.test("Batcher.discard drops the open batch and its timer", async () => {
  const batches: number[][] = [];
  const batcher = new Batcher<number>(10, 10, (b) => batches.push(b));
  batcher.add(1);
  assert.deepEqual(batcher.discard(), [1]);
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(batches, []);
});
