/**
 * edgeinfer entry point: runs the CLI and maps errors to exit codes —
 * 0 done, 1 runtime failure, 2 usage error (bad flag, URL, config or model). The error line goes through
 * the root logger, in the format the command's --log-format set (text until its flags were read).
 */
import { main } from "./src/cli/main.ts";
import { UsageError } from "./src/errors.ts";
import { rootLogger } from "./src/log.ts";

if (import.meta.main) {
  try {
    await main(Deno.args);
    Deno.exit(0);
  } catch (err) {
    if (err instanceof UsageError) {
      rootLogger.error(err.message);
      Deno.exit(2);
    }
    const message = err instanceof Error ? err.message : String(err);
    rootLogger.error(`error: ${message}`);
    // The stack through the logger too (in --log-format json, one line whose msg holds it).
    if (Deno.env.get("EDGEINFER_DEBUG") && err instanceof Error && err.stack) rootLogger.error(err.stack);
    Deno.exit(1);
  }
}
