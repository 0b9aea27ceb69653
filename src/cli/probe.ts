/**
 * `edgeinfer probe`: asks a running edgeinfer's --http server whether it is alive (/healthz) or ready
 * (/readyz), for a service manager or a container health check that has no HTTP client of its own.
 */
import { RuntimeError, UsageError } from "../errors.ts";
import { durationFlag, parseFlags } from "./args.ts";

export const PROBE_HELP = `Usage: edgeinfer probe [--ready] [--http HOST:PORT] [--wait D]

Asks a running 'edgeinfer run --http HOST:PORT' whether it is alive (GET /healthz) or, with --ready,
ready to work (GET /readyz: model loaded, source and sink connected, nothing retrying or failed).
Prints the answer's JSON body; exit code 0 when the answer is 200, 1 otherwise (or when nothing answers).

  --ready          ask /readyz instead of /healthz
  --http HOST:PORT the run's --http address (default 127.0.0.1:9464)
  --wait D         keep asking, once a second, until the answer is 200 or D passed (e.g. 60s);
                   default: ask once

Examples
  edgeinfer probe --ready --wait 60s        # systemd ExecStartPost=: started = ready
  edgeinfer probe                           # a container HEALTHCHECK`;

export async function probeCommand(argv: string[]): Promise<void> {
  const { values } = parseFlags("probe", argv, {
    ready: { type: "boolean", default: false },
    http: { type: "string", default: "127.0.0.1:9464" },
    wait: { type: "string" },
  });
  const address = values.http!;
  if (!/^[^\s/:]+:\d{1,5}$/.test(address) && !/^\[[0-9a-f:]+\]:\d{1,5}$/i.test(address)) {
    throw new UsageError(`--http must be HOST:PORT, e.g. 127.0.0.1:9464, got '${address}'`);
  }
  const url = `http://${address}/${values.ready ? "readyz" : "healthz"}`;
  const deadline = performance.now() + durationFlag("wait", values.wait, 0);
  for (;;) {
    const answer = await ask(url);
    if (answer.ok) {
      console.log(answer.text);
      return;
    }
    if (performance.now() >= deadline) {
      if (answer.text) console.log(answer.text);
      throw new RuntimeError(`${url}: ${answer.reason}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function ask(url: string): Promise<{ ok: boolean; text: string; reason: string }> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    const text = await response.text();
    const reasons = (() => {
      try {
        return (JSON.parse(text).reasons as string[] | undefined)?.join("; ");
      } catch {
        return undefined;
      }
    })();
    return {
      ok: response.status === 200,
      text,
      reason: `${response.status}${reasons ? `: ${reasons}` : ""}`,
    };
  } catch (err) {
    return { ok: false, text: "", reason: `no answer (${(err as Error).message})` };
  }
}
