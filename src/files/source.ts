import { UsageError } from "../errors.ts";
import type { Source, SourceEvent } from "../pipeline/types.ts";
import { splitLines } from "./lines.ts";

const noop = () => {};

/**
 * One event per line from a file (`file:<path>`) or standard input (`-`). The run ends after
 * the last line. Acks are no-ops: a file has nothing to commit.
 */
export function createFileSource(path: string | "stdin"): Source {
  const label = path === "stdin" ? "stdin" : path;
  let paused = false;
  let wake: (() => void) | undefined;
  let file: Deno.FsFile | undefined;

  return {
    description: path === "stdin" ? "stdin" : `file:${path}`,

    async *events(signal: AbortSignal): AsyncGenerator<SourceEvent[]> {
      let stream: ReadableStream<Uint8Array>;
      if (path === "stdin") {
        stream = Deno.stdin.readable;
      } else {
        try {
          file = await Deno.open(path, { read: true });
        } catch (err) {
          if (err instanceof Deno.errors.NotFound) {
            throw new UsageError(`--source file '${path}' does not exist`);
          }
          throw new UsageError(`--source file '${path}' cannot be read: ${(err as Error).message}`);
        }
        stream = file.readable;
      }
      const onAbort = () => wake?.();
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        for await (const { lines, lineNumbers } of splitLines(stream)) {
          if (signal.aborted) break;
          const receivedAt = Date.now();
          const events: SourceEvent[] = new Array(lines.length);
          for (let i = 0; i < lines.length; i++) {
            events[i] = {
              payload: lines[i],
              key: undefined,
              receivedAt,
              origin: { kind: "file", path: label, line: lineNumbers[i] },
              ack: noop,
            };
          }
          yield events;
          while (paused && !signal.aborted) await new Promise<void>((resolve) => wake = resolve);
        }
      } finally {
        signal.removeEventListener("abort", onAbort);
        // Closing the readable also closes the file.
        if (file !== undefined) await stream.cancel().catch(noop);
        file = undefined;
      }
    },
    pause() {
      paused = true;
    },
    resume() {
      paused = false;
      wake?.();
      wake = undefined;
    },
    close() {
      return Promise.resolve();
    },
  };
}
