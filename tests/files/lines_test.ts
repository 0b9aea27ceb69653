import assert from "node:assert/strict";
import { splitLines } from "../../src/files/lines.ts";

async function collect(chunks: string[]) {
  async function* stream() {
    for (const c of chunks) yield new TextEncoder().encode(c);
  }
  const lines: string[] = [];
  const numbers: number[] = [];
  for await (const { lines: l, lineNumbers } of splitLines(stream())) {
    lines.push(...l.map((b) => new TextDecoder().decode(b)));
    numbers.push(...lineNumbers);
  }
  return { lines, numbers };
}

Deno.test("splitLines joins lines across chunks, drops \\r, skips blank lines and keeps line numbers", async () => {
  const { lines, numbers } = await collect(['{"a":1}\r\n{"a"', ":2}\n\n", "\n3,4#5\r\n", "last"]);
  assert.deepEqual(lines, ['{"a":1}', '{"a":2}', "3,4#5", "last"]);
  assert.deepEqual(numbers, [1, 2, 5, 6]);
});

Deno.test("splitLines yields one chunk per read: the lines of a read arrive together", async () => {
  async function* stream() {
    yield new TextEncoder().encode("a\nb\nc\n");
    yield new TextEncoder().encode("d\n");
  }
  const sizes: number[] = [];
  for await (const { lines } of splitLines(stream())) sizes.push(lines.length);
  assert.deepEqual(sizes, [3, 1]);
});
