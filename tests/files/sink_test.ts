import assert from "node:assert/strict";
import { RuntimeError, UsageError } from "../../src/errors.ts";
import type { OutRecord } from "../../src/pipeline/types.ts";
import { createStreamSink, streamSink, type StreamTarget } from "../../src/files/sink.ts";

function batch(prefix: string, n: number): OutRecord[] {
  return Array.from({ length: n }, (_, i) => ({ key: undefined, value: `${prefix}-${i}`, headers: {} }));
}

function lines(prefix: string, n: number): string {
  return batch(prefix, n).map((r) => r.value + "\n").join("");
}

/** An in-memory target whose syncs are held until released, recording each call. */
class HeldTarget implements StreamTarget {
  written = "";
  durable = "";
  calls: string[] = [];
  failSync: Error | undefined;
  failClose: Error | undefined;
  #release: (() => void)[] = [];

  write(p: Uint8Array): Promise<number> {
    this.written += new TextDecoder().decode(p);
    this.calls.push(`write ${p.length}`);
    return Promise.resolve(p.length);
  }
  async syncData(): Promise<void> {
    this.calls.push("sync");
    await new Promise<void>((resolve) => this.#release.push(resolve));
    if (this.failSync) throw this.failSync;
    this.durable = this.written;
  }
  close(): void {
    this.calls.push("close");
    if (this.failClose) throw this.failClose;
  }
  /** Lets the pending sync finish; resolves once its effects ran. */
  async releaseSync(): Promise<void> {
    while (this.#release.length === 0) await new Promise((r) => setTimeout(r, 1));
    this.#release.shift()!();
    await new Promise((r) => setTimeout(r, 1));
  }
}

Deno.test("file sink appends records in send() order across concurrent sends", async () => {
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  await Deno.writeTextFile(path, "existing\n");
  const sink = await createStreamSink(path);
  assert.equal(sink.description, `file:${path}`);
  const sends = [];
  for (let b = 0; b < 50; b++) sends.push(sink.send(batch(`b${b}`, 1 + (b % 7) * 20)));
  await Promise.all(sends);
  await sink.close();
  let expected = "existing\n";
  for (let b = 0; b < 50; b++) expected += lines(`b${b}`, 1 + (b % 7) * 20);
  assert.equal(await Deno.readTextFile(path), expected);
});

Deno.test("file sink send() resolves only once its records are in the file", async () => {
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  const sink = await createStreamSink(path);
  let expected = "";
  for (let b = 0; b < 20; b++) {
    await sink.send(batch(`b${b}`, 100));
    expected += lines(`b${b}`, 100);
    assert.equal(await Deno.readTextFile(path), expected, `after batch ${b}`);
  }
  await sink.close();
});

Deno.test("stream sink resolves a send only after its sync, and groups sends queued behind a sync into one write and one sync", async () => {
  const target = new HeldTarget();
  const sink = streamSink("file:test", target);
  const resolved: string[] = [];
  const first = sink.send(batch("a", 2)).then(() => resolved.push("a"));
  const queued = ["b", "c", "d"].map((p) => sink.send(batch(p, 3)).then(() => resolved.push(p)));
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(resolved, [], "nothing resolves before its sync");
  assert.deepEqual(target.calls, [`write ${lines("a", 2).length}`, "sync"]);

  await target.releaseSync();
  await first;
  assert.deepEqual(resolved, ["a"]);
  assert.equal(target.durable, lines("a", 2));
  const group = lines("b", 3) + lines("c", 3) + lines("d", 3);
  assert.deepEqual(
    target.calls.slice(2),
    [`write ${group.length}`, "sync"],
    "one write, one sync for b, c, d",
  );

  await target.releaseSync();
  await Promise.all(queued);
  assert.deepEqual(resolved, ["a", "b", "c", "d"]);
  assert.equal(target.durable, lines("a", 2) + group);
  await sink.close();
  assert.deepEqual(target.calls.slice(4), ["close"]);
});

Deno.test("stream sink fails for good on a sync error: affected, queued and later sends reject, close() throws", async () => {
  const target = new HeldTarget();
  const sink = streamSink("file:test", target);
  const sends = [sink.send(batch("a", 1)), sink.send(batch("b", 1))];
  const settled = Promise.allSettled(sends);
  target.failSync = new Error("EIO: input/output error");
  await target.releaseSync();
  const results = [...await settled, ...await Promise.allSettled([sink.send(batch("c", 1))])];
  for (const result of results) {
    assert.equal(result.status, "rejected");
    const err = (result as PromiseRejectedResult).reason;
    assert.ok(err instanceof RuntimeError);
    assert.match(err.message, /file:test sink failed: EIO: input\/output error/);
  }
  await assert.rejects(sink.close(), /EIO/);
  assert.equal(target.calls.filter((c) => c === "sync").length, 1, "nothing more written after the failure");
});

Deno.test("file sink on a file closed underneath it rejects sends and reports it at close", async () => {
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  const file = await Deno.open(path, { write: true, append: true });
  const sink = streamSink(`file:${path}`, file);
  await sink.send(batch("ok", 2));
  file.close();
  await assert.rejects(sink.send(batch("lost", 2)), RuntimeError);
  await assert.rejects(sink.send(batch("later", 2)), RuntimeError);
  await assert.rejects(sink.close(), RuntimeError);
  assert.equal(await Deno.readTextFile(path), lines("ok", 2));
});

Deno.test("stream sink close() waits for queued writes, then reports a close error", async () => {
  const target = new HeldTarget();
  target.failClose = new Error("EIO at close");
  const sink = streamSink("file:test", target);
  const sends = [sink.send(batch("a", 1)), sink.send(batch("b", 1))];
  let closed = false;
  const closing = sink.close();
  closing.then(() => closed = true, () => closed = true);
  await assert.rejects(sink.send(batch("c", 1)), /file:test sink is closed/);
  await target.releaseSync();
  assert.equal(closed, false, "close waits for the queued group");
  await target.releaseSync();
  await Promise.all(sends);
  await assert.rejects(closing, /file:test sink failed at close: EIO at close/);
  assert.equal(target.durable, lines("a", 1) + lines("b", 1));
});

Deno.test("file sink names a path it cannot open as a usage error", async () => {
  await assert.rejects(createStreamSink("/nonexistent-dir/out.jsonl"), (err: unknown) => {
    assert.ok(err instanceof UsageError);
    assert.match(err.message, /sink file '\/nonexistent-dir\/out.jsonl' cannot be opened for writing/);
    return true;
  });
});
