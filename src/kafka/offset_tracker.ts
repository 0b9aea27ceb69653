/**
 * Per-partition bookkeeping of Kafka offsets handed out in order and acknowledged in any order.
 *
 * The committable offset of a partition is the offset *after* the highest contiguous acknowledged
 * one (Kafka's commit convention: the committed offset is the next one to read).
 *
 * Hot path (one `track` and one `ack` per event) allocates nothing: each partition keeps a ring of
 * pending offsets (Float64Array) with an acked flag per slot (Uint8Array) and a head index.
 * `track` returns a ticket, a per-partition sequence number that only grows; `ack` takes it back.
 * Tickets below the head (already released, or forgotten on rebalance) are ignored, so a late ack
 * from before a `forget` can never acknowledge a newer delivery of the same offset.
 *
 * Offsets are plain numbers (the client's int64 bigints converted once per event): exact up to 2^53
 * (at a million messages a second that is 285 years of one partition), no bigint kept per event.
 */

/** An offset to commit: the next offset to read from `partition`. */
export interface PartitionOffset {
  partition: number;
  offset: number;
}

const INITIAL_CAPACITY = 1024;

class PartitionState {
  offsets = new Float64Array(INITIAL_CAPACITY);
  acked = new Uint8Array(INITIAL_CAPACITY);
  mask = INITIAL_CAPACITY - 1;
  /** Ticket of the oldest pending offset. */
  head = 0;
  /** Ticket the next tracked offset gets. */
  tail = 0;
  /** Last offset tracked since the last reset; -1 when none. */
  last = -1;
  /** Offset after the highest contiguous acked offset since the last reset; -1 when none. */
  committable = -1;
  /** What takeCommits() last returned; -1 when none. */
  taken = -1;

  reset(): void {
    this.head = this.tail; // pending tickets become stale
    this.last = -1;
    this.committable = -1;
    this.taken = -1;
  }

  grow(): void {
    const size = this.mask + 1;
    const offsets = new Float64Array(size * 2);
    const acked = new Uint8Array(size * 2);
    const newMask = size * 2 - 1;
    for (let t = this.head; t < this.tail; t++) {
      offsets[t & newMask] = this.offsets[t & this.mask];
      acked[t & newMask] = this.acked[t & this.mask];
    }
    this.offsets = offsets;
    this.acked = acked;
    this.mask = newMask;
  }
}

export class OffsetTracker {
  // Indexed by partition number (small, dense integers).
  #partitions: (PartitionState | undefined)[] = [];

  /**
   * Records that `offset` of `partition` was handed out and returns the ticket for ack().
   * Offsets of a partition must be handed out in increasing order (gaps are fine). An offset at or
   * below the last one means Kafka is redelivering (e.g. the consumer went back to the committed
   * offset): the partition is reset first, so pending tickets become stale.
   */
  track(partition: number, offset: number): number {
    const n = offset;
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new RangeError(`expected a Kafka offset between 0 and 2^53, found "${offset}"`);
    }
    const s = this.#partitions[partition] ??= new PartitionState();
    if (n <= s.last) s.reset();
    if (s.tail - s.head > s.mask) s.grow();
    const ticket = s.tail++;
    s.offsets[ticket & s.mask] = n;
    s.acked[ticket & s.mask] = 0;
    s.last = n;
    return ticket;
  }

  /**
   * Acknowledges the offset behind `ticket`. Returns false (and does nothing) when the ticket is
   * stale: already acked, or forgotten since it was handed out.
   */
  ack(partition: number, ticket: number): boolean {
    const s = this.#partitions[partition];
    if (s === undefined || ticket < s.head || ticket >= s.tail) return false;
    const slot = ticket & s.mask;
    if (s.acked[slot] === 1) return false;
    s.acked[slot] = 1;
    // Release the acked prefix; amortised O(1) per ack.
    while (s.head < s.tail && s.acked[s.head & s.mask] === 1) {
      s.committable = s.offsets[s.head & s.mask] + 1;
      s.head++;
    }
    return true;
  }

  /** The offset to commit for `partition` (after its highest contiguous acked offset), if any. */
  committable(partition: number): number | undefined {
    const s = this.#partitions[partition];
    return s === undefined || s.committable < 0 ? undefined : s.committable;
  }

  /** Every partition with a committable offset (e.g. for the final commit at close). */
  committableOffsets(): PartitionOffset[] {
    const out: PartitionOffset[] = [];
    this.#partitions.forEach((s, partition) => {
      if (s !== undefined && s.committable >= 0) out.push({ partition, offset: s.committable });
    });
    return out;
  }

  /** Partitions whose committable offset advanced since the previous call (periodic commits). */
  takeCommits(): PartitionOffset[] {
    const out: PartitionOffset[] = [];
    this.#partitions.forEach((s, partition) => {
      if (s !== undefined && s.committable > s.taken) {
        s.taken = s.committable;
        out.push({ partition, offset: s.committable });
      }
    });
    return out;
  }

  /** Number of offsets handed out and not yet released (acked as part of a contiguous prefix). */
  pending(partition: number): number {
    const s = this.#partitions[partition];
    return s === undefined ? 0 : s.tail - s.head;
  }

  /** Drops a partition's state (rebalance revoke): its outstanding tickets become stale. */
  forget(partition: number): void {
    this.#partitions[partition]?.reset();
  }

  /** forget() for every partition. */
  forgetAll(): void {
    for (const s of this.#partitions) s?.reset();
  }
}
