/**
 * edgeinfer entry point: runs the CLI and maps errors to exit codes —
 * 0 done, 1 runtime failure, 2 usage error (bad flag, URL, config or model).
 */
import { main } from "./src/cli/main.ts";
import { UsageError } from "./src/errors.ts";
import { logLine } from "./src/log.ts";

if (import.meta.main) {
  try {
    await main(Deno.args);
    Deno.exit(0);
  } catch (err) {
    if (err instanceof UsageError) {
      logLine(err.message);
      Deno.exit(2);
    }
    const message = err instanceof Error ? err.message : String(err);
    logLine(`error: ${message}`);
    if (Deno.env.get("EDGEINFER_DEBUG") && err instanceof Error) console.error(err.stack);
    Deno.exit(1);
  }
}
