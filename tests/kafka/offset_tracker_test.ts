import assert from "node:assert/strict";
import { OffsetTracker } from "../../src/kafka/offset_tracker.ts";

Deno.test("OffsetTracker commits nothing before the first offset is acked", () => {
  const t = new OffsetTracker();
  t.track(0, 0);
  t.track(0, 1);
  assert.equal(t.committable(0), undefined);
  assert.equal(t.committable(7), undefined);
  assert.deepEqual(t.takeCommits(), []);
  assert.equal(t.pending(0), 2);
});

Deno.test("OffsetTracker commits only the contiguous acked prefix under out-of-order acks", () => {
  const t = new OffsetTracker();
  const tickets = [10, 11, 12, 13].map((o) => t.track(0, o));
  t.ack(0, tickets[2]);
  t.ack(0, tickets[3]);
  assert.equal(t.committable(0), undefined, "offset 10 not acked yet");
  t.ack(0, tickets[0]);
  assert.equal(t.committable(0), 11);
  t.ack(0, tickets[1]);
  assert.equal(t.committable(0), 14, "offset after the last acked one");
  assert.equal(t.pending(0), 0);
});

Deno.test("OffsetTracker handles offset gaps (compaction, transaction markers)", () => {
  const t = new OffsetTracker();
  const a = t.track(0, 3);
  const b = t.track(0, 7);
  const c = t.track(0, 20);
  t.ack(0, b);
  t.ack(0, a);
  assert.equal(t.committable(0), 8);
  t.ack(0, c);
  assert.equal(t.committable(0), 21);
});

Deno.test("OffsetTracker keeps partitions apart", () => {
  const t = new OffsetTracker();
  const p0 = [t.track(0, 0), t.track(0, 1)];
  const p2 = [t.track(2, 100), t.track(2, 101)];
  t.ack(2, p2[0]);
  t.ack(0, p0[1]);
  assert.equal(t.committable(0), undefined);
  assert.equal(t.committable(2), 101);
  assert.deepEqual(t.committableOffsets(), [{ partition: 2, offset: 101 }]);
  t.ack(0, p0[0]);
  assert.deepEqual(t.committableOffsets(), [{ partition: 0, offset: 2 }, { partition: 2, offset: 101 }]);
});

Deno.test("OffsetTracker ignores double and unknown acks", () => {
  const t = new OffsetTracker();
  const a = t.track(1, 5);
  const b = t.track(1, 6);
  assert.equal(t.ack(1, b), true);
  assert.equal(t.ack(1, b), false, "second ack of the same ticket");
  assert.equal(t.ack(1, 99), false, "ticket never handed out");
  assert.equal(t.ack(4, a), false, "partition never seen");
  assert.equal(t.committable(1), undefined);
  assert.equal(t.ack(1, a), true);
  assert.equal(t.ack(1, a), false, "already released");
  assert.equal(t.committable(1), 7);
});

Deno.test("OffsetTracker takeCommits returns each advance once", () => {
  const t = new OffsetTracker();
  const a = t.track(0, 0);
  const b = t.track(0, 1);
  const c = t.track(3, 0);
  t.ack(0, a);
  t.ack(3, c);
  assert.deepEqual(t.takeCommits(), [{ partition: 0, offset: 1 }, { partition: 3, offset: 1 }]);
  assert.deepEqual(t.takeCommits(), []);
  t.ack(0, b);
  assert.deepEqual(t.takeCommits(), [{ partition: 0, offset: 2 }]);
  // committableOffsets still reports everything (e.g. to retry after a failed commit).
  assert.equal(t.committableOffsets().length, 2);
});

Deno.test("OffsetTracker forget makes outstanding tickets stale and drops the committable offset", () => {
  const t = new OffsetTracker();
  const old = [t.track(0, 0), t.track(0, 1), t.track(0, 2)];
  const other = t.track(1, 0);
  t.ack(0, old[0]);
  t.forget(0);
  assert.equal(t.committable(0), undefined);
  assert.equal(t.pending(0), 0);
  // Kafka redelivers from the committed offset: the same offsets come again.
  const again = [t.track(0, 1), t.track(0, 2)];
  assert.equal(t.ack(0, old[1]), false, "ack from before the rebalance is ignored");
  assert.equal(t.ack(0, old[2]), false);
  assert.equal(t.committable(0), undefined);
  t.ack(0, again[0]);
  assert.equal(t.committable(0), 2);
  t.ack(1, other);
  assert.equal(t.committable(1), 1, "other partitions are untouched");
  t.forgetAll();
  assert.deepEqual(t.committableOffsets(), []);
});

Deno.test("OffsetTracker resets a partition when an offset is handed out again", () => {
  const t = new OffsetTracker();
  const a = t.track(0, 5);
  t.track(0, 6);
  const redelivered = t.track(0, 5); // consumer went back without a forget()
  assert.equal(t.ack(0, a), false);
  t.ack(0, redelivered);
  assert.equal(t.committable(0), 6);
});

Deno.test("OffsetTracker grows past its initial ring size and wraps around", () => {
  const t = new OffsetTracker();
  const tickets: number[] = [];
  for (let i = 0; i < 5000; i++) tickets.push(t.track(0, i));
  // Ack all but the first, in reverse; nothing is committable until offset 0 is acked.
  for (let i = tickets.length - 1; i >= 1; i--) t.ack(0, tickets[i]);
  assert.equal(t.committable(0), undefined);
  assert.equal(t.pending(0), 5000);
  t.ack(0, tickets[0]);
  assert.equal(t.committable(0), 5000);
  // Steady state: a window of 100 in flight, head wraps around the ring many times.
  let next = 5000;
  const window: number[] = [];
  for (let i = 0; i < 100_000; i++) {
    window.push(t.track(0, next++));
    if (window.length === 100) t.ack(0, window.shift()!);
  }
  assert.equal(t.committable(0), next - 99);
  assert.equal(t.pending(0), 99);
});

Deno.test("OffsetTracker accepts offsets up to 2^53 and rejects the rest", () => {
  const t = new OffsetTracker();
  const big = Number.MAX_SAFE_INTEGER - 1;
  t.ack(0, t.track(0, big));
  assert.equal(t.committable(0), Number.MAX_SAFE_INTEGER);
  assert.throws(() => t.track(1, 2 ** 63), /between 0 and 2\^53/);
  assert.throws(() => t.track(1, -1), RangeError);
  assert.throws(() => t.track(1, NaN), RangeError);
});
