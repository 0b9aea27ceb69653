/** Predictions of a test model read back with their input partition and offset (model swap tests). */
import assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
import type { RunningCli } from "../cli/run_cli.ts";
import type { LiveOutput } from "./brokers.ts";

/** Input partitions of the swap tests' feeds. */
export const PARTITIONS = 3;

export interface Scored {
  id: number;
  version: string;
  score: number;
  partition: number;
  offset: number;
}

export function readScored(message: { value: Buffer | null; headers?: Record<string, unknown> }): Scored {
  const record = JSON.parse(String(message.value));
  const source = /^kafka:[^/]+\/(\d+)\/(\d+)$/.exec(String(message.headers?.["edgeinfer-source"] ?? ""));
  assert.ok(source, "edgeinfer-source header");
  return {
    id: record.id,
    version: record.model.version,
    score: record.score,
    partition: Number(source[1]),
    offset: Number(source[2]),
  };
}

/** Within each input partition, in input order, the versions never go back: `before` until one point, then `after`. */
export function assertOneSwitch(records: Scored[], before: string, after: string): void {
  for (let p = 0; p < PARTITIONS; p++) {
    const inOrder = records.filter((r) => r.partition === p).sort((a, b) => a.offset - b.offset);
    const firstAfter = inOrder.findIndex((r) => r.version === after);
    assert.ok(firstAfter > 0, `partition ${p}: scored by ${before} first, then by ${after}`);
    for (const [i, r] of inOrder.entries()) {
      assert.equal(r.version, i < firstAfter ? before : after, `partition ${p} offset ${r.offset}`);
    }
  }
}

/** Every event fed, scored exactly once, its score the one of the version its record names. */
export function assertEachScoredOnce(output: LiveOutput<Scored>, fed: number, bias: Record<string, number>) {
  assert.equal(output.covered(), fed, "every event scored");
  assert.equal(output.duplicates(), 0, "no event scored twice");
  assert.equal(output.count, fed);
  for (const r of output.records) assert.equal(r.score, (r.id % 100) + bias[r.version], `event ${r.id}`);
}

export async function waitFor(what: string, condition: () => boolean, run: RunningCli, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; stderr:\n${run.stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
