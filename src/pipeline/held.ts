import { describePayloadDigest } from "../codecs/dead_letter.ts";

/**
 * What a source holds — events received and not yet acknowledged, and their payload bytes — against
 * the memory bound. A source stops reading while it is `full`; `onRoom` is called when an
 * acknowledgement brings it back under both limits.
 */
export class HeldBudget {
  events = 0;
  bytes = 0;

  constructor(
    readonly maxEvents: number,
    readonly maxBytes: number,
    private readonly onRoom: () => void,
  ) {}

  get full(): boolean {
    return this.events >= this.maxEvents || this.bytes >= this.maxBytes;
  }

  hold(payloadBytes: number): void {
    this.events++;
    this.bytes += payloadBytes;
  }

  release(payloadBytes: number): void {
    this.events--;
    this.bytes -= payloadBytes;
    if (!this.full) this.onRoom();
  }
}

/**
 * A payload over --max-payload-bytes is kept only as a copy of its first `keepBytes` (for its dead
 * letter) plus its size and sha256, so that the source does not hold its full size. Call it only for
 * such a payload.
 */
export function cutOversize(
  payload: Uint8Array,
  keepBytes: number,
): { head: Uint8Array; oversize: { bytes: number; sha256: string } } {
  return { head: payload.slice(0, keepBytes), oversize: describePayloadDigest(payload) };
}
