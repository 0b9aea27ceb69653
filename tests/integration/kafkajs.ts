/**
 * kafkajs, for the tests only: an independent Kafka client (the product uses @platformatic/kafka)
 * that creates topics, produces test input, reads the product's output and the group's committed
 * offsets. A second implementation of the protocol checking the first one's work.
 */
import { Kafka, logLevel } from "kafkajs";
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

/** A quiet kafkajs client for the tests (errors only; short retries). */
export function testKafka(brokers: string[], clientId = "edgeinfer-test"): Kafka {
  patchKafkajsIdlePolling();
  return new Kafka({
    brokers,
    clientId,
    logLevel: logLevel.ERROR,
    connectionTimeout: 3000,
    retry: { retries: 2, initialRetryTime: 300, maxRetryTime: 2000 },
  });
}
