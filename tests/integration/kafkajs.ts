/**
 * kafkajs, for the tests only: an independent Kafka client (the product uses @platformatic/kafka)
 * that creates topics, produces test input, reads the product's output and the group's committed
 * offsets. A second implementation of the protocol checking the first one's work.
 */
import zlib from "node:zlib";
import { Buffer } from "node:buffer";
import { CompressionCodecs, CompressionTypes, Kafka, logLevel } from "kafkajs";
import SnappyJS from "snappyjs";
import LZ4 from "lz4js";
// kafkajs internals, for patchKafkajsIdlePolling() only (the module instance kafkajs itself uses).
import RequestQueue from "kafkajs/src/network/requestQueue/index.js";

/**
 * kafkajs 2.2.4 bug (tulios/kafkajs#1704, #1751, unfixed upstream): after every response each
 * connection's RequestQueue re-arms `setTimeout(check, throttledUntil - Date.now())` even with
 * nothing pending; throttledUntil is -1, so that is a negative delay (Deno/Node print a
 * TimeoutNegativeWarning) that runs every 1 ms forever: ~3 % of a core per idle source+sink here.
 * The patch returns early exactly when nothing is pending and no throttle is in force; every other
 * case runs the original. It checks the original's text first, so a kafkajs upgrade that changes
 * it leaves kafkajs alone (and tests/integration/kafka_test.ts fails, to revisit this).
 */
export function patchKafkajsIdlePolling(): boolean {
  const proto = RequestQueue.prototype as {
    scheduleCheckPendingRequests(this: { pending: unknown[]; throttledUntil: number }): void;
    __edgeinferPatched?: boolean;
  };
  if (proto.__edgeinferPatched) return true;
  const original = proto.scheduleCheckPendingRequests;
  if (!String(original).includes("let scheduleAt = this.throttledUntil - Date.now()")) return false;
  proto.scheduleCheckPendingRequests = function () {
    if (this.pending.length === 0 && this.throttledUntil < Date.now()) return;
    original.call(this);
  };
  proto.__edgeinferPatched = true;
  return true;
}

/** A kafkajs codec that only reads (the verifier produces no compressed records). */
const decoder = (decompress: (b: Buffer) => Uint8Array) => () => ({
  compress: () => Promise.reject(new Error("the kafkajs verifier only decompresses")),
  decompress: (b: Buffer) => Promise.resolve(Buffer.from(decompress(b))),
});
const XERIAL = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00]);

/**
 * kafkajs reads gzip by itself; snappy, lz4 and zstd need codecs (edgeinfer's sink compresses with zstd
 * by default). Registered here with decoders independent of the product's (which are
 * @platformatic/wasm-utils' snappy and lz4, node:zlib's zstd): snappyjs and lz4js, pure JavaScript, and
 * node:zlib's zstd decompressor.
 */
export function registerKafkajsCodecs(): void {
  CompressionCodecs[CompressionTypes.Snappy] = decoder((b) => {
    if (!b.subarray(0, 8).equals(XERIAL)) return SnappyJS.uncompress(b);
    const chunks: Uint8Array[] = []; // Java clients' xerial framing: 16-byte header, length-prefixed chunks
    for (let at = 16; at < b.length; at += 4 + b.readUInt32BE(at)) {
      chunks.push(SnappyJS.uncompress(b.subarray(at + 4, at + 4 + b.readUInt32BE(at))));
    }
    return Buffer.concat(chunks);
  });
  CompressionCodecs[CompressionTypes.LZ4] = decoder((b) => Uint8Array.from(LZ4.decompress(b)));
  CompressionCodecs[CompressionTypes.ZSTD] = decoder((b) => zlib.zstdDecompressSync(b));
}

/** A quiet kafkajs client for the tests (errors only; short retries), reading every codec. */
export function testKafka(brokers: string[], clientId = "edgeinfer-test"): Kafka {
  patchKafkajsIdlePolling();
  registerKafkajsCodecs();
  return new Kafka({
    brokers,
    clientId,
    logLevel: logLevel.ERROR,
    connectionTimeout: 3000,
    retry: { retries: 2, initialRetryTime: 300, maxRetryTime: 2000 },
  });
}
