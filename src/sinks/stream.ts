import { UsageError } from "../errors.ts";
import type { OutRecord, Sink } from "../pipeline/types.ts";

const encoder = new TextEncoder();

/**
 * Writes one record value per line to standard output (`-`, `stdout`) or a file (`file:<path>`,
 * appended). Headers are not written. A batch counts as durable once the operating system took
 * the write; the file is fsynced at close.
 */
export async function createStreamSink(path: string | "stdout"): Promise<Sink> {
  let file: Deno.FsFile | undefined;
  if (path !== "stdout") {
    try {
      file = await Deno.open(path, { write: true, create: true, append: true });
    } catch (err) {
      throw new UsageError(`sink file '${path}' cannot be opened for writing: ${(err as Error).message}`);
    }
  }
  const target: { write(p: Uint8Array): Promise<number> } = file ?? Deno.stdout;
  // Writes are chained so batches land in the order send() was called.
  let tail: Promise<void> = Promise.resolve();

  return {
    description: path === "stdout" ? "stdout" : `file:${path}`,
    send(records: OutRecord[]): Promise<void> {
      let text = "";
      for (let i = 0; i < records.length; i++) text += records[i].value + "\n";
      const bytes = encoder.encode(text);
      tail = tail.then(() => writeAll(target, bytes));
      return tail;
    },
    async close() {
      await tail.catch(() => {});
      if (file !== undefined) {
        await file.syncData();
        file.close();
      }
    },
  };
}

async function writeAll(target: { write(p: Uint8Array): Promise<number> }, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await target.write(bytes.subarray(written));
}
