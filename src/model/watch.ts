/**
 * --watch-model: a change of the model file reloads it. Editors and `cp` replace a file in several steps
 * (truncate, write, rename a temporary file): events are debounced, and the reload waits until the file
 * has kept its size and modification time for DEBOUNCE_MS. An atomic `mv` of a complete file into place is
 * the way to publish a new model; a half-written file that still slips through fails to load and leaves
 * the running model in place, and the next change is picked up.
 */
import { basename, dirname, resolve } from "node:path";
import { UsageError } from "../errors.ts";

export const DEBOUNCE_MS = 500;

/** Watches the directory of `path` (a rename into place is an event there); returns a stop function. */
export function watchModelFile(path: string, onChange: () => Promise<unknown>): () => void {
  const file = resolve(path);
  const name = basename(file);
  let watcher: Deno.FsWatcher;
  try {
    watcher = Deno.watchFs(dirname(file), { recursive: false });
  } catch (err) {
    throw new UsageError(`--watch-model cannot watch ${dirname(file)}: ${(err as Error).message}`);
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  let last = "";
  let stopped = false;
  let busy: Promise<unknown> = Promise.resolve();

  const stamp = () => {
    try {
      const s = Deno.statSync(file);
      return `${s.size}:${s.mtime?.getTime()}`;
    } catch {
      return "missing";
    }
  };
  const settle = () => {
    timer = undefined;
    const now = stamp();
    if (now !== last || now === "missing") {
      // Still changing (or not there yet, between the steps of a replace): look again later.
      last = now;
      if (now !== "missing") timer = setTimeout(settle, DEBOUNCE_MS);
      return;
    }
    busy = busy.then(onChange, onChange);
  };

  void (async () => {
    try {
      for await (const event of watcher) {
        if (stopped) break;
        if (!event.paths.some((p) => basename(p) === name)) continue;
        last = stamp();
        clearTimeout(timer);
        timer = setTimeout(settle, DEBOUNCE_MS);
      }
    } catch { /* closed */ }
  })();

  return () => {
    stopped = true;
    clearTimeout(timer);
    try {
      watcher.close();
    } catch { /* already closed */ }
  };
}
