/**
 * The `--http` server: /metrics (Prometheus text), /healthz (alive: the event loop answers in time),
 * /readyz (every pipeline's model loaded, source and sinks connected, none retrying or failed).
 */
import { UsageError } from "../errors.ts";
import type { Metrics } from "./metrics.ts";

/** /healthz fails when the event loop was late by more than this within the last LAG_WINDOW_MS. */
export const MAX_EVENT_LOOP_LAG_MS = 2000;
const LAG_WINDOW_MS = 30_000;
const LAG_TICK_MS = 250;

export interface HttpAddress {
  hostname: string;
  port: number;
}

/** `--http HOST:PORT` (IPv6 as [::1]:9464); port 0 picks a free one. */
export function parseHttpAddress(value: string): HttpAddress {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]\s]+)):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    throw new UsageError(
      `--http must be HOST:PORT, e.g. 127.0.0.1:9464 (or 0.0.0.0:9464 to listen on every interface), got '${value}'`,
    );
  }
  return { hostname: match[1] ?? match[2], port };
}

/**
 * How late the event loop's timers run: a timer every LAG_TICK_MS notes how much later than asked it fired;
 * the worst lateness of the last LAG_WINDOW_MS is kept (in two half windows, so old spikes age out).
 */
export class EventLoopLag {
  private expected = performance.now() + LAG_TICK_MS;
  private current = { startedAt: performance.now(), maxMs: 0 };
  private previousMaxMs = 0;
  private readonly timer: ReturnType<typeof setInterval>;

  constructor(private readonly now: () => number = () => performance.now()) {
    this.timer = setInterval(() => this.tick(), LAG_TICK_MS);
    Deno.unrefTimer(Number(this.timer)); // the probe must not keep the process alive
  }

  tick(): void {
    const now = this.now();
    this.note(Math.max(0, now - this.expected), now);
    this.expected = now + LAG_TICK_MS;
  }

  note(lagMs: number, now: number): void {
    if (now - this.current.startedAt >= LAG_WINDOW_MS / 2) {
      this.previousMaxMs = this.current.maxMs;
      this.current = { startedAt: now, maxMs: 0 };
    }
    if (lagMs > this.current.maxMs) this.current.maxMs = lagMs;
  }

  /** The worst lateness of (at least) the last half window and at most the last window, in ms. */
  get recentMaxMs(): number {
    return Math.max(this.current.maxMs, this.previousMaxMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

export interface ObserveServer {
  /** Where it listens (the port, when 0 was asked). */
  readonly address: HttpAddress;
  close(): Promise<void>;
}

/** Starts the server; a taken or forbidden address is a one-line UsageError naming --http. */
export function serveObserve(address: HttpAddress, metrics: Metrics): ObserveServer {
  const lag = new EventLoopLag();
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve(
      { hostname: address.hostname, port: address.port, onListen: () => {} },
      (request) => respond(request, metrics, lag),
    );
  } catch (err) {
    lag.stop();
    const why = err instanceof Deno.errors.AddrInUse
      ? "the address is already in use (another edgeinfer?); choose another port"
      : (err as Error).message;
    throw new UsageError(`--http ${address.hostname}:${address.port}: ${why}`);
  }
  // Serving must not keep the process alive once the pipelines have ended.
  server.unref();
  return {
    address: { hostname: server.addr.hostname, port: server.addr.port },
    close: async () => {
      lag.stop();
      await server.shutdown();
    },
  };
}

async function respond(request: Request, metrics: Metrics, lag: EventLoopLag): Promise<Response> {
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("only GET\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  const path = new URL(request.url).pathname;
  if (path === "/metrics") {
    return new Response(await metrics.text(), { headers: { "content-type": metrics.contentType } });
  }
  if (path === "/healthz") return json(...health(lag.recentMaxMs));
  if (path === "/readyz") {
    const { ready, reasons } = metrics.readiness();
    return json(ready ? 200 : 503, { ready, reasons });
  }
  return new Response("not found: try /metrics, /healthz or /readyz\n", { status: 404 });
}

/** Alive unless the event loop was late by more than MAX_EVENT_LOOP_LAG_MS recently. */
export function health(recentLagMs: number): [number, Record<string, unknown>] {
  const lagSeconds = Math.round(recentLagMs) / 1000;
  if (recentLagMs > MAX_EVENT_LOOP_LAG_MS) {
    return [503, {
      status: "unresponsive",
      reason: `the event loop was ${lagSeconds} s late within the last ${LAG_WINDOW_MS / 1000} s ` +
        `(limit ${MAX_EVENT_LOOP_LAG_MS / 1000} s)`,
      event_loop_lag_seconds: lagSeconds,
    }];
  }
  return [200, { status: "ok", event_loop_lag_seconds: lagSeconds }];
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body) + "\n", {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-store" },
  });
}
