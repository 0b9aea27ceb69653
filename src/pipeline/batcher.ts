/**
 * Groups items into batches: a batch is emitted when it holds `size` items, or `lingerMs` after
 * its first item arrived, whichever comes first (Kafka producer's batch.size / linger.ms).
 */
export class Batcher<T> {
  private items: T[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly size: number,
    private readonly lingerMs: number,
    private readonly emit: (batch: T[]) => void,
  ) {
    if (size < 1) throw new RangeError(`batch size must be >= 1, got ${size}`);
  }

  /** Number of items waiting in the open batch. */
  get pending(): number {
    return this.items.length;
  }

  add(item: T): void {
    this.items.push(item);
    if (this.items.length >= this.size) {
      this.flush();
    } else if (this.items.length === 1) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.flush();
      }, this.lingerMs);
    }
  }

  /** Emits the open batch now, if it holds anything. */
  flush(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.items.length === 0) return;
    const batch = this.items;
    this.items = [];
    this.emit(batch);
  }

  /** Stops the linger timer without emitting (the open batch is dropped: its events stay unacked). */
  discard(): T[] {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const items = this.items;
    this.items = [];
    return items;
  }
}
