/**
 * What the pipelines of one run share: the shutdown signal (SIGINT/SIGTERM drains them all), the one
 * shutdown deadline, and the rule that a fatal failure in one pipeline ends the whole run.
 */
import { RuntimeError, UsageError } from "../errors.ts";
import { type Logger, rootLogger } from "../log.ts";
import type { Health } from "../pipeline/health.ts";
import type { Stats } from "../pipeline/stats.ts";
import type { ProcessSettings } from "./run_settings.ts";
import { Metrics } from "../observe/metrics.ts";
import { type ObserveServer, serveObserve } from "../observe/http.ts";
import { onReloadSignal, onShutdownSignal } from "./signals.ts";

/** What the deadline message reports of a running pipeline. */
interface Running {
  label: string;
  health: Health;
  stats: Stats;
}

export class RunControl {
  /** Aborted by SIGINT/SIGTERM (and, with several pipelines, by one pipeline's fatal failure). */
  readonly shutdown = new AbortController();
  /** Aborted when the shutdown deadline passes: in-flight batches are then given up (unacknowledged). */
  readonly abandon = new AbortController();
  private readonly running = new Set<Running>();
  private readonly reloaders = new Set<() => void>();
  private deadline: ReturnType<typeof setTimeout> | undefined;
  /** With --http: the process's metrics, which each pipeline adds its own to. */
  readonly metrics: Metrics | undefined;

  constructor(
    readonly settings: ProcessSettings,
    readonly several: boolean,
    /** The process's logger; a pipeline's lines go through `logger(name)`. */
    readonly log: Logger = rootLogger,
  ) {
    this.metrics = settings.http === undefined ? undefined : new Metrics(this.shutdown.signal);
  }

  /** A pipeline's name in a line of the process: `[cars] ` when the process runs several. */
  label(name: string): string {
    return this.several ? `[${name}] ` : "";
  }

  /** A pipeline's logger: its lines carry its name (`[cars] …`, "pipeline":"cars") when the process runs several. */
  logger(name: string): Logger {
    return this.several ? this.log.child(name) : this.log;
  }

  /** Reported in the deadline's message until `done` is called. */
  track(running: Running): () => void {
    this.running.add(running);
    return () => this.running.delete(running);
  }

  /** Called on SIGHUP (each pipeline reloads its model) until the returned function is called. */
  onReload(reload: () => void): () => void {
    this.reloaders.add(reload);
    return () => this.reloaders.delete(reload);
  }

  /** SIGHUP: every pipeline reloads its own model, each checked on its own. */
  reload(): void {
    for (const reload of this.reloaders) reload();
  }

  /** A pipeline failed for good: with several, the others are drained too (the run exits 1). */
  fatal(): void {
    this.armDeadline("stopping after a fatal failure");
    if (this.several) this.shutdown.abort();
  }

  /** After the deadline, cleanup (commit, disconnect) gets a few seconds more, then the process exits. */
  armDeadline(what: string): void {
    if (this.deadline !== undefined) return;
    const { shutdownTimeoutMs } = this.settings;
    this.deadline = setTimeout(() => {
      const running = [...this.running];
      const waiting = running.map((r) => r.health.describe() && `${r.label}${r.health.describe()}`)
        .filter((w) => w !== "").join("; ");
      const unacknowledged = running.reduce((sum, r) => sum + r.stats.events - r.stats.acked, 0);
      this.log.warn(
        `${what} did not finish within --shutdown-timeout ${shutdownTimeoutMs / 1000} s` +
          `${waiting ? ` (${waiting})` : ""}: ${unacknowledged} events left unacknowledged ` +
          `(the source redelivers them)`,
      );
      this.abandon.abort();
      setTimeout(() => {
        this.log.warn("exiting: disconnecting did not finish either");
        Deno.exit(running.some((r) => r.health.fatalError) ? 1 : 0);
      }, 5000);
    }, shutdownTimeoutMs);
  }

  dispose(): void {
    clearTimeout(this.deadline);
  }
}

/**
 * Runs the pipelines concurrently until all have ended; the first failure (setup or fatal) drains the others
 * and is thrown, naming its pipeline. One pipeline alone runs (and fails) exactly as `run` always did.
 */
export async function runAll(
  settings: ProcessSettings,
  names: string[],
  runOne: (name: string, control: RunControl) => Promise<void>,
): Promise<void> {
  const control = new RunControl(settings, names.length > 1);
  // Listening first: a taken --http address fails before anything connects, and probes answer during setup.
  const server: ObserveServer | undefined = control.metrics && serveObserve(settings.http!, control.metrics);
  if (server) {
    control.log.info(`serving /metrics, /healthz and /readyz on http://${hostPort(server.address)}`);
  }
  const stopSignals = onShutdownSignal(() => {
    control.log.info("stopping: flushing in-flight batches and committing (signal again to exit at once)");
    control.armDeadline("shutdown");
    control.shutdown.abort();
  });
  const stopReloads = onReloadSignal(() => control.reload());
  try {
    if (!control.several) return await runOne(names[0], control);
    let failure: Error | undefined;
    await Promise.all(names.map(async (name) => {
      try {
        await runOne(name, control);
      } catch (err) {
        if (failure !== undefined) return;
        failure = named(name, err);
        control.logger(name).error("failed: stopping every pipeline");
        control.fatal();
      }
    }));
    if (failure !== undefined) throw failure;
  } finally {
    stopSignals();
    stopReloads();
    control.dispose();
    await server?.close();
  }
}

function hostPort({ hostname, port }: { hostname: string; port: number }): string {
  return `${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
}

/** The error of a pipeline, named, of the same kind (a usage error still exits 2). */
function named(name: string, err: unknown): Error {
  const message = `pipeline ${name}: ${err instanceof Error ? err.message : String(err)}`;
  return err instanceof UsageError ? new UsageError(message) : new RuntimeError(message);
}
