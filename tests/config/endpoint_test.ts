import assert from "node:assert/strict";
import { parseEndpoint } from "../../src/config/endpoint.ts";
import { UsageError } from "../../src/errors.ts";

Deno.test("parseEndpoint reads an MQTT URL with credentials, wildcard filter and query", () => {
  const e = parseEndpoint("--source", "mqtt://user:p%40ss@127.0.0.1:1884/cars/+/sensors?qos=1&share=edge");
  assert.equal(e.kind, "mqtt");
  if (e.kind !== "mqtt") return;
  assert.equal(e.brokerUrl, "mqtt://127.0.0.1:1884");
  assert.equal(e.username, "user");
  assert.equal(e.password, "p@ss");
  assert.equal(e.topic, "cars/+/sensors");
  assert.equal(e.params.get("qos"), "1");
  assert.equal(e.params.get("share"), "edge");
});

Deno.test("parseEndpoint keeps a multi-level '#' wildcard and defaults the MQTT port", () => {
  const e = parseEndpoint("--source", "mqtt://localhost/cars/#?qos=0");
  assert.deepEqual(e.kind === "mqtt" && [e.brokerUrl, e.topic, e.params.get("qos")], [
    "mqtt://localhost:1883",
    "cars/#",
    "0",
  ]);
});

Deno.test("parseEndpoint reads a Kafka URL with several brokers and a group", () => {
  const e = parseEndpoint("--source", "kafka://127.0.0.1:9092,127.0.0.2:9093/car-events?group=edge");
  assert.equal(e.kind, "kafka");
  if (e.kind !== "kafka") return;
  assert.deepEqual(e.brokers, ["127.0.0.1:9092", "127.0.0.2:9093"]);
  assert.equal(e.topic, "car-events");
  assert.equal(e.params.get("group"), "edge");
});

Deno.test("parseEndpoint reads file: paths and '-' for standard streams", () => {
  assert.deepEqual(parseEndpoint("--source", "file:data/events.jsonl"), {
    kind: "file",
    path: "data/events.jsonl",
  });
  assert.deepEqual(parseEndpoint("--source", "file:///tmp/x.jsonl"), { kind: "file", path: "/tmp/x.jsonl" });
  assert.deepEqual(parseEndpoint("--sink", "-"), { kind: "stdio" });
  assert.deepEqual(parseEndpoint("--sink", "stdout"), { kind: "stdio" });
});

Deno.test("parseEndpoint names the flag and the problem for bad URLs", () => {
  const cases: [string, RegExp][] = [
    ["http://x:1/t", /--source 'http:\/\/x:1\/t' is not a supported URL \(unknown scheme 'http:\/\/'\)/],
    ["cars/+/sensors", /no scheme/],
    ["mqtt://127.0.0.1:1883", /has no topic/],
    ["kafka://127.0.0.1:9092", /needs a Kafka topic/],
    ["kafka://127.0.0.1/t", /broker '127.0.0.1' must be host:port/],
    ["kafka://127.0.0.1:9092/bad topic", /needs a Kafka topic/],
    ["file:", /needs a path/],
  ];
  for (const [url, message] of cases) {
    assert.throws(() => parseEndpoint("--source", url), (err: unknown) => {
      assert.ok(err instanceof UsageError, `${url}: ${err}`);
      assert.match(err.message, message);
      return true;
    });
  }
});
