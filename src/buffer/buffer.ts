/**
 * Store and forward (`--buffer DIR`): the pipeline's sinks are replaced by appends to a durable store on
 * local disk (store.ts), so an event is acknowledged to its source once its prediction or dead letter is
 * on disk, not once Kafka has it. A forwarder sends the store's records to the real sinks in order,
 * removes them once a sink confirmed them, and keeps going while new ones are appended: inference runs at
 * full speed through an uplink outage for as long as the buffer has room.
 *
 * - Order: records are forwarded in append order (chunks of up to FORWARD_CHUNK_BYTES, several in flight;
 *   the sinks keep call order), so per-key order holds through the buffer.
 * - Full (`--buffer-max-bytes` of records, or the disk itself full): `block` stops accepting batches,
 *   which holds the pipeline and then the source (backpressure, as without a buffer); `drop-oldest`
 *   removes the oldest records not being forwarded right now, counted and logged, and never blocks: when
 *   all the buffer holds is being forwarded, a batch goes in over the bound (by at most what is in flight).
 * - After a crash: what was appended (acknowledged) is forwarded by the next run on the same DIR; what was
 *   being forwarded when it died is sent again (duplicates, never loss).
 * - A record the sink refuses before sending (over max-record-bytes) is refused to the pipeline at append
 *   time, which dead-letters it as without a buffer; one the broker refuses later is dropped and logged.
 */
import { type Logger, rootLogger } from "../log.ts";
import type { Health } from "../pipeline/health.ts";
import type { OutRecord, Refusal, Sink } from "../pipeline/types.ts";
import { type BufferedRecord, BufferStore, isDiskFull, type NewRecord } from "./store.ts";

export type WhenFull = "block" | "drop-oldest";
export const WHEN_FULL: WhenFull[] = ["block", "drop-oldest"];

/** `--buffer-max-bytes` default: 1 GiB of records (~4M car predictions, ~70 min at 1000 events/s). */
export const DEFAULT_BUFFER_MAX_BYTES = 1024 ** 3;

/** Bytes read and sent per forwarding step (a sink splits it into its own requests). */
const FORWARD_CHUNK_BYTES = 512 * 1024;
const FORWARD_CHUNK_ROWS = 4096;
/** Chunks sent and not yet confirmed: keeps a Kafka sink's requests back to back while draining. */
const CHUNKS_IN_FLIGHT = 4;
/** Record bytes kept in memory for the forwarder (see #tail). */
const TAIL_BYTES = 4 * 1024 * 1024;
/** A backlog that lasted at least this long gets an "empty again" line when it is drained. */
const BACKLOG_LOG_MS = 5000;

export interface DiskBufferOptions {
  dir: string;
  maxBytes: number;
  whenFull: WhenFull;
  health: Health;
  /** Where its lines go (backlog, full, empty again); default: the root logger. */
  logger?: Logger;
  /** The real sinks, by destination: 0 the --sink, 1 the --dlq (absent without one). */
  targets: [Sink, Sink | undefined];
}

export class DiskBuffer {
  readonly #o: DiskBufferOptions;
  readonly #store: BufferStore;
  /** The last record handed to the forwarder (read, maybe not yet confirmed). */
  #cursor = 0;
  /**
   * The records after #cursor, in order, kept in memory while that is all of them and under TAIL_BYTES: the
   * forwarder then takes them from here instead of reading back what was just written (a third of the
   * buffer's cost when the uplink keeps up). Undefined: read the store (a backlog, or records of an earlier run).
   */
  #tail: BufferedRecord[] | undefined;
  #tailBytes = 0;
  #inFlight = 0;
  #forwarding: Promise<void> | undefined;
  /** Chunks' confirmations, chained: removals happen in order. */
  #confirmed: Promise<void> = Promise.resolve();
  #closing = false;
  #stopped = false;
  #failure: Error | undefined;
  /** Wakes the forwarder (new records, a confirmation, closing). */
  #wakeForwarder: (() => void) | undefined;
  /** Wakes appenders blocked on a full buffer. */
  #spaceWaiters: (() => void)[] = [];
  #fullSince: number | undefined;
  /** Records removed by drop-oldest, and records a target refused after they were buffered. */
  dropped = 0;
  refused = 0;
  forwarded = 0;
  #lastDropLog = 0;
  /** Since when the buffer holds records, and `forwarded` then: for the "empty again" line. */
  #backlog: { since: number; forwarded: number } | undefined;

  readonly #log: Logger;

  private constructor(o: DiskBufferOptions, store: BufferStore) {
    this.#o = o;
    this.#log = o.logger ?? rootLogger;
    this.#store = store;
  }

  /** Opens the store (refused if another process holds DIR) and starts forwarding what it holds. */
  static open(o: DiskBufferOptions): DiskBuffer {
    const buffer = new DiskBuffer(o, BufferStore.open(o.dir));
    if (buffer.#store.records === 0) buffer.#tail = [];
    if (buffer.#store.records > 0) {
      buffer.#backlog = { since: Date.now(), forwarded: 0 };
      buffer.#log.info(
        `buffer: ${buffer.#store.records} records (${formatBytes(buffer.#store.bytes)}) left by an earlier ` +
          `run in ${o.dir}: forwarding them first`,
      );
    }
    buffer.#forwarding = buffer.#forward();
    return buffer;
  }

  /** The sink the pipeline writes destination `dest`'s records to. */
  sink(dest: 0 | 1): Sink {
    const target = this.#o.targets[dest]!;
    return {
      description: `buffer ${this.#o.dir} → ${target.description}`,
      send: (records) => this.#accept(dest, records),
      close: () => Promise.resolve(),
    };
  }

  get records(): number {
    return this.#store.records;
  }

  get bytes(): number {
    return this.#store.bytes;
  }

  /** When the oldest record held was buffered (ms), if any. */
  oldestAt(): number | undefined {
    return this.#store.oldestAt();
  }

  /** For the status line: "buffer 35 % of 1.0 GiB (1234567 records), oldest 17 min". */
  describe(): string {
    const { records, bytes } = this.#store;
    // What drop-oldest dropped stays in view after the buffer emptied (the run's summary does not have it).
    if (records === 0) {
      return `buffer empty${this.dropped > 0 ? `, ${this.dropped} dropped (drop-oldest)` : ""}`;
    }
    const oldest = this.#store.oldestAt();
    const percent = (100 * bytes / this.#o.maxBytes).toFixed(0);
    return `buffer ${percent} % of ${formatBytes(this.#o.maxBytes)} (${records} records)` +
      (oldest === undefined ? "" : `, oldest ${formatAge(Date.now() - oldest)}`) +
      (this.#fullSince !== undefined
        ? `, full since ${new Date(this.#fullSince).toISOString().slice(11, 19)}`
        : "") +
      (this.dropped > 0 ? `, ${this.dropped} dropped (drop-oldest)` : "");
  }

  /**
   * Stops accepting, then forwards what is left until the buffer is empty or `abandon` aborts (the rest
   * stays on disk for the next run), and closes the store. The real sinks are closed by the caller after.
   */
  async close(abandon: AbortSignal): Promise<void> {
    this.#closing = true;
    this.#wake();
    const onAbandon = () => {
      this.#stopped = true;
      this.#wake();
    };
    if (abandon.aborted) onAbandon();
    else abandon.addEventListener("abort", onAbandon, { once: true });
    try {
      await this.#forwarding;
    } finally {
      abandon.removeEventListener("abort", onAbandon);
      for (const w of this.#spaceWaiters.splice(0)) w();
      if (this.#store.records > 0) {
        this.#log.warn(
          `buffer: ${this.#store.records} records (${
            formatBytes(this.#store.bytes)
          }) stay in ${this.#o.dir} ` +
            `and are forwarded by the next run`,
        );
      }
      this.#store.close();
    }
    if (this.#failure) throw this.#failure;
  }

  async #accept(dest: number, records: OutRecord[]): Promise<Refusal[]> {
    const refused: Refusal[] = [];
    const rows: NewRecord[] = [];
    let bytes = 0;
    for (let index = 0; index < records.length; index++) {
      const r = records[index];
      // What the target would refuse without sending (its size limit) is refused now, at append time.
      const reason = this.#o.targets[dest]?.refuses?.(r);
      if (reason !== undefined) {
        refused.push({ index, reason });
        continue;
      }
      const size = recordBytes(r);
      bytes += size;
      rows.push({ dest, key: r.key, value: r.value, headers: r.headers, bytes: size });
    }
    let diskFull = false;
    // Room was made by dropping records, or the batch goes in over the bound: the buffer is still full
    // (one "full" line and one "full since" for the whole stretch, not a full/accepting pair per batch).
    let stillFull = false;
    let overBound = false;
    while (rows.length > 0) {
      if (this.#failure) throw this.#failure;
      if (this.#stopped) throw new Error("the buffer was closed"); // shutdown gave up: not acknowledged
      // A batch larger than the whole buffer still goes in when the buffer is empty.
      if (overBound || this.#store.bytes + bytes <= this.#o.maxBytes || this.#store.records === 0) {
        try {
          if (this.#store.records === 0) this.#backlog = { since: Date.now(), forwarded: this.forwarded };
          const stored = this.#store.append(rows);
          if (this.#tail !== undefined) {
            this.#tailBytes += bytes;
            if (this.#tailBytes > TAIL_BYTES) this.#tail = undefined; // a backlog: read it from the store
            else for (const r of stored) this.#tail.push(r);
          }
          if (!stillFull) this.#notFull();
          this.#wake();
          break;
        } catch (e) {
          if (!isDiskFull(e)) throw this.#fail(e);
          // A full disk is a full buffer (the store is intact: the transaction was rolled back).
          diskFull = true;
        }
      }
      this.#isFull(diskFull);
      if (this.#o.whenFull === "drop-oldest") {
        if (this.#dropOldest(bytes)) {
          stillFull = true;
          continue;
        }
        // Nothing left to drop: all the buffer holds is being forwarded (sent, not yet confirmed: up to
        // CHUNKS_IN_FLIGHT chunks), which cannot be dropped. Waiting for it would stop acknowledgements for
        // as long as the uplink is down, which drop-oldest must not do: the batch goes in over the bound
        // (by at most what is in flight). Not on a full disk: there it waits for room, as with block.
        if (!diskFull) {
          stillFull = overBound = true;
          continue;
        }
      }
      overBound = false;
      await new Promise<void>((resolve) => this.#spaceWaiters.push(resolve));
    }
    return refused;
  }

  /** Removes the oldest records not being forwarded, at least `bytes` of them; false if there were none. */
  #dropOldest(bytes: number): boolean {
    let freed = 0;
    let count = 0;
    let last = this.#cursor;
    while (freed < bytes) {
      const rows = this.#store.readAfter(last, FORWARD_CHUNK_ROWS);
      if (rows.length === 0) break;
      for (const r of rows) {
        freed += r.bytes;
        count++;
        last = r.seq;
        if (freed >= bytes) break;
      }
    }
    if (count === 0) return false;
    this.#store.remove(this.#cursor, last, count, freed);
    this.#tail = undefined; // read what is left from the store
    this.dropped += count;
    const now = Date.now();
    if (now - this.#lastDropLog >= 10_000) {
      this.#lastDropLog = now;
      this.#log.warn(
        `buffer: full (${formatBytes(this.#o.maxBytes)}): dropped the ${count} oldest records ` +
          `(--buffer-when-full drop-oldest; ${this.dropped} so far)`,
      );
    }
    return true;
  }

  #isFull(diskFull: boolean): void {
    if (this.#fullSince !== undefined) return;
    this.#fullSince = Date.now();
    this.#log.warn(
      `buffer: full (${
        diskFull ? `the disk is full at ${formatBytes(this.#store.bytes)}` : formatBytes(this.#store.bytes)
      } of ${formatBytes(this.#o.maxBytes)}, ${this.#store.records} records): ` +
        (this.#o.whenFull === "block"
          ? "not accepting more until records are forwarded (--buffer-when-full block)"
          : "dropping the oldest records (--buffer-when-full drop-oldest)"),
    );
  }

  #notFull(): void {
    if (this.#fullSince === undefined) return;
    this.#log.warn(`buffer: accepting again after ${formatAge(Date.now() - this.#fullSince)} full`);
    this.#fullSince = undefined;
  }

  #fail(e: unknown): Error {
    this.#failure ??= e instanceof Error ? e : new Error(String(e));
    this.#o.health.fatal(new Error(`buffer ${this.#o.dir}: ${this.#failure.message}`));
    this.#stopped = true;
    this.#wake();
    return this.#failure;
  }

  #wake(): void {
    const w = this.#wakeForwarder;
    this.#wakeForwarder = undefined;
    w?.();
  }

  async #forward(): Promise<void> {
    while (!this.#stopped) {
      const rows = this.#inFlight < CHUNKS_IN_FLIGHT ? this.#readChunk() : [];
      if (rows.length > 0) {
        this.#inFlight++;
        const sent = this.#send(rows);
        const after = this.#cursor;
        const last = rows[rows.length - 1].seq;
        this.#cursor = last;
        const previous = this.#confirmed;
        this.#confirmed = (async () => {
          const refused = await sent.catch((e) => {
            if (!this.#stopped) this.#fail(e); // after an abandon, the closed sinks reject: not a failure
            return undefined;
          });
          await previous;
          this.#inFlight--;
          if (refused === undefined || this.#stopped) return;
          this.refused += refused;
          this.forwarded += rows.length - refused;
          try {
            this.#store.remove(after, last, rows.length, rows.reduce((n, r) => n + r.bytes, 0));
          } catch (e) {
            this.#fail(e);
            return;
          }
          if (this.#store.records === 0) this.#emptied();
          for (const w of this.#spaceWaiters.splice(0)) w();
          this.#wake();
        })();
        continue;
      }
      if (this.#closing && this.#inFlight === 0 && this.#store.records === 0) break;
      await new Promise<void>((resolve) => this.#wakeForwarder = resolve);
    }
    // Abandoned (shutdown timeout, or a failure): sends still in flight may wait for a sink that is down;
    // their records stay on disk (sent again by the next run) and the caller closes the sinks now.
    if (!this.#stopped) await this.#confirmed;
  }

  /** The buffer is empty: after a backlog (an outage, or records left by an earlier run), say so. */
  #emptied(): void {
    this.#store.restoreReserve();
    const backlog = this.#backlog;
    this.#backlog = undefined;
    if (backlog === undefined) return;
    const ms = Date.now() - backlog.since;
    if (ms < BACKLOG_LOG_MS) return;
    const n = this.forwarded - backlog.forwarded;
    this.#log.info(
      `buffer: empty again after ${formatAge(ms)}: ${n} records forwarded meanwhile ` +
        `(${Math.round(n / (ms / 1000))}/s on average)`,
    );
  }

  #readChunk(): BufferedRecord[] {
    const tail = this.#tail;
    const rows = tail ?? this.#store.readAfter(this.#cursor, FORWARD_CHUNK_ROWS);
    let bytes = 0;
    let end = rows.length;
    for (let i = 0; i < rows.length; i++) {
      bytes += rows[i].bytes;
      if (bytes > FORWARD_CHUNK_BYTES && i > 0) {
        end = i;
        break;
      }
    }
    if (tail !== undefined) {
      const chunk = end === tail.length ? tail : tail.slice(0, end);
      this.#tail = end === tail.length ? [] : tail.slice(end);
      for (const r of chunk) this.#tailBytes -= r.bytes;
      if (this.#tail.length === 0) this.#tailBytes = 0;
      return chunk;
    }
    // Read everything after the cursor (fewer rows than asked, none cut off): from now on the tail holds
    // whatever is appended, in memory.
    if (end === rows.length && rows.length < FORWARD_CHUNK_ROWS) {
      this.#tail = [];
      this.#tailBytes = 0;
    }
    return end === rows.length ? rows : rows.slice(0, end);
  }

  /** Sends one chunk to its targets; resolves with how many records they refused (logged). */
  async #send(rows: BufferedRecord[]): Promise<number> {
    const byDest: [OutRecord[], OutRecord[]] = [[], []];
    for (const r of rows) {
      byDest[r.dest === 1 ? 1 : 0].push({ key: r.key, value: r.value, headers: r.headers });
    }
    const results = await Promise.all(byDest.map(async (records, dest) => {
      if (records.length === 0) return 0;
      const target = this.#o.targets[dest];
      if (target === undefined) {
        this.#log.warn(
          `buffer: ${records.length} dead letters buffered for a --dlq this run does not have: dropped`,
        );
        return records.length;
      }
      const refused = (await target.send(records)) ?? [];
      for (const { reason } of refused.slice(0, 3)) {
        this.#log.warn(
          `buffer: ${target.description} refused a buffered record for good, dropped: ${reason}`,
        );
      }
      return refused.length;
    }));
    return results[0] + results[1];
  }
}

/** What --buffer-max-bytes counts of a record: key, value and headers. */
function recordBytes(r: OutRecord): number {
  let n = 16 + r.value.length + (r.key?.length ?? 0);
  for (const k in r.headers) n += k.length + r.headers[k].length;
  return n;
}

function formatBytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(1)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(0)} KiB`;
}

function formatAge(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
