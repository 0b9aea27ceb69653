import assert from "node:assert/strict";
import { maskUrl, MQTT_PASSWORD_ENV, mqttCredentials, parseEndpoint } from "../../src/config/endpoint.ts";
import { readQuery } from "../../src/config/query.ts";
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

Deno.test("maskUrl hides the password of every scheme://user:password@ in a text", () => {
  assert.equal(
    maskUrl("mqtt://u:s3cr3t@127.0.0.1:1883/cars/+/x?qos=1"),
    "mqtt://u:***@127.0.0.1:1883/cars/+/x?qos=1",
  );
  assert.equal(
    maskUrl("--source 'mqtt://u:p@ss:w@host/t' and kafka://a:b@h:9092/t"),
    "--source 'mqtt://u:***@host/t' and kafka://a:***@h:9092/t",
  );
  assert.equal(maskUrl("mqtt://:onlypass@host/t"), "mqtt://:***@host/t");
  // Nothing to hide: no password, or an '@' after the authority.
  for (
    const text of [
      "mqtt://u@host/t",
      "mqtt://host:1883/users/a@b",
      "mqtt://host:1883?x=a@b",
      "plain u:p@host",
    ]
  ) {
    assert.equal(maskUrl(text), text);
  }
});

Deno.test("parseEndpoint never echoes a password in its errors", () => {
  const cases: [string, RegExp][] = [
    ["mqtt://u:s3cr3t@127.0.0.1:1883", /'mqtt:\/\/u:\*\*\*@127.0.0.1:1883' has no topic/],
    ["mqtt://u:s3cr3t@127.0.0.1:99999/t", /'mqtt:\/\/\*\*\*@127.0.0.1:99999\/t' is not a valid URL/],
    ["mqtt://u:s3c/r3t@127.0.0.1:1883/t", /'mqtt:\/\/\*\*\*@127.0.0.1:1883\/t' is not a valid URL/],
    ["mqtt://u:s3c r3t@127.0.0.1:1883", /has no topic/],
    ["http://u:s3cr3t@x/t", /'http:\/\/u:\*\*\*@x\/t' is not a supported URL/],
    ["u:s3cr3t@127.0.0.1:1883/t", /'u:\*\*\*@127.0.0.1:1883\/t' is not a supported URL \(no scheme\)/],
    ["kafka://u:s3cr3t@127.0.0.1:9092/t", /'kafka:\/\/\*\*\*@127.0.0.1:9092\/t' has user info/],
    ["kafka://u:s3cr3t@127.0.0.1:9092/bad topic", /has user info/],
  ];
  for (const [url, message] of cases) {
    assert.throws(() => parseEndpoint("--source", url), (err: unknown) => {
      assert.ok(err instanceof UsageError, `${url}: ${err}`);
      assert.match(err.message, message);
      assert.doesNotMatch(err.message, /s3c/, `${url}: ${err.message}`);
      return true;
    });
  }
});

function mqttEndpoint(url: string) {
  const e = parseEndpoint("--source", url);
  if (e.kind !== "mqtt") throw new Error("not mqtt");
  return { endpoint: e, query: readQuery("--source", e.params, ["username", "password-file"]) };
}

Deno.test("mqttCredentials takes the password from password-file, then the URL, then EDGEINFER_MQTT_PASSWORD", async () => {
  const file = await Deno.makeTempFile();
  await Deno.writeTextFile(file, "from-file\n");
  const env = (value: string | undefined) => (name: string) => name === MQTT_PASSWORD_ENV ? value : undefined;
  const resolve = (url: string, envValue?: string) => {
    const { endpoint, query } = mqttEndpoint(url);
    return mqttCredentials("--source", endpoint, query, env(envValue));
  };
  assert.deepEqual(resolve(`mqtt://u:from-url@h/t?password-file=${file}`, "from-env"), {
    username: "u",
    password: "from-file",
    passwordFrom: "password-file",
  });
  assert.deepEqual(resolve("mqtt://u:from-url@h/t", "from-env"), {
    username: "u",
    password: "from-url",
    passwordFrom: "url",
  });
  assert.deepEqual(resolve("mqtt://h/t?username=edge", "from-env"), {
    username: "edge",
    password: "from-env",
    passwordFrom: "env",
  });
  assert.deepEqual(resolve("mqtt://u@h/t", ""), { username: "u" }, "an empty variable counts as unset");
  assert.deepEqual(resolve("mqtt://h/t"), { username: undefined });
  await Deno.writeTextFile(file, "p@ss word \r\n\n");
  assert.equal(
    resolve(`mqtt://h/t?username=u&password-file=${encodeURIComponent(file)}`).password,
    "p@ss word ",
  );
});

Deno.test("mqttCredentials names a password file it cannot use, never its content, and one user name", async () => {
  const empty = await Deno.makeTempFile();
  await Deno.writeTextFile(empty, "\n");
  const cases: [string, RegExp][] = [
    [
      "mqtt://u@h/t?password-file=/nonexistent/mqtt.pw",
      /--source password-file=\/nonexistent\/mqtt.pw cannot be read/,
    ],
    [`mqtt://u@h/t?password-file=${empty}`, /password-file=.* is empty/],
    [`mqtt://u@h/t?password-file=${Deno.cwd()}`, /password-file=.* cannot be read/],
    ["mqtt://u@h/t?password-file=", /password-file= needs a path/],
    ["mqtt://u@h/t?username=v", /gives the MQTT user name twice/],
  ];
  for (const [url, message] of cases) {
    const { endpoint, query } = mqttEndpoint(url);
    assert.throws(() => mqttCredentials("--source", endpoint, query, () => undefined), (err: unknown) => {
      assert.ok(err instanceof UsageError, `${url}: ${err}`);
      assert.match(err.message, message);
      return true;
    });
  }
});
