/**
 * The disk buffer's store: output records in an SQLite database (Deno's built-in `node:sqlite`, no native
 * addon), one table in arrival order. Why SQLite and these settings: README, "Store and forward".
 *
 * - Durability: WAL mode with `synchronous=FULL`, one transaction per appended batch: when append()
 *   returns, the batch is on disk (the WAL is fsynced at each commit). A crash or power cut in the middle of
 *   a commit leaves a torn WAL tail, which SQLite's frame checksums detect and ignore at the next open: that
 *   batch was never acknowledged to the source.
 * - Sequence numbers only grow (AUTOINCREMENT): without it SQLite starts again at 1 once the table is
 *   empty, and the forwarder, which reads after the last sequence number it took, would skip new records.
 * - One process per directory: the database is held with `locking_mode=EXCLUSIVE` from open to close; a
 *   second process fails to open it (a clear error, not two writers). The lock dies with the process.
 * - Space: deleted rows' pages are reused by later appends, so the file stays near the peak of what was
 *   buffered; the WAL is truncated back to JOURNAL_LIMIT_BYTES after each checkpoint.
 *
 * - A full disk: an append that does not fit fails and is rolled back (the buffer is full, not corrupt). But
 *   removing forwarded records also writes (to the WAL): so that it can when the disk is full, the store
 *   keeps RESERVE_BYTES in a reserve file, deleted to make room for removals when the disk is full, and
 *   written again once the buffer has emptied.
 *
 * Calls are synchronous (node:sqlite): one append of a 256-record batch blocks the event loop for about a
 * millisecond plus one fsync.
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { RuntimeError, UsageError } from "../errors.ts";

/** One buffered output record. `dest`: 0 = the --sink, 1 = the --dlq. */
export interface BufferedRecord {
  seq: number;
  dest: number;
  key: string | undefined;
  value: string;
  headers: Record<string, string>;
  /** Approximate size (key + value + headers), what --buffer-max-bytes counts. */
  bytes: number;
  /** When it was appended (ms since the epoch). */
  at: number;
}

export type NewRecord = Omit<BufferedRecord, "seq" | "at">;

const JOURNAL_LIMIT_BYTES = 64 * 1024 * 1024;
/** Room kept for removals on a full disk (a 512 KiB chunk's removal writes ~0.6 MB of WAL). */
const RESERVE_BYTES = 2 * 1024 * 1024;

export class BufferStore {
  readonly path: string;
  #db: DatabaseSync;
  #insert: StatementSync;
  #after: StatementSync;
  #deleteRange: StatementSync;
  #oldestAt: StatementSync;
  #records = 0;
  #bytes = 0;
  readonly #reservePath: string;
  #reserved = false;

  private constructor(path: string, db: DatabaseSync) {
    this.path = path;
    this.#db = db;
    this.#reservePath = `${path}.reserve`;
    this.restoreReserve();
    db.exec(
      "CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY AUTOINCREMENT, dest INTEGER NOT NULL, key TEXT, " +
        "value TEXT NOT NULL, headers TEXT NOT NULL, bytes INTEGER NOT NULL, at INTEGER NOT NULL)",
    );
    this.#insert = db.prepare(
      "INSERT INTO records (dest, key, value, headers, bytes, at) VALUES (?, ?, ?, ?, ?, ?)",
    );
    this.#after = db.prepare(
      "SELECT seq, dest, key, value, headers, bytes, at FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
    );
    this.#deleteRange = db.prepare("DELETE FROM records WHERE seq > ? AND seq <= ?");
    this.#oldestAt = db.prepare("SELECT at FROM records ORDER BY seq LIMIT 1");
    const row = db.prepare("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM records").get() as {
      n: number;
      b: number;
    };
    this.#records = Number(row.n);
    this.#bytes = Number(row.b);
  }

  /** Opens (or creates) the buffer in `dir`; refuses when another process holds it. */
  static open(dir: string): BufferStore {
    try {
      Deno.mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw new UsageError(`--buffer ${dir}: cannot create the directory: ${(e as Error).message}`);
    }
    const path = `${dir.replace(/\/$/, "")}/edgeinfer-buffer.db`;
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(path);
      db.exec(
        "PRAGMA busy_timeout=0; PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL; " +
          `PRAGMA synchronous=FULL; PRAGMA journal_size_limit=${JOURNAL_LIMIT_BYTES};`,
      );
      // Take the exclusive lock now (a write transaction), not at the first append.
      db.exec("BEGIN IMMEDIATE; COMMIT");
      return new BufferStore(path, db);
    } catch (e) {
      try {
        db?.close();
      } catch { /* already failing */ }
      const message = (e as Error).message;
      if (/locked|busy/i.test(message)) {
        throw new RuntimeError(
          `--buffer ${dir} is in use by another edgeinfer process (one process per buffer directory): ` +
            `stop it, or give this one its own --buffer`,
        );
      }
      throw new RuntimeError(`--buffer ${dir}: cannot open ${path}: ${message}`);
    }
  }

  get records(): number {
    return this.#records;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** When the oldest buffered record was appended, or undefined when empty. */
  oldestAt(): number | undefined {
    if (this.#records === 0) return undefined;
    const row = this.#oldestAt.get() as { at: number } | undefined;
    return row === undefined ? undefined : Number(row.at);
  }

  /**
   * Appends `records` in one durable transaction and returns them as stored (with their sequence numbers).
   * Throws on a full disk (isDiskFull), having stored none of them.
   */
  append(records: NewRecord[]): BufferedRecord[] {
    if (records.length === 0) return [];
    const at = Date.now();
    let bytes = 0;
    const stored: BufferedRecord[] = [];
    this.#db.exec("BEGIN");
    try {
      for (const r of records) {
        const { lastInsertRowid } = this.#insert.run(
          r.dest,
          r.key ?? null,
          r.value,
          JSON.stringify(r.headers),
          r.bytes,
          at,
        );
        stored.push({ ...r, seq: Number(lastInsertRowid), at });
        bytes += r.bytes;
      }
      this.#db.exec("COMMIT");
    } catch (e) {
      try {
        this.#db.exec("ROLLBACK");
      } catch { /* the failed statement may have ended the transaction */ }
      throw e;
    }
    this.#records += records.length;
    this.#bytes += bytes;
    return stored;
  }

  /** Up to `limit` records after `seq`, oldest first. */
  readAfter(seq: number, limit: number): BufferedRecord[] {
    const rows = this.#after.all(seq, limit) as Record<string, unknown>[];
    return rows.map((r) => ({
      seq: Number(r.seq),
      dest: Number(r.dest),
      key: r.key === null ? undefined : String(r.key),
      value: String(r.value),
      headers: JSON.parse(String(r.headers)),
      bytes: Number(r.bytes),
      at: Number(r.at),
    }));
  }

  /** Removes the records after `afterSeq` up to `upToSeq` (forwarded, or dropped): `records`, `bytes`. */
  remove(afterSeq: number, upToSeq: number, records: number, bytes: number): void {
    try {
      this.#deleteRange.run(afterSeq, upToSeq);
    } catch (e) {
      if (!isDiskFull(e) || !this.#releaseReserve()) throw e;
      this.#deleteRange.run(afterSeq, upToSeq); // with the reserve's room
    }
    this.#records -= records;
    this.#bytes -= bytes;
  }

  /** Writes the reserve file again if it was used (when the buffer emptied); no room yet: later. */
  restoreReserve(): void {
    if (this.#reserved) return;
    try {
      const file = Deno.openSync(this.#reservePath, { write: true, create: true, truncate: true });
      try {
        file.writeSync(new Uint8Array(RESERVE_BYTES));
        file.syncSync();
      } finally {
        file.close();
      }
      this.#reserved = true;
    } catch {
      try {
        Deno.removeSync(this.#reservePath);
      } catch { /* not there */ }
    }
  }

  #releaseReserve(): boolean {
    if (!this.#reserved) return false;
    try {
      Deno.removeSync(this.#reservePath);
    } catch { /* gone already */ }
    this.#reserved = false;
    return true;
  }

  close(): void {
    this.#db.close();
  }
}

/** Whether an append failed because the disk (or the database's quota) is full. */
export function isDiskFull(e: unknown): boolean {
  const message = e instanceof Error ? e.message : String(e);
  return /database or disk is full|SQLITE_FULL|ENOSPC|No space left/i.test(message);
}
