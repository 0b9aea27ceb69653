/**
 * The events a push-driven source (the MQTT client and the MQTT server source) has received and the
 * pipeline has not taken yet, handed over as chunks by `events()`. The consumer is woken at most once per
 * macrotask, so the messages parsed from one socket read reach the pipeline as one chunk; while paused
 * (backpressure), received events stay queued.
 */
import type { SourceEvent } from "./types.ts";

export class ChunkQueue {
  #events: SourceEvent[] = [];
  #paused = false;
  #wake: (() => void) | undefined;
  #wakeTimer: ReturnType<typeof setTimeout> | undefined;

  get paused(): boolean {
    return this.#paused;
  }

  push(event: SourceEvent): void {
    this.#events.push(event);
    if (this.#wake && this.#wakeTimer === undefined && !this.#paused) {
      this.#wakeTimer = setTimeout(() => this.wake(), 0);
    }
  }

  /** Wakes a waiting `chunks()` at once (to see a failure, the end, or events after a resume). */
  wake(): void {
    clearTimeout(this.#wakeTimer);
    this.#wakeTimer = undefined;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  pause(): void {
    this.#paused = true;
  }

  /** Undoes pause(); false when it was not paused. */
  resume(): boolean {
    if (!this.#paused) return false;
    this.#paused = false;
    this.wake();
    return true;
  }

  /**
   * Yields the queued events in chunks until `signal` aborts or `ended()` says so: "closed" ends the
   * iteration, an Error is thrown. Whoever changes what `ended()` answers must call wake().
   */
  async *chunks(
    signal: AbortSignal,
    ended: () => Error | "closed" | undefined,
  ): AsyncIterable<SourceEvent[]> {
    const onAbort = () => this.wake();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      while (true) {
        const end = ended();
        if (end instanceof Error) throw end;
        if (signal.aborted || end === "closed") return;
        if (!this.#paused && this.#events.length > 0) {
          const chunk = this.#events;
          this.#events = [];
          yield chunk;
          continue;
        }
        await new Promise<void>((resolve) => this.#wake = resolve);
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }
}
