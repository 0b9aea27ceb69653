/**
 * The Kafka sink's `compression=` codecs against a real broker (scripts/services.sh up): records
 * written with each codec read back intact by kafkajs (the independent verifier, with the decoders of
 * tests/integration/kafkajs.ts: snappyjs and lz4js, pure JavaScript, and node:zlib for zstd; gzip is
 * kafkajs' own), and the batches on the broker carry the codec asked for (the partition's segment
 * file, read when the broker's log dir is on this machine: scripts/services.sh's state dir); without a
 * compression= parameter, the default's.
 */
import assert from "node:assert/strict";
import { createSink } from "../../src/connectors.ts";
import { UsageError } from "../../src/errors.ts";
import { DEFAULT_COMPRESSION } from "../../src/kafka/connect.ts";
import { COMPRESSIONS } from "../../src/kafka/sink.ts";
import type { OutRecord } from "../../src/pipeline/types.ts";
import { batchCodecs, consume, createTopic, KAFKA_BROKERS, SERVICES_STATE, uniqueName } from "./brokers.ts";

/** Record batch attributes' codec bits (Kafka's numbering). */
const CODEC_ID: Record<string, number> = { none: 0, gzip: 1, snappy: 2, lz4: 3, zstd: 4 };
/** Prediction-shaped records, keyed by car, with the pipeline's headers. */
function predictions(n: number): OutRecord[] {
  return Array.from({ length: n }, (_, i) => {
    const key = `car-${String(i % 50).padStart(5, "0")}`;
    return {
      key,
      value: JSON.stringify({
        key,
        score: (i * 0.000731) % 0.03,
        anomaly: i % 17 === 0,
        threshold: 0.015914035961031914,
        model: { name: "car-anomaly", version: "1" },
        ts: 1796121841966 + i,
        note: i % 10 === 0 ? "é ü 🚗" : undefined, // multi-byte UTF-8 survives each codec
      }),
      headers: { "edgeinfer-source": `mqtt:cars/${key}/sensors`, "edgeinfer-model": "car-anomaly:1" },
    };
  });
}

Deno.test("compression=: an unknown codec is a usage error naming the codecs", async () => {
  await assert.rejects(
    createSink("--sink", `kafka://${KAFKA_BROKERS.join(",")}/t?compression=brotli`),
    (e: unknown) =>
      e instanceof UsageError && COMPRESSIONS.every((c) => e.message.includes(c)) &&
      e.message.includes("compression"),
  );
});

Deno.test("compression=: records written with each codec read back intact; batches carry the codec", async () => {
  const records = predictions(600);
  await Promise.all([...COMPRESSIONS, "default"].map(async (codec) => {
    const topic = uniqueName(`edgeinfer-compression-${codec}`);
    await createTopic(topic, 1);
    const query = codec === "default" ? "" : `?compression=${codec}`;
    const sink = await createSink("--sink", `kafka://${KAFKA_BROKERS.join(",")}/${topic}${query}`);
    try {
      // Two sends: a small one, then a batch large enough to be worth compressing.
      assert.deepEqual(await sink.send(records.slice(0, 3)), []);
      assert.deepEqual(await sink.send(records.slice(3)), []);
    } finally {
      await sink.close();
    }
    const got = await consume(topic, records.length, 15_000);
    assert.equal(got.length, records.length, `${codec}: records read back`);
    got.sort((a, b) => Number(a.offset) - Number(b.offset));
    for (let i = 0; i < records.length; i++) {
      assert.equal(got[i].key, records[i].key, `${codec}: key of record ${i}`);
      assert.equal(got[i].value, records[i].value, `${codec}: value of record ${i}`);
      assert.deepEqual(got[i].headers, records[i].headers, `${codec}: headers of record ${i}`);
    }
    const expected = CODEC_ID[codec === "default" ? DEFAULT_COMPRESSION : codec];
    const codecs = await batchCodecs(topic);
    if (codecs === undefined) {
      console.log(`${codec}: the broker's log dir is not in ${SERVICES_STATE}; batch codecs not checked`);
    } else {
      assert.ok(codecs.length >= 2, `${codec}: at least two batches on the broker (got ${codecs.length})`);
      assert.deepEqual(codecs, codecs.map(() => expected), `${codec}: codec of every batch on the broker`);
    }
  }));
});
