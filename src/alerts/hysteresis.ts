/**
 * Alert hysteresis per device (`--alert-hysteresis K/N,M`): per-reading anomalies become a device alert that
 * opens once K of the device's last N readings are anomalous and closes after M consecutive normal ones.
 *
 * State per device key: the last N anomaly bits in one number (N ≤ 32), their count, the open flag, the time
 * it opened, the consecutive normal readings while open, and when the device was last seen. Closing clears
 * the window: reopening needs K anomalies among the readings that follow.
 *
 * Bounded: at most `maxDevices` devices (the least recently seen one is evicted for a new one) and a device
 * unseen for `idleMs` is forgotten; an evicted or forgotten device starts again closed with an empty window.
 * State lives in memory only: after a restart every device starts closed.
 *
 * The state follows the order in which readings are observed (the order they are scored in); observe() does
 * not allocate except for a device seen for the first time (its state object, then reused on eviction).
 */

/** K/N,M: open at `openAnomalies` anomalies among the last `window` readings; close after `closeNormals`. */
export interface HysteresisRule {
  openAnomalies: number;
  window: number;
  closeNormals: number;
}

export interface DeviceAlertBounds {
  /** Devices tracked at most (--alert-devices). */
  maxDevices: number;
  /** A device unseen for this long starts again closed (--alert-idle). */
  idleMs: number;
}

export const DEFAULT_ALERT_DEVICES = 100_000;
export const DEFAULT_ALERT_IDLE_MS = 3_600_000;
/** The window is a bitmask in one 32-bit number. */
export const MAX_ALERT_WINDOW = 32;

/** One device's state; read it right after observe() (the object is reused for another device on eviction). */
export class DeviceAlertState {
  /** The last N readings, newest in bit 0: 1 = anomalous. */
  recent = 0;
  /** Anomalous readings among `recent`. */
  anomalies = 0;
  /** Consecutive normal readings while open. */
  normals = 0;
  open = false;
  /** When the alert opened (the opening reading's ts); 0 while closed. */
  since = 0;
  lastSeen = 0;
}

export class DeviceAlerts {
  /** Devices whose alert is open now. */
  openNow = 0;
  /** Transitions so far. */
  opened = 0;
  closed = 0;
  /** Devices dropped by the cap (least recently seen) or by the idle expiry. */
  evicted = 0;
  expired = 0;
  /** Whether the last observe() opened or closed its device's alert. */
  changed = false;

  private readonly devices = new Map<string, DeviceAlertState>();
  private readonly mask: number;
  private readonly oldestBit: number;
  private sweptAt = Number.NEGATIVE_INFINITY;

  constructor(readonly rule: HysteresisRule, readonly bounds: DeviceAlertBounds) {
    this.mask = rule.window === 32 ? -1 : (1 << rule.window) - 1;
    this.oldestBit = rule.window - 1;
  }

  /** Devices tracked now. */
  get size(): number {
    return this.devices.size;
  }

  /**
   * Notes one reading of `key` at `now` (ms) and returns its device's state after it; `changed` tells whether
   * this reading opened or closed the alert.
   */
  observe(key: string, anomaly: boolean, now: number): DeviceAlertState {
    if (now !== this.sweptAt) this.expire(now);
    const devices = this.devices;
    let s = devices.get(key);
    if (s !== undefined) {
      // Most recently seen last: the Map's order is the LRU order.
      devices.delete(key);
      if (now - s.lastSeen > this.bounds.idleMs) {
        this.reset(s);
        this.expired++;
      }
    } else if (devices.size >= this.bounds.maxDevices) {
      const oldest: string = devices.keys().next().value!;
      s = devices.get(oldest)!;
      devices.delete(oldest);
      this.reset(s);
      this.evicted++;
    } else {
      s = new DeviceAlertState();
    }
    devices.set(key, s);
    s.lastSeen = now;

    const bit = anomaly ? 1 : 0;
    const leaving = (s.recent >>> this.oldestBit) & 1;
    s.recent = ((s.recent << 1) | bit) & this.mask;
    s.anomalies += bit - leaving;
    this.changed = false;
    if (!s.open) {
      if (s.anomalies >= this.rule.openAnomalies) {
        s.open = true;
        s.since = now;
        s.normals = 0;
        this.openNow++;
        this.opened++;
        this.changed = true;
      }
    } else if (bit === 1) {
      s.normals = 0;
    } else if (++s.normals >= this.rule.closeNormals) {
      s.open = false;
      s.since = 0;
      s.normals = 0;
      s.recent = 0;
      s.anomalies = 0;
      this.openNow--;
      this.closed++;
      this.changed = true;
    }
    return s;
  }

  /** Forgets the devices unseen for longer than the idle limit (the least recently seen are first). */
  private expire(now: number): void {
    this.sweptAt = now;
    const limit = now - this.bounds.idleMs;
    for (const [key, s] of this.devices) {
      if (s.lastSeen >= limit) break;
      this.devices.delete(key);
      this.reset(s);
      this.expired++;
    }
  }

  private reset(s: DeviceAlertState): void {
    if (s.open) this.openNow--;
    s.open = false;
    s.since = 0;
    s.normals = 0;
    s.recent = 0;
    s.anomalies = 0;
  }
}

/** Parses `K/N,M`; undefined when the value is not of that form or out of range (the caller names the flag). */
export function parseHysteresisRule(value: string): HysteresisRule | undefined {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*,\s*(\d+)\s*$/.exec(value);
  if (m === null) return undefined;
  const [openAnomalies, window, closeNormals] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (openAnomalies < 1 || openAnomalies > window || window > MAX_ALERT_WINDOW || closeNormals < 1) {
    return undefined;
  }
  return { openAnomalies, window, closeNormals };
}
