/**
 * Which store for the durable local buffer (`--buffer DIR`): SQLite (node:sqlite, WAL, one transaction per
 * batch) against a hand-written segment log (CRC32-checked, length-prefixed records, fdatasync per batch,
 * whole segments unlinked once forwarded). Both are implemented here, minimally, for the measurement only.
 *
 *   deno run -A scripts/bench_buffer.ts [--dir D] [--records 200000] [--rounds 3] [--seconds 3]
 *       [--segment-mib 8] [--rate 1000] [--keep]
 *
 * Candidates (the same records, the same machine, one run; the order of the candidates rotates per round):
 *   sqlite-full    journal_mode=WAL, synchronous=FULL: the WAL is fsynced at every COMMIT (durable per batch);
 *   sqlite-normal  journal_mode=WAL, synchronous=NORMAL: COMMIT writes the WAL but does not fsync it (only
 *                  checkpoints sync), so the last transactions survive a process crash but NOT a power loss
 *                  or kernel crash: not durable per commit, shown for comparison only;
 *   segment-log    files `<first seq>.seg` of records [u32 length][u32 crc32][dest, key, value, headers],
 *                  appended with write() + fdatasync() per batch (async: off the event loop); a new segment
 *                  past --segment-mib, with an fsync of the directory; the forwarder's position is a 16-byte
 *                  cursor file, rewritten and fdatasynced after each chunk, and a segment is unlinked once read.
 *
 * Measurements:
 *   append    records/s appending batches of 1, 16 and 256, each batch durable (except sqlite-normal) before
 *             the next; --records records at batch 256 (the fill for the next two), at most --seconds
 *             seconds at batches 1 and 16. With them: how long one append blocks the event loop (SQLite is
 *             synchronous: the whole BEGIN…INSERT…COMMIT; the COMMIT alone too) and how long until durable;
 *   disk      bytes on disk per record after --records records at batch 256 (SQLite: db + WAL + shm, with
 *             the default auto-checkpoint at 1000 pages, as in use; segment log: every file), apparent size
 *             and allocated blocks;
 *   drain     the forwarder reading the oldest records in order in chunks of ~512 KiB, decoding them to
 *             {key, value, headers} (no Kafka: the rate is the store's ceiling) and deleting what it read
 *             (SQLite: SELECT … WHERE seq > ? ORDER BY seq LIMIT n, then DELETE WHERE seq <= last; segment
 *             log: sequential reads, cursor, unlink), while a background appender adds --rate records/s in
 *             batches every 10 ms; until the backlog is gone. Records/s, MB/s of record bytes (key + value +
 *             headers), the background appends' latency and the largest event-loop stall meanwhile;
 *   crash     a torn or corrupted tail (and, for contrast, a corrupted middle): is it detected, dropped, and
 *             everything before it kept?
 *
 * Output: progress on stderr, a Markdown report on stdout. The data directory is a new temporary directory
 * under --dir (default /tmp), removed at the end unless --keep; its filesystem (df -T) is printed, and the
 * run warns on tmpfs, where fsync costs nothing and the figures mean nothing.
 */
import { parseArgs } from "node:util";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { setImmediate as yieldToLoop } from "node:timers/promises";

const { values: args } = parseArgs({
  options: {
    dir: { type: "string", default: "/tmp" },
    records: { type: "string", default: "200000" },
    rounds: { type: "string", default: "3" },
    seconds: { type: "string", default: "3" },
    "segment-mib": { type: "string", default: "8" },
    rate: { type: "string", default: "1000" },
    keep: { type: "boolean", default: false },
  },
});
const N = Number(args.records);
const ROUNDS = Number(args.rounds);
const SECONDS = Number(args.seconds);
const SEGMENT_BYTES = Number(args["segment-mib"]) * 1024 * 1024;
const RATE = Number(args.rate);
const CHUNK_BYTES = 512 * 1024;
const log = (s: string) => console.error(s);

// ---------------------------------------------------------------------------------------------- records

/** One output record as the buffer keeps it: dest 0 = predictions topic, 1 = dead letters. */
interface BufRecord {
  dest: number;
  key: string | undefined;
  value: string;
  headers: Record<string, string>;
}

function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Car-stream records as the product writes them: predictions (`--key-field car --passthrough car`, trace
 * headers) and 1 % dead letters (an invalid JSON payload embedded).
 */
function makePool(size: number): BufRecord[] {
  const rnd = mulberry32(2001);
  const pool: BufRecord[] = [];
  for (let i = 0; i < size; i++) {
    const car = `car-${Math.floor(rnd() * 500)}`;
    const ts = 1733000000000 + i * 7;
    const source = `mqtt:cars/${car}/sensors`;
    if (i % 100 === 99) {
      const payload = `{"car":"${car}","ts":${ts},"speed":${(rnd() * 130).toFixed(1)},"rpm":${
        Math.floor(rnd() * 6000)
      },"coolant":${(80 + rnd() * 20).toFixed(1)},"throttle":${rnd().toFixed(3)},"brake":0,"gear":`;
      let sha = "";
      for (let j = 0; j < 8; j++) sha += Math.floor(rnd() * 2 ** 32).toString(16).padStart(8, "0");
      const error = "invalid JSON: Unexpected end of JSON input";
      pool.push({
        dest: 1,
        key: `cars/${car}/sensors`,
        value: `{"error":${JSON.stringify(error)},"source":${JSON.stringify(source)},"ts":${ts},` +
          `"payload_bytes":${payload.length},"payload_sha256":"${sha}","payload":${JSON.stringify(payload)}}`,
        headers: { "edgeinfer-error": error, "edgeinfer-source": source },
      });
    } else {
      const score = rnd() * 0.02;
      pool.push({
        dest: 0,
        key: car,
        value: `{"key":"${car}","id":${100000 + i},"score":${score},"anomaly":${score > 0.0159},` +
          `"threshold":0.0159,"model":{"name":"car-anomaly","version":"1"},"ts":${ts},"car":"${car}"}`,
        headers: { "edgeinfer-source": source, "edgeinfer-model": "car-anomaly:1" },
      });
    }
  }
  return pool;
}

const POOL = makePool(8192);
let poolAt = 0;
function take(n: number): BufRecord[] {
  const out: BufRecord[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = POOL[(poolAt++) & 8191];
  return out;
}
/** Record bytes: key + value + headers (JSON), all ASCII here. */
const recordBytes = (r: BufRecord, headersJson: string) =>
  (r.key?.length ?? 0) + r.value.length + headersJson.length;
const AVG_RECORD_BYTES = POOL.reduce((s, r) => s + recordBytes(r, JSON.stringify(r.headers)) + 1, 0) /
  POOL.length;
const CHUNK_ROWS = Math.max(1, Math.round(CHUNK_BYTES / AVG_RECORD_BYTES));

// ---------------------------------------------------------------------------------------------- stores

interface Store {
  /** Appends one batch; resolves when it is durable (or committed, for sqlite-normal). */
  append(records: BufRecord[]): Promise<void>;
  /** The oldest unread records, ~512 KiB; [] when none is available. */
  next(): Promise<{ records: BufRecord[]; bytes: number }>;
  /** Deletes / reclaims everything next() returned so far (the forwarder's confirmation). */
  ack(): Promise<void>;
  files(): Promise<string[]>;
  /** Anything else about the space on disk. */
  note(): string;
  close(): Promise<void>;
  /** Per append: ms the event loop was blocked, ms in the commit (COMMIT, or write + fdatasync). */
  blockMs: number[];
  commitMs: number[];
  /** Per next() + ack(): ms the event loop was blocked. */
  drainBlockMs: number[];
}

class SqliteStore implements Store {
  blockMs: number[] = [];
  commitMs: number[] = [];
  drainBlockMs: number[] = [];
  readonly db: DatabaseSync;
  private readonly insert: StatementSync;
  private readonly begin: StatementSync;
  private readonly commit: StatementSync;
  private readonly select: StatementSync;
  private readonly remove: StatementSync;
  private lastRead = 0;

  constructor(readonly path: string, synchronous: "FULL" | "NORMAL", autocheckpoint = 1000) {
    this.db = new DatabaseSync(path);
    this.db.exec(
      `PRAGMA journal_mode=WAL; PRAGMA synchronous=${synchronous}; PRAGMA wal_autocheckpoint=${autocheckpoint};`,
    );
    // Without AUTOINCREMENT, seq restarts at 1 once the table is empty (max(rowid) + 1): a forwarder that
    // keeps `seq > last` across that moment would skip new rows. Harmless here (the drain stops at the first
    // empty read); a real store wants AUTOINCREMENT or no lower bound.
    this.db.exec(
      "CREATE TABLE IF NOT EXISTS buf(seq INTEGER PRIMARY KEY, dest INTEGER NOT NULL, key TEXT, " +
        "value TEXT NOT NULL, headers TEXT NOT NULL)",
    );
    this.insert = this.db.prepare("INSERT INTO buf(dest, key, value, headers) VALUES (?, ?, ?, ?)");
    this.begin = this.db.prepare("BEGIN");
    this.commit = this.db.prepare("COMMIT");
    this.select = this.db.prepare(
      "SELECT seq, dest, key, value, headers FROM buf WHERE seq > ? ORDER BY seq LIMIT ?",
    );
    // At runtime (Deno 2.9) but not in Deno's node:sqlite types: rows as arrays, not objects.
    (this.select as unknown as { setReturnArrays(on: boolean): void }).setReturnArrays(true);
    this.remove = this.db.prepare("DELETE FROM buf WHERE seq <= ?");
  }

  append(records: BufRecord[]): Promise<void> {
    const t0 = performance.now();
    this.begin.run();
    for (const r of records) this.insert.run(r.dest, r.key ?? null, r.value, JSON.stringify(r.headers));
    const t1 = performance.now();
    this.commit.run();
    const t2 = performance.now();
    this.commitMs.push(t2 - t1);
    this.blockMs.push(t2 - t0);
    return Promise.resolve();
  }

  async next(): Promise<{ records: BufRecord[]; bytes: number }> {
    await yieldToLoop(); // DatabaseSync never yields: let the appender in between chunks
    const t0 = performance.now();
    const rows = this.select.all(this.lastRead, CHUNK_ROWS) as unknown as [
      number,
      number,
      string | null,
      string,
      string,
    ][];
    const records: BufRecord[] = new Array(rows.length);
    let bytes = 0;
    for (let i = 0; i < rows.length; i++) {
      const [, dest, key, value, headers] = rows[i];
      const r = { dest, key: key ?? undefined, value, headers: JSON.parse(headers) };
      bytes += recordBytes(r, headers);
      records[i] = r;
    }
    if (rows.length > 0) this.lastRead = rows[rows.length - 1][0];
    this.drainBlockMs.push(performance.now() - t0);
    return { records, bytes };
  }

  ack(): Promise<void> {
    const t0 = performance.now();
    this.remove.run(this.lastRead);
    this.drainBlockMs[this.drainBlockMs.length - 1] += performance.now() - t0;
    return Promise.resolve();
  }

  files(): Promise<string[]> {
    return Promise.resolve([this.path, `${this.path}-wal`, `${this.path}-shm`]);
  }

  note(): string {
    const free =
      (this.db.prepare("PRAGMA freelist_count").get() as { freelist_count: number }).freelist_count;
    const page = (this.db.prepare("PRAGMA page_size").get() as { page_size: number }).page_size;
    return `; db freelist ${(free * page / 1048576).toFixed(1)} MiB (reused, not returned to the OS)`;
  }

  close(): Promise<void> {
    this.db.close();
    return Promise.resolve();
  }
}

// CRC-32 (IEEE), slicing by 4.
const CRC = (() => {
  const t = new Int32Array(256 * 4);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    for (let s = 1; s < 4; s++) {
      t[s * 256 + n] = t[t[(s - 1) * 256 + n] & 0xff] ^ (t[(s - 1) * 256 + n] >>> 8);
    }
  }
  return t;
})();
function crc32(b: Uint8Array, start: number, end: number): number {
  let c = -1;
  let i = start;
  for (; i + 4 <= end; i += 4) {
    c ^= b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24);
    c = CRC[768 + (c & 0xff)] ^ CRC[512 + ((c >>> 8) & 0xff)] ^ CRC[256 + ((c >>> 16) & 0xff)] ^
      CRC[c >>> 24];
  }
  for (; i < end; i++) c = CRC[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

const FRAME = 8; // u32 payload length, u32 crc32(payload)
const MAX_PAYLOAD = 16 * 1024 * 1024;
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** Frames records: [u32 len][u32 crc][u8 dest][u16 keyLen | 0xffff][key][u32 valueLen][value][u16 hLen][headers]. */
class FrameEncoder {
  private buf = new Uint8Array(1 << 20);
  private view = new DataView(this.buf.buffer);

  encode(records: BufRecord[]): Uint8Array {
    let need = 0;
    for (const r of records) need += FRAME + 9 + 3 * ((r.key?.length ?? 0) + r.value.length) + 1024;
    if (need > this.buf.length) {
      this.buf = new Uint8Array(need * 2);
      this.view = new DataView(this.buf.buffer);
    }
    const b = this.buf;
    const v = this.view;
    let p = 0;
    for (const r of records) {
      const start = p;
      p += FRAME;
      b[p++] = r.dest;
      if (r.key === undefined) {
        v.setUint16(p, 0xffff, true);
        p += 2;
      } else {
        const n = utf8.encodeInto(r.key, b.subarray(p + 2)).written;
        v.setUint16(p, n, true);
        p += 2 + n;
      }
      const nv = utf8.encodeInto(r.value, b.subarray(p + 4)).written;
      v.setUint32(p, nv, true);
      p += 4 + nv;
      const nh = utf8.encodeInto(JSON.stringify(r.headers), b.subarray(p + 2)).written;
      v.setUint16(p, nh, true);
      p += 2 + nh;
      v.setUint32(start, p - start - FRAME, true);
      v.setUint32(start + 4, crc32(b, start + FRAME, p), true);
    }
    return b.subarray(0, p);
  }
}

/** Parses the frame at p: a record, "partial" (the frame goes past end) or "corrupt" (bad length or CRC). */
function decodeFrame(
  b: Uint8Array,
  v: DataView,
  p: number,
  end: number,
): { record: BufRecord; next: number; bytes: number } | "partial" | "corrupt" {
  if (end - p < FRAME) return "partial";
  const len = v.getUint32(p, true);
  if (len < 9 || len > MAX_PAYLOAD) return "corrupt";
  if (p + FRAME + len > end) return "partial";
  const q0 = p + FRAME;
  if (crc32(b, q0, q0 + len) !== v.getUint32(p + 4, true)) return "corrupt";
  let q = q0;
  const dest = b[q++];
  const nk = v.getUint16(q, true);
  q += 2;
  let key: string | undefined;
  if (nk !== 0xffff) {
    key = fromUtf8.decode(b.subarray(q, q + nk));
    q += nk;
  }
  const nv = v.getUint32(q, true);
  q += 4;
  const value = fromUtf8.decode(b.subarray(q, q + nv));
  q += nv;
  const nh = v.getUint16(q, true);
  q += 2;
  const headersJson = fromUtf8.decode(b.subarray(q, q + nh));
  const record = { dest, key, value, headers: JSON.parse(headersJson) };
  return { record, next: q0 + len, bytes: recordBytes(record, headersJson) };
}

async function writeAll(f: Deno.FsFile, data: Uint8Array): Promise<void> {
  for (let o = 0; o < data.length;) o += await f.write(data.subarray(o));
}

async function syncDir(dir: string): Promise<void> {
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}

const segName = (base: number) => `${String(base).padStart(20, "0")}.seg`;

interface Recovery {
  records: number;
  droppedBytes: number;
  reason: "clean" | "partial" | "corrupt";
}

class SegmentLog implements Store {
  blockMs: number[] = [];
  commitMs: number[] = [];
  drainBlockMs: number[] = [];
  /** Bases (first seq) of the segments on disk, oldest first; the last one is the active segment. */
  private segments: number[] = [];
  private readonly sealedSize = new Map<number, number>();
  private active!: Deno.FsFile;
  private activeSize = 0;
  private durableSize = 0;
  private nextSeq = 0;
  private readonly encoder = new FrameEncoder();
  recovery: Recovery = { records: 0, droppedBytes: 0, reason: "clean" };
  // forwarder
  private readonly rbuf = new Uint8Array(CHUNK_BYTES);
  private readonly rview = new DataView(this.rbuf.buffer);
  private reader: Deno.FsFile | undefined;
  private readBase = -1;
  private readPos = 0;
  private cursor!: Deno.FsFile;
  private readonly cursorBuf = new Uint8Array(16);

  private constructor(readonly dir: string, readonly segmentBytes: number) {}

  /** Opens (recovers) a log: a torn or corrupt tail of the last segment is cut off at the last good record. */
  static async open(dir: string, segmentBytes = SEGMENT_BYTES): Promise<SegmentLog> {
    const s = new SegmentLog(dir, segmentBytes);
    await Deno.mkdir(dir, { recursive: true });
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.endsWith(".seg")) s.segments.push(Number(e.name.slice(0, -4)));
    }
    s.segments.sort((a, b) => a - b);
    for (const base of s.segments.slice(0, -1)) s.sealedSize.set(base, (await Deno.stat(s.path(base))).size);
    if (s.segments.length === 0) {
      s.segments.push(0);
      await Deno.writeFile(s.path(0), new Uint8Array(0));
      await syncDir(dir);
    } else {
      const base = s.segments[s.segments.length - 1];
      const data = await Deno.readFile(s.path(base));
      const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
      let p = 0;
      let n = 0;
      let reason: Recovery["reason"] = "clean";
      for (;;) {
        if (p === data.length) break;
        const d = decodeFrame(data, v, p, data.length);
        if (typeof d === "string") {
          reason = d;
          break;
        }
        p = d.next;
        n++;
      }
      if (p < data.length) {
        await Deno.truncate(s.path(base), p);
        const f = await Deno.open(s.path(base), { write: true });
        await f.syncData();
        f.close();
      }
      s.recovery = { records: n, droppedBytes: data.length - p, reason };
      s.nextSeq = base + n;
      s.activeSize = s.durableSize = p;
    }
    s.active = await Deno.open(s.path(s.segments[s.segments.length - 1]), { write: true, append: true });
    s.cursor = await Deno.open(`${dir}/cursor`, { read: true, write: true, create: true });
    return s;
  }

  path(base: number): string {
    return `${this.dir}/${segName(base)}`;
  }
  private get activeBase(): number {
    return this.segments[this.segments.length - 1];
  }

  async append(records: BufRecord[]): Promise<void> {
    const t0 = performance.now();
    const data = this.encoder.encode(records);
    const t1 = performance.now();
    this.blockMs.push(t1 - t0);
    await writeAll(this.active, data);
    await this.active.syncData();
    this.commitMs.push(performance.now() - t1);
    this.activeSize += data.length;
    this.durableSize = this.activeSize;
    this.nextSeq += records.length;
    if (this.activeSize >= this.segmentBytes) {
      this.sealedSize.set(this.activeBase, this.activeSize);
      this.active.close();
      this.segments.push(this.nextSeq);
      this.active = await Deno.open(this.path(this.nextSeq), { write: true, create: true, append: true });
      this.activeSize = this.durableSize = 0;
      await syncDir(this.dir); // the new file's name must be durable before records in it are acknowledged
    }
  }

  async next(): Promise<{ records: BufRecord[]; bytes: number }> {
    for (;;) {
      const base = this.segments[0];
      const limit = base === this.activeBase ? this.durableSize : this.sealedSize.get(base)!;
      if (this.readBase !== base) {
        this.reader?.close();
        this.reader = await Deno.open(this.path(base), { read: true });
        this.readBase = base;
        this.readPos = 0;
      }
      if (this.readPos >= limit) {
        if (base === this.activeBase) return { records: [], bytes: 0 };
        // Fully read, and (ack() after every chunk) fully confirmed: reclaim the whole segment.
        this.reader!.close();
        this.reader = undefined;
        this.readBase = -1;
        await Deno.remove(this.path(base));
        this.segments.shift();
        this.sealedSize.delete(base);
        continue;
      }
      const want = Math.min(CHUNK_BYTES, limit - this.readPos);
      await this.reader!.seek(this.readPos, Deno.SeekMode.Start);
      let got = 0;
      while (got < want) {
        const n = await this.reader!.read(this.rbuf.subarray(got, want));
        if (n === null) break;
        got += n;
      }
      const t0 = performance.now();
      const records: BufRecord[] = [];
      let bytes = 0;
      let p = 0;
      for (;;) {
        const d = decodeFrame(this.rbuf, this.rview, p, got);
        if (d === "partial") break;
        if (d === "corrupt") throw new Error(`corrupt record in ${this.path(base)} at ${this.readPos + p}`);
        records.push(d.record);
        bytes += d.bytes;
        p = d.next;
      }
      if (records.length === 0) throw new Error("record larger than a chunk"); // not with these records
      this.readPos += p;
      this.drainBlockMs.push(performance.now() - t0);
      return { records, bytes };
    }
  }

  async ack(): Promise<void> {
    const v = new DataView(this.cursorBuf.buffer);
    v.setFloat64(0, this.readBase, true);
    v.setFloat64(8, this.readPos, true);
    await this.cursor.seek(0, Deno.SeekMode.Start);
    await writeAll(this.cursor, this.cursorBuf);
    await this.cursor.syncData();
  }

  async files(): Promise<string[]> {
    const out: string[] = [];
    for await (const e of Deno.readDir(this.dir)) if (e.isFile) out.push(`${this.dir}/${e.name}`);
    return out.sort();
  }

  note(): string {
    return "";
  }

  close(): Promise<void> {
    this.active.close();
    this.reader?.close();
    this.cursor.close();
    return Promise.resolve();
  }
}

// ---------------------------------------------------------------------------------------------- harness

const CANDIDATES = ["sqlite-full", "sqlite-normal", "segment-log"] as const;
type Candidate = typeof CANDIDATES[number];

async function openStore(c: Candidate, dir: string): Promise<Store> {
  await Deno.mkdir(dir, { recursive: true });
  switch (c) {
    case "sqlite-full":
      return new SqliteStore(`${dir}/buf.db`, "FULL");
    case "sqlite-normal":
      return new SqliteStore(`${dir}/buf.db`, "NORMAL");
    case "segment-log":
      return await SegmentLog.open(dir);
  }
}

async function diskUsage(files: string[]): Promise<{ size: number; alloc: number; detail: string }> {
  let size = 0;
  let alloc = 0;
  const parts: string[] = [];
  let segments = 0;
  let segmentBytes = 0;
  for (const f of files) {
    try {
      const st = await Deno.stat(f);
      size += st.size;
      alloc += (st.blocks ?? 0) * 512;
      if (f.endsWith(".seg")) {
        segments++;
        segmentBytes += st.size;
      } else parts.push(`${f.slice(f.lastIndexOf("/") + 1)} ${(st.size / 1048576).toFixed(1)}`);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  if (segments > 0) parts.unshift(`${segments} segment(s) ${(segmentBytes / 1048576).toFixed(1)}`);
  return { size, alloc, detail: parts.join(", ") + " MiB" };
}

const quantile = (xs: number[], q: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const maxOf = (xs: number[]) => xs.reduce((m, x) => Math.max(m, x), -Infinity);
const fmt = (x: number, digits = 0) =>
  x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const medRange = (xs: number[], digits = 0) =>
  `${fmt(median(xs), digits)} [${fmt(Math.min(...xs), digits)}–${fmt(maxOf(xs), digits)}]`;

let runNo = 0;
async function freshDir(root: string): Promise<string> {
  const d = `${root}/run-${runNo++}`;
  await Deno.mkdir(d);
  return d;
}

interface AppendResult {
  rate: number;
  records: number;
  blockMs: number[];
  commitMs: number[];
}

/** Appends batches of `batch` until `records` are in or `seconds` have passed; each batch durable first. */
async function appendRun(
  store: Store,
  batch: number,
  records: number,
  seconds: number,
): Promise<AppendResult> {
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  let n = 0;
  while (n < records && performance.now() < deadline) {
    const b = Math.min(batch, records - n);
    await store.append(take(b));
    n += b;
  }
  const rate = n / ((performance.now() - t0) / 1000);
  return { rate, records: n, blockMs: store.blockMs.splice(0), commitMs: store.commitMs.splice(0) };
}

interface DrainResult {
  rate: number;
  mbps: number;
  drained: number;
  appended: number;
  appendP99: number;
  appendMax: number;
  maxStall: number;
  drainBlockP99: number;
}

/** Drains the backlog while a background appender adds RATE records/s, every 10 ms. */
async function drainRun(store: Store): Promise<DrainResult> {
  let stop = false;
  let appended = 0;
  const appendMs: number[] = [];
  let maxStall = 0;
  const appender = (async () => {
    const t0 = performance.now();
    while (!stop) {
      const before = performance.now();
      await new Promise((r) => setTimeout(r, 10));
      maxStall = Math.max(maxStall, performance.now() - before - 10);
      const due = Math.floor(((performance.now() - t0) / 1000) * RATE) - appended;
      if (due <= 0 || stop) continue;
      const s = performance.now();
      await store.append(take(due));
      appendMs.push(performance.now() - s);
      appended += due;
    }
  })();
  const t0 = performance.now();
  let drained = 0;
  let bytes = 0;
  for (;;) {
    const { records, bytes: b } = await store.next();
    if (records.length === 0) break;
    drained += records.length;
    bytes += b;
    await store.ack();
  }
  const secs = (performance.now() - t0) / 1000;
  stop = true;
  await appender;
  store.blockMs.length = 0;
  store.commitMs.length = 0;
  const drainBlockP99 = quantile(store.drainBlockMs, 0.99);
  store.drainBlockMs.length = 0;
  return {
    rate: drained / secs,
    mbps: bytes / 1e6 / secs,
    drained,
    appended,
    appendP99: quantile(appendMs, 0.99),
    appendMax: maxOf(appendMs),
    maxStall,
    drainBlockP99,
  };
}

// ---------------------------------------------------------------------------------------------- crash tests

async function crashSegment(root: string): Promise<string[]> {
  const out: string[] = [];
  const mk = async (): Promise<{ dir: string; file: string; size: number }> => {
    const dir = await freshDir(root);
    const s = await SegmentLog.open(dir);
    poolAt = 0;
    for (let i = 0; i < 10; i++) await s.append(take(100));
    await s.close();
    const file = `${dir}/${segName(0)}`;
    return { dir, file, size: (await Deno.stat(file)).size };
  };
  const check = async (dir: string, what: string) => {
    const s = await SegmentLog.open(dir);
    const r = s.recovery;
    // Everything kept must be exactly what was written, in order.
    poolAt = 0;
    const expected = take(r.records);
    let ok = true;
    let i = 0;
    for (;;) {
      const { records } = await s.next();
      if (records.length === 0) break;
      for (const rec of records) ok &&= rec.value === expected[i++].value;
      await s.ack();
    }
    ok &&= i === r.records;
    out.push(
      `segment-log, ${what}: recovered ${r.records} of 1000 records (${r.reason} tail, ${r.droppedBytes} bytes ` +
        `cut off), kept records identical: ${ok}`,
    );
    await s.close();
  };
  // 1. torn last record: cut the file 37 bytes before its end (mid-record)
  let t = await mk();
  await Deno.truncate(t.file, t.size - 37);
  await check(t.dir, "last record torn (file truncated mid-record)");
  // 2. corrupt byte inside the last record
  t = await mk();
  let f = await Deno.open(t.file, { read: true, write: true });
  await f.seek(t.size - 60, Deno.SeekMode.Start);
  await f.write(new Uint8Array([0x58]));
  f.close();
  await check(t.dir, "one byte of the last record changed");
  // 3. a zero-filled tail (what some filesystems show after a crash mid-extension)
  t = await mk();
  f = await Deno.open(t.file, { write: true, append: true });
  await f.write(new Uint8Array(4096));
  f.close();
  await check(t.dir, "4 KiB of zeros after the last record");
  // 4. corruption in the middle (record ~500): everything from there on is cut
  t = await mk();
  f = await Deno.open(t.file, { read: true, write: true });
  await f.seek(Math.floor(t.size / 2), Deno.SeekMode.Start);
  await f.write(new Uint8Array([0x58]));
  f.close();
  await check(t.dir, "one byte in the middle changed");
  return out;
}

async function crashSqlite(root: string): Promise<string[]> {
  const out: string[] = [];
  /** 10 transactions of 100 records, no checkpoint (all in the WAL); the files copied while open = a crash. */
  const mk = async (): Promise<{ dir: string; walSize: number }> => {
    const dir = await freshDir(root);
    const s = new SqliteStore(`${dir}/buf.db`, "FULL", 0);
    poolAt = 0;
    for (let i = 0; i < 10; i++) await s.append(take(100));
    const crash = `${dir}/crash`;
    await Deno.mkdir(crash);
    await Deno.copyFile(`${dir}/buf.db`, `${crash}/buf.db`);
    await Deno.copyFile(`${dir}/buf.db-wal`, `${crash}/buf.db-wal`);
    s.db.close();
    return { dir: crash, walSize: (await Deno.stat(`${crash}/buf.db-wal`)).size };
  };
  const check = (dir: string, what: string) => {
    const db = new DatabaseSync(`${dir}/buf.db`);
    const { n, max } = db.prepare("SELECT count(*) AS n, max(seq) AS max FROM buf").get() as {
      n: number;
      max: number;
    };
    const integrity =
      (db.prepare("PRAGMA integrity_check").get() as { integrity_check: string }).integrity_check;
    const rows = db.prepare("SELECT value FROM buf ORDER BY seq").all() as { value: string }[];
    poolAt = 0;
    const expected = take(rows.length);
    const same = rows.every((r, i) => r.value === expected[i].value) && max === n;
    db.close();
    out.push(
      `sqlite-full, ${what}: recovered ${n} of 1000 records (whole transactions of 100), ` +
        `integrity_check ${integrity}, kept records identical: ${same}`,
    );
  };
  const flip = async (file: string, at: number) => {
    const f = await Deno.open(file, { read: true, write: true });
    const b = new Uint8Array(1);
    await f.seek(at, Deno.SeekMode.Start);
    await f.read(b);
    b[0] ^= 0xff;
    await f.seek(at, Deno.SeekMode.Start);
    await f.write(b);
    f.close();
  };
  let t = await mk();
  check(t.dir, "crash copy untouched (control)");
  t = await mk();
  await Deno.truncate(`${t.dir}/buf.db-wal`, t.walSize - 1000);
  check(t.dir, "WAL tail torn (truncated mid-frame)");
  t = await mk();
  await flip(`${t.dir}/buf.db-wal`, t.walSize - 100);
  check(t.dir, "one byte of the WAL's last frame changed");
  t = await mk();
  await flip(`${t.dir}/buf.db-wal`, Math.floor(t.walSize / 2));
  check(t.dir, "one byte in the middle of the WAL changed");
  return out;
}

// ---------------------------------------------------------------------------------------------- main

async function filesystem(dir: string): Promise<string> {
  try {
    const { stdout } = await new Deno.Command("df", { args: ["-T", dir] }).output();
    const line = new TextDecoder().decode(stdout).trim().split("\n").at(-1)!.split(/\s+/);
    return `${line[1]} (${line[0]}, mounted on ${line[6]})`;
  } catch {
    return "unknown (df failed)";
  }
}

const root = await Deno.makeTempDir({ dir: args.dir, prefix: "edgeinfer-bench-buffer-" });
const fs = await filesystem(root);
log(`data directory ${root}: ${fs}`);
if (fs.startsWith("tmpfs") || fs.startsWith("ramfs")) {
  log("WARNING: tmpfs/ramfs: fsync costs nothing there, the figures mean nothing; use --dir on a real disk");
}
log(`records ${N}, avg record ${AVG_RECORD_BYTES.toFixed(0)} B, chunk ${CHUNK_ROWS} rows ≈ 512 KiB`);

// warm-up (JIT, page cache), discarded
for (const c of CANDIDATES) {
  const s = await openStore(c, await freshDir(root));
  await appendRun(s, 256, 20000, 2);
  await drainRun(s);
  await s.close();
}

const appendRes = new Map<string, AppendResult[]>();
const diskRes = new Map<Candidate, { size: number; alloc: number; detail: string }[]>();
const afterDrain = new Map<Candidate, { size: number; alloc: number; detail: string }[]>();
const drainRes = new Map<Candidate, DrainResult[]>();
const push = <K, V>(m: Map<K, V[]>, k: K, v: V) => m.set(k, [...(m.get(k) ?? []), v]);

for (let round = 0; round < ROUNDS; round++) {
  const order = CANDIDATES.map((_, i) => CANDIDATES[(i + round) % CANDIDATES.length]);
  for (const batch of [1, 16]) {
    for (const c of order) {
      const s = await openStore(c, await freshDir(root));
      const r = await appendRun(s, batch, N, SECONDS);
      await s.close();
      push(appendRes, `${c}/${batch}`, r);
      log(`round ${round + 1} ${c} batch ${batch}: ${fmt(r.rate)} records/s (${r.records} records)`);
    }
  }
  for (const c of order) {
    const s = await openStore(c, await freshDir(root));
    const r = await appendRun(s, 256, N, Infinity);
    push(appendRes, `${c}/256`, r);
    const d = await diskUsage(await s.files());
    push(diskRes, c, d);
    const dr = await drainRun(s);
    push(drainRes, c, dr);
    const after = await diskUsage(await s.files());
    push(afterDrain, c, { ...after, detail: after.detail + s.note() });
    await s.close();
    log(
      `round ${round + 1} ${c} batch 256: ${fmt(r.rate)} records/s; ${
        (d.size / N).toFixed(1)
      } B/record on disk; ` +
        `drain ${fmt(dr.rate)} records/s ${
          dr.mbps.toFixed(1)
        } MB/s (${dr.drained} drained, ${dr.appended} appended)`,
    );
  }
}

log("crash tests");
const crash = [...await crashSegment(root), ...await crashSqlite(root)];

// ---------------------------------------------------------------------------------------------- report

const p = (xs: number[], q: number) => quantile(xs, q).toFixed(2);
const lines: string[] = [];
const L = (s = "") => lines.push(s);
L(`## Buffer store benchmark`);
L();
L(`\`${
  ["deno run -A scripts/bench_buffer.ts", ...Deno.args].join(" ")
}\`; Deno ${Deno.version.deno}, SQLite ${
  (new DatabaseSync(":memory:").prepare("SELECT sqlite_version() AS v").get() as { v: string }).v
}, ${navigator.hardwareConcurrency} CPUs`);
L(
  `data directory ${root}: **${fs}**; ${N} records, avg ${
    AVG_RECORD_BYTES.toFixed(0)
  } B (key + value + headers), ` +
    `1 % dead letters; ${ROUNDS} rounds, candidates alternating; median [min–max]`,
);
L();
L(`### Appends/s (each batch durable before the next; batches 1 and 16 for at most ${SECONDS} s)`);
L();
L(`| candidate | durable per commit | batch 1 | batch 16 | batch 256 |`);
L(`|---|---|---|---|---|`);
for (const c of CANDIDATES) {
  const cells = [1, 16, 256].map((b) => medRange(appendRes.get(`${c}/${b}`)!.map((r) => r.rate)));
  const durable = c === "sqlite-normal" ? "no (process crash only)" : "yes";
  L(`| ${c} | ${durable} | ${cells.join(" | ")} |`);
}
L();
L(`### One append, ms (all rounds): event loop blocked / commit (SQLite COMMIT; segment write + fdatasync, async)`);
L();
L(`| candidate | batch | blocked p50 | blocked p99 | commit p50 | commit p99 | commit max |`);
L(`|---|---|---|---|---|---|---|`);
for (const c of CANDIDATES) {
  for (const b of [1, 16, 256]) {
    const rs = appendRes.get(`${c}/${b}`)!;
    const block = rs.flatMap((r) => r.blockMs);
    const commit = rs.flatMap((r) => r.commitMs);
    L(
      `| ${c} | ${b} | ${p(block, 0.5)} | ${p(block, 0.99)} | ${p(commit, 0.5)} | ${p(commit, 0.99)} | ${
        maxOf(commit).toFixed(2)
      } |`,
    );
  }
}
L();
L(`### Bytes on disk per record after ${N} records at batch 256 (before the drain), and after the drain`);
L();
L(`| candidate | bytes/record (size) | bytes/record (allocated) | files (last round) | after drain (files) |`);
L(`|---|---|---|---|---|`);
for (const c of CANDIDATES) {
  const d = diskRes.get(c)!;
  const a = afterDrain.get(c)!;
  L(
    `| ${c} | ${medRange(d.map((x) => x.size / N), 1)} | ${medRange(d.map((x) => x.alloc / N), 1)} | ${
      d.at(-1)!.detail
    } | ${a.at(-1)!.detail} |`,
  );
}
L();
L(`### Drain of the ${N}-record backlog in ~512 KiB chunks (${CHUNK_ROWS} rows), ${RATE} records/s still arriving`);
L();
L(`| candidate | records/s | MB/s | drain blocks loop p99 ms | appends meanwhile p99 / max ms | max loop stall ms |`);
L(`|---|---|---|---|---|---|`);
for (const c of CANDIDATES) {
  const d = drainRes.get(c)!;
  L(
    `| ${c} | ${medRange(d.map((x) => x.rate))} | ${medRange(d.map((x) => x.mbps), 1)} | ${
      median(d.map((x) => x.drainBlockP99)).toFixed(2)
    } | ${median(d.map((x) => x.appendP99)).toFixed(1)} / ${maxOf(d.map((x) => x.appendMax)).toFixed(1)} | ${
      maxOf(d.map((x) => x.maxStall)).toFixed(1)
    } |`,
  );
}
L();
L(`### Crash: torn / corrupted tail (1000 records written in 10 durable batches of 100)`);
L();
for (const s of crash) L(`- ${s}`);
console.log(lines.join("\n"));

if (!args.keep) await Deno.remove(root, { recursive: true });
else log(`kept ${root}`);
