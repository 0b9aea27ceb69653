import { RuntimeError } from "../errors.ts";
import { Logger, silentLogger } from "../log.ts";

/**
 * How retriable failures (connection refused, broker restart, leader change, timeout) are retried:
 * for ever by default, with capped exponential backoff; `giveUpAfterMs` turns a failure that lasts
 * longer into a fatal one, for operators who prefer a supervisor's restart.
 */
export interface RetryPolicy {
  initialBackoffMs: number;
  maxBackoffMs: number;
  /** undefined: never give up. */
  giveUpAfterMs: number | undefined;
}

export const DEFAULT_RETRY: RetryPolicy = {
  initialBackoffMs: 250,
  maxBackoffMs: 5000,
  giveUpAfterMs: undefined,
};

/** Capped exponential backoff with ±20 % jitter: 250, 500, 1000, … ms up to the cap. */
export class Backoff {
  private attempt = 0;
  constructor(private readonly policy: RetryPolicy) {}

  next(): number {
    const base = Math.min(
      this.policy.maxBackoffMs,
      this.policy.initialBackoffMs * 2 ** Math.min(this.attempt, 30),
    );
    this.attempt++;
    return Math.round(base * (0.8 + 0.4 * Math.random()));
  }

  reset(): void {
    this.attempt = 0;
  }
}

interface Wait {
  reason: string;
  since: number;
}

/**
 * What the parts of a run (sources, sinks) report about their connections. A part waiting out a
 * retriable failure says so — the status line shows what it waits for and since when — and says
 * when it recovered. A failure that cannot heal (or outlasts --give-up-after) is `fatal`: the run
 * ends at once with that reason, even when no event is flowing.
 */
export class Health {
  private readonly waits = new Map<string, Wait>();
  /** Parts that reported a success (connected, subscribed, a produce confirmed): readiness needs one. */
  private readonly succeeded = new Set<string>();
  private readonly retryCounts = new Map<string, number>();
  private failure: Error | undefined;
  private readonly fatalListeners: ((err: Error) => void)[] = [];
  /** Where outages (waiting, recovered) are reported, at level warn. */
  readonly log: Logger;

  /** `log`: a Logger, or a function given each message (tests); without it, outages are not logged. */
  constructor(
    readonly retry: RetryPolicy = DEFAULT_RETRY,
    log: Logger | ((message: string) => void) = silentLogger,
  ) {
    this.log = typeof log === "function" ? Logger.messages(log) : log;
  }

  /** A part could not do its work for a retriable reason and will try again. */
  waiting(part: string, reason: string): void {
    const now = Date.now();
    this.retryCounts.set(part, (this.retryCounts.get(part) ?? 0) + 1);
    const wait = this.waits.get(part);
    if (wait === undefined) {
      this.waits.set(part, { reason, since: now });
      this.log.warn(`${part}: ${reason}; retrying until it recovers`);
    } else {
      if (wait.reason !== reason) this.log.warn(`${part}: still waiting: ${reason}`);
      wait.reason = reason;
      const giveUp = this.retry.giveUpAfterMs;
      if (giveUp !== undefined && now - wait.since >= giveUp) {
        this.fatal(
          new RuntimeError(
            `${part}: gave up after ${formatSeconds(now - wait.since)} (--give-up-after): ${reason}`,
          ),
        );
      }
    }
  }

  /** The part works (again): also its first success, e.g. connected. */
  recovered(part: string): void {
    this.succeeded.add(part);
    const wait = this.waits.get(part);
    if (wait === undefined) return;
    this.waits.delete(part);
    this.log.warn(`${part}: recovered after ${formatSeconds(Date.now() - wait.since)}`);
  }

  /** A failure that retrying cannot heal: the run must end now. The first one wins. */
  fatal(err: Error): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    for (const listener of this.fatalListeners.splice(0)) listener(err);
  }

  get fatalError(): Error | undefined {
    return this.failure;
  }

  /** Calls `listener` once, on the first fatal failure (at once if there was one). */
  onFatal(listener: (err: Error) => void): void {
    if (this.failure !== undefined) listener(this.failure);
    else this.fatalListeners.push(listener);
  }

  /** True while some part waits on a retriable failure. */
  get degraded(): boolean {
    return this.waits.size > 0;
  }

  /** Every part that reported: working (a success seen, not waiting now), waiting, retries so far. */
  parts(): { part: string; up: boolean; retrying: boolean; retries: number }[] {
    const names = new Set([...this.succeeded, ...this.waits.keys()]);
    return [...names].map((part) => ({
      part,
      up: this.succeeded.has(part) && !this.waits.has(part),
      retrying: this.waits.has(part),
      retries: this.retryCounts.get(part) ?? 0,
    }));
  }

  /** "waiting for kafka sink … since 08:12:03 (35 s): connection refused"; "" when all is well. */
  describe(): string {
    return this.waitingFor().join("; ");
  }

  /** One "waiting for …" per part waiting now. */
  waitingFor(): string[] {
    const now = Date.now();
    return [...this.waits].map(([part, w]) =>
      `waiting for ${part} since ${new Date(w.since).toISOString().slice(11, 19)} UTC ` +
      `(${formatSeconds(now - w.since)}): ${w.reason}`
    );
  }
}

function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}
