/** What a decoder learned about one event besides its features. Reused across batches. */
export interface DecodedMeta {
  /** The event's own id (JSON id field, or the delimited format's leading id), if any. */
  id: string | number | undefined;
  /** Output key from --key-field; undefined means "use the transport key". */
  key: string | undefined;
  /** Input fields copied into the output record (--passthrough), in flag order. */
  passthrough: unknown[] | undefined;
}

/** Turns one payload into one feature row. */
export interface Decoder {
  /**
   * Writes the event's `width` features into `row` starting at `offset` and fills `meta`.
   * Returns undefined on success, or the reason the payload cannot be used (for the dead-letter record).
   */
  decode(text: string, row: Float32Array, offset: number, meta: DecodedMeta): string | undefined;
}

export function emptyMeta(): DecodedMeta {
  return { id: undefined, key: undefined, passthrough: undefined };
}
