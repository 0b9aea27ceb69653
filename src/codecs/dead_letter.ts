import type { Origin, OutRecord } from "../pipeline/types.ts";
import { describeOrigin } from "./prediction.ts";

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The dead-letter record of an event that could not be scored:
 * {"error":"…","source":"mqtt:cars/1","ts":…,"payload":"<original text>"}
 * Payloads that are not valid UTF-8 are kept as "payload_base64" instead, so the original bytes
 * can always be recovered. The reason also travels in the `edgeinfer-error` header.
 */
export function deadLetterRecord(
  payload: Uint8Array,
  key: string | undefined,
  origin: Origin,
  reason: string,
  ts: number,
): OutRecord {
  const source = describeOrigin(origin);
  let body: string;
  try {
    body = `"payload":${JSON.stringify(strictUtf8.decode(payload))}`;
  } catch {
    body = `"payload_base64":"${toBase64(payload)}"`;
  }
  return {
    key,
    value: `{"error":${JSON.stringify(reason)},"source":${JSON.stringify(source)},"ts":${ts},${body}}`,
    headers: { "edgeinfer-error": reason, "edgeinfer-source": source },
  };
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
  return btoa(binary);
}
