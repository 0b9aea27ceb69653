/**
 * The disk buffer (src/buffer/) on a real SQLite file in a temp directory, with in-process sinks standing in
 * for Kafka: order, durability across a reopen, the lock, a full buffer (block and drop-oldest), refusals,
 * and a torn write-ahead-log tail.
 */
import assert from "node:assert/strict";
import { DiskBuffer, type DiskBufferOptions } from "../../src/buffer/buffer.ts";
import { BufferStore } from "../../src/buffer/store.ts";
import { Health } from "../../src/pipeline/health.ts";
import type { OutRecord, Refusal, Sink } from "../../src/pipeline/types.ts";

/** A sink that keeps what it gets; while `hold` is set, send() waits (an uplink outage). */
class MemorySink implements Sink {
  readonly description = "memory";
  readonly values: string[] = [];
  hold: Promise<void> | undefined;
  refuse?: (r: OutRecord) => string | undefined;
  /** Why it would refuse a record without sending it (as the Kafka sink's size limit). */
  refuses?: (r: OutRecord) => string | undefined;
  async send(records: OutRecord[]): Promise<Refusal[]> {
    await this.hold;
    const refused: Refusal[] = [];
    records.forEach((r, index) => {
      const reason = this.refuse?.(r);
      if (reason) refused.push({ index, reason });
      else this.values.push(r.value);
    });
    return refused;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

function records(from: number, n: number, size = 100): OutRecord[] {
  return Array.from({ length: n }, (_, i) => ({
    key: `k${(from + i) % 7}`,
    value: JSON.stringify({ id: from + i, pad: "x".repeat(size) }),
    headers: { "edgeinfer-model": "m:1" },
  }));
}

const ids = (values: string[]) => values.map((v) => JSON.parse(v).id as number);
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

async function eventually(check: () => boolean, what: string, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function open(dir: string, target: MemorySink, more: Partial<DiskBufferOptions> = {}) {
  return DiskBuffer.open({
    dir,
    maxBytes: 1 << 30,
    whenFull: "block",
    health: new Health(undefined, () => {}),
    targets: [target, undefined],
    ...more,
  });
}

const never = new AbortController().signal;

Deno.test("buffer: batches are acknowledged once on disk and forwarded in order; close drains it", async () => {
  const dir = await Deno.makeTempDir();
  const target = new MemorySink();
  const buffer = open(dir, target);
  const sink = buffer.sink(0);
  for (let b = 0; b < 20; b++) assert.deepEqual(await sink.send(records(b * 50, 50)), []);
  await buffer.close(never);
  assert.deepEqual(ids(target.values), range(0, 1000));
  assert.equal(buffer.records, 0);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("buffer: records appended after the forwarder emptied the buffer are forwarded too", async () => {
  const dir = await Deno.makeTempDir();
  const target = new MemorySink();
  const buffer = open(dir, target);
  for (let b = 0; b < 3; b++) {
    await buffer.sink(0).send(records(b * 10, 10));
    await eventually(() => buffer.records === 0, `batch ${b} forwarded`);
  }
  await buffer.close(never);
  assert.deepEqual(ids(target.values), range(0, 30));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("buffer: what was acknowledged while the uplink was down is forwarded by the next run", async () => {
  const dir = await Deno.makeTempDir();
  const down = new MemorySink();
  down.hold = new Promise(() => {}); // never answers: the uplink is down
  const first = open(dir, down);
  for (let b = 0; b < 10; b++) await first.sink(0).send(records(b * 100, 100));
  assert.equal(first.records, 1000);
  assert.match(first.describe(), /buffer \d+ % of 1\.0 GiB \(1000 records\), oldest \d+ s/);
  const stop = new AbortController();
  stop.abort(); // the shutdown deadline: leave the rest on disk
  await first.close(stop.signal);
  assert.deepEqual(down.values, []);

  const up = new MemorySink();
  const second = open(dir, up);
  await second.close(never);
  assert.deepEqual(ids(up.values), range(0, 1000));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("buffer: a backlog larger than the in-memory tail is read back from disk, in order", async () => {
  const dir = await Deno.makeTempDir();
  const target = new MemorySink();
  let release!: () => void;
  target.hold = new Promise((r) => release = r);
  const buffer = open(dir, target);
  for (let b = 0; b < 30; b++) await buffer.sink(0).send(records(b * 200, 200, 1000)); // ~6 MB > 4 MiB
  release();
  target.hold = undefined;
  for (let b = 30; b < 40; b++) await buffer.sink(0).send(records(b * 200, 200, 1000)); // while draining
  await buffer.close(never);
  assert.deepEqual(ids(target.values), range(0, 8000));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("buffer: a second process on the same directory is refused with a clear message", async () => {
  const dir = await Deno.makeTempDir();
  const buffer = open(dir, new MemorySink());
  const script = `import { BufferStore } from "${new URL("../../src/buffer/store.ts", import.meta.url).href}";
    try { BufferStore.open(${
    JSON.stringify(dir)
  }); console.log("opened"); } catch (e) { console.log(e.message); }`;
  const out = await new Deno.Command(Deno.execPath(), { args: ["eval", script], stderr: "inherit" }).output();
  assert.match(new TextDecoder().decode(out.stdout), /is in use by another edgeinfer process/);
  await buffer.close(never);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("buffer: full with block, appends wait until records are forwarded; nothing is lost", async () => {
  const dir = await Deno.makeTempDir();
  const target = new MemorySink();
  let release!: () => void;
  target.hold = new Promise((r) => release = r);
  const buffer = open(dir, target, { maxBytes: 20_000 });
  const sink = buffer.sink(0);
  let accepted = 0;
  const writer = (async () => {
    for (let b = 0; b < 20; b++) {
      await sink.send(records(b * 10, 10)); // ~1.3 KB per batch: ~15 batches fit
      accepted = b + 1;
    }
  })();
  await eventually(() => accepted >= 10, "the first batches");
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(accepted < 20, `appends stopped at the bound (${accepted} of 20 batches accepted)`);
  assert.ok(buffer.bytes <= 20_000);
  assert.match(buffer.describe(), /full since/);
  release();
  target.hold = undefined;
  await writer;
  await buffer.close(never);
  assert.deepEqual(ids(target.values), range(0, 200));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("buffer: full with drop-oldest, the oldest records are dropped and counted", async () => {
  const dir = await Deno.makeTempDir();
  const target = new MemorySink();
  let release!: () => void;
  target.hold = new Promise((r) => release = r);
  const buffer = open(dir, target, { maxBytes: 20_000, whenFull: "drop-oldest" });
  for (let b = 0; b < 40; b++) await buffer.sink(0).send(records(b * 10, 10));
  assert.ok(buffer.dropped > 0, "something was dropped");
  assert.ok(buffer.bytes <= 20_000, `within the bound (${buffer.bytes})`);
  release();
  target.hold = undefined;
  await buffer.close(never);
  const got = ids(target.values);
  // What the forwarder had taken before the bound was reached, then the newest: the dropped ones are the oldest.
  assert.equal(got.length + buffer.dropped, 400);
  assert.deepEqual(got.slice(-50), range(350, 400), "the newest records are kept");
  assert.deepEqual([...got].sort((a, b) => a - b), got, "in order");
  assert.match(buffer.describe(), /empty/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("buffer: a record the sink would refuse is refused at append time (the pipeline dead-letters it)", async () => {
  const dir = await Deno.makeTempDir();
  const target = new MemorySink();
  target.refuses = (r) => r.value.length > 150 ? "too large" : undefined;
  const buffer = open(dir, target);
  const batch = [...records(0, 2), ...records(2, 1, 500), ...records(3, 2)];
  assert.deepEqual(await buffer.sink(0).send(batch), [{ index: 2, reason: "too large" }]);
  await buffer.close(never);
  assert.deepEqual(ids(target.values), [0, 1, 3, 4]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("buffer: a torn write-ahead-log tail is dropped, everything committed before it is kept", async () => {
  const dir = await Deno.makeTempDir();
  const store = BufferStore.open(dir);
  for (let b = 0; b < 5; b++) {
    store.append(records(b * 10, 10).map((r) => ({ ...r, dest: 0, bytes: r.value.length })));
  }
  // Copy the files as a crash would leave them (the lock dies with the process), then tear the last
  // commit: cut the WAL in the middle of its last frame.
  const crashed = await Deno.makeTempDir();
  for (const f of ["edgeinfer-buffer.db", "edgeinfer-buffer.db-wal"]) {
    await Deno.copyFile(`${dir}/${f}`, `${crashed}/${f}`);
  }
  store.close();
  const wal = `${crashed}/edgeinfer-buffer.db-wal`;
  const size = (await Deno.stat(wal)).size;
  assert.ok(size > 4096, `the commits are in the WAL (${size} bytes)`);
  await Deno.truncate(wal, size - 1000);
  const reopened = BufferStore.open(crashed);
  const kept = reopened.readAfter(0, 1000).map((r) => JSON.parse(r.value).id as number);
  assert.ok(kept.length >= 40 && kept.length < 50, `the torn last commit is gone (${kept.length} kept)`);
  assert.deepEqual(kept, range(0, kept.length), "everything before it is intact and in order");
  assert.equal(reopened.records, kept.length);
  reopened.close();
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(crashed, { recursive: true });
});

/** A 4 MiB tmpfs (needs root, as CI runs); undefined where it cannot be mounted. */
async function tinyDisk(): Promise<string | undefined> {
  const dir = await Deno.makeTempDir({ prefix: "edgeinfer-tiny-disk-" });
  const out = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=4m", "tmpfs", dir] })
    .output().catch(() => undefined);
  if (out?.success) return dir;
  await Deno.remove(dir);
  return undefined;
}

const disk = Deno.build.os === "linux" ? await tinyDisk() : undefined;
if (disk === undefined) {
  console.log("skipping the full-disk buffer test: cannot mount a 4 MiB tmpfs (not root?)");
}

Deno.test({
  name: "buffer: a full disk (ENOSPC) is a full buffer: appends wait, nothing is corrupted or lost",
  ignore: disk === undefined,
  async fn() {
    const target = new MemorySink();
    let release!: () => void;
    target.hold = new Promise((r) => release = r);
    const buffer = open(disk!, target); // 1 GiB allowed: the disk fills first
    let accepted = 0;
    const writer = (async () => {
      for (let b = 0; b < 100; b++) {
        await buffer.sink(0).send(records(b * 20, 20, 400)); // ~9 KB per batch: ~900 KB in all, after the 2 MiB reserve
        accepted = b + 1;
      }
    })();
    try {
      await eventually(() => /full since/.test(buffer.describe()), "the disk to fill up", 10_000);
      const stuck = accepted;
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(accepted, stuck, "appends wait while the disk is full");
      assert.ok(stuck > 10 && stuck < 100, `some batches fit (${stuck})`);
      release();
      target.hold = undefined;
      await writer;
      await buffer.close(never);
      assert.deepEqual(ids(target.values), range(0, 2000), "every record forwarded, in order");
    } finally {
      release();
      await new Deno.Command("umount", { args: [disk!] }).output();
      await Deno.remove(disk!, { recursive: true });
    }
  },
});
