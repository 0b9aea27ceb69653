/**
 * The contracts between sources, the pipeline and sinks.
 *
 * One rule carries the design: an event is acknowledged to its source only after everything it
 * produced (its prediction or its dead-letter record) is durable in the sink.
 */

/** Where an event came from; copied into output headers so a prediction can be traced back. */
export type Origin =
  | { kind: "kafka"; topic: string; partition: number; offset: string }
  | { kind: "mqtt"; topic: string }
  | { kind: "file"; path: string; line: number };

export interface SourceEvent {
  /** Raw message bytes, exactly as received. */
  payload: Uint8Array;
  /** Kafka message key or MQTT topic; the output key when no --key-field is set. */
  key: string | undefined;
  /** Date.now() when the source received the event. */
  receivedAt: number;
  origin: Origin;
  /**
   * Set when the source kept only a prefix of a payload over --max-payload-bytes (so that it does not
   * hold its full size): the original's size and sha256. The event is dead-lettered.
   */
  oversize?: { bytes: number; sha256: string };
  /** Called exactly once, after every record this event produced is durable. */
  ack(): void;
}

export interface Source {
  /** Human-readable description for logs, e.g. `mqtt://127.0.0.1:1883/cars/+/sensors`. */
  readonly description: string;
  /**
   * Yields events in arrival order, in chunks of whatever the transport delivers at once.
   * Ends when the signal aborts (after which no more events are yielded) or, for finite
   * sources (file, stdin), after the last event.
   */
  events(signal: AbortSignal): AsyncIterable<SourceEvent[]>;
  /** Stop delivering new events (backpressure). Idempotent. */
  pause(): void;
  /** Undo pause(). Idempotent. */
  resume(): void;
  /** Commit what was acknowledged and disconnect. Called once, after all acks are in. */
  close(): Promise<void>;
}

export interface OutRecord {
  /** Message key (Kafka key); undefined means no key. */
  key: string | undefined;
  /** Serialized record (JSON text for predictions). */
  value: string;
  /** Kafka headers; stream sinks ignore them. */
  headers: Record<string, string>;
  /** A prediction over the model's threshold (for alerts; not serialised: `value` says it too). */
  anomaly?: boolean;
  /**
   * With --alert-hysteresis: the device's alert is open, or this reading closed it (what --alerts-on
   * anomalies then publishes); undefined without it.
   */
  alert?: boolean;
}

/** A record a sink refused for good (too large, invalid for the topic): `index` into send()'s records. */
export interface Refusal {
  index: number;
  reason: string;
}

export interface Sink {
  readonly description: string;
  /**
   * Resolves when every record is durable (Kafka: acks=all) or refused for good, listing the
   * refused ones (none: [] or undefined). Retriable failures are retried inside the sink; it rejects
   * only on a failure that cannot heal, and the run then ends.
   */
  send(records: OutRecord[]): Promise<Refusal[] | void>;
  close(): Promise<void>;
  /** Why send() would refuse `record` without trying (e.g. over the size limit), if it would. */
  refuses?(record: OutRecord): string | undefined;
}
