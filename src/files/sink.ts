import { RuntimeError, UsageError } from "../errors.ts";
import type { OutRecord, Sink } from "../pipeline/types.ts";

const encoder = new TextEncoder();

/** What a stream sink writes to: a file, stdout, or a stand-in in tests. */
export interface StreamTarget {
  write(p: Uint8Array): Promise<number>;
  /** Makes what was written durable (fdatasync). Absent for a pipe or terminal (stdout). */
  syncData?(): Promise<void>;
  /** Releases the target; called once by the sink's close(). */
  close?(): void;
}

/**
 * Writes one record value per line to standard output (`-`, `stdout`) or a file (`file:<path>`,
 * appended). Headers are not written.
 *
 * File: send() resolves only once its bytes are on the disk (write, then fdatasync), so the
 * at-least-once guarantee survives a power loss, not only a crash. Group commit: while one
 * write+sync runs, later send() calls queue up and are then written together and made durable by
 * ONE sync. The trade-off: each batch waits for a sync (~1–2 ms on an SSD, more on an SD card or a
 * spinning disk), but the number of syncs per second is bounded by the disk, not by the batch
 * rate, so throughput grows with load (more batches in flight → bigger groups).
 * stdout: a pipe, nothing to sync; a batch counts as durable once the write returned.
 */
export async function createStreamSink(path: string | "stdout"): Promise<Sink> {
  if (path === "stdout") return streamSink("stdout", { write: (p) => Deno.stdout.write(p) });
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { write: true, create: true, append: true });
  } catch (err) {
    throw new UsageError(`sink file '${path}' cannot be opened for writing: ${(err as Error).message}`);
  }
  return streamSink(`file:${path}`, file);
}

/**
 * The sink over any target. Records land in the order of the send() calls. A write or sync error
 * fails the sink: the send()s it affects and every later one reject with it, and close() throws
 * it. close() waits for what was queued, then closes the target (throwing a close error).
 */
export function streamSink(description: string, target: StreamTarget): Sink {
  interface Queued {
    text: string;
    resolve: () => void;
    reject: (err: Error) => void;
  }
  let queue: Queued[] = [];
  let flushing: Promise<void> | undefined;
  let failure: Error | undefined;
  let closed = false;

  /** Writes and syncs the queue, a group at a time, until it is empty or something fails. */
  async function flush(): Promise<void> {
    while (queue.length > 0) {
      const group = queue;
      queue = [];
      try {
        let text = group[0].text;
        for (let i = 1; i < group.length; i++) text += group[i].text;
        await writeAll(target, encoder.encode(text));
        if (target.syncData) await target.syncData();
      } catch (err) {
        failure ??= new RuntimeError(`${description} sink failed: ${(err as Error)?.message ?? err}`, {
          cause: err,
        });
        for (const q of group) q.reject(failure);
        for (const q of queue) q.reject(failure);
        queue = [];
        break;
      }
      for (const q of group) q.resolve();
    }
    flushing = undefined;
  }

  return {
    description,
    send(records: OutRecord[]): Promise<void> {
      if (failure) return Promise.reject(failure);
      if (closed) return Promise.reject(new RuntimeError(`${description} sink is closed`));
      if (records.length === 0) return Promise.resolve();
      let text = "";
      for (let i = 0; i < records.length; i++) text += records[i].value + "\n";
      return new Promise((resolve, reject) => {
        queue.push({ text, resolve, reject });
        flushing ??= flush();
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      await flushing;
      try {
        target.close?.();
      } catch (err) {
        failure ??= new RuntimeError(
          `${description} sink failed at close: ${(err as Error)?.message ?? err}`,
          { cause: err },
        );
      }
      if (failure) throw failure;
    },
  };
}

async function writeAll(target: StreamTarget, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await target.write(bytes.subarray(written));
}
