import assert from "node:assert/strict";
import { parseEndpoint } from "../../src/config/endpoint.ts";
import { createSink, createSource } from "../../src/connectors.ts";
import { UsageError } from "../../src/errors.ts";

Deno.test("parseEndpoint reads mqtt-server://host:port/<filter>, default port 1883", () => {
  const e = parseEndpoint("--source", "mqtt-server://0.0.0.0:1884/cars/+/sensors?allow-anonymous=true");
  assert.equal(e.kind, "mqtt-server");
  if (e.kind !== "mqtt-server") return;
  assert.equal(e.host, "0.0.0.0");
  assert.equal(e.port, 1884);
  assert.equal(e.topic, "cars/+/sensors");
  assert.equal(e.params.get("allow-anonymous"), "true");
  const d = parseEndpoint("--source", "mqtt-server://127.0.0.1/cars/#");
  assert.ok(d.kind === "mqtt-server" && d.port === 1883 && d.topic === "cars/#" && !d.tls);
  const t = parseEndpoint("--source", "mqtts-server://127.0.0.1/cars/#");
  assert.ok(t.kind === "mqtt-server" && t.port === 8883 && t.tls);
});

function refused(url: string, pattern: RegExp) {
  assert.throws(() => createSource(url), (e: Error) => {
    assert.ok(e instanceof UsageError, e.message);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("mqtt-server:// mistakes are one-line UsageErrors naming the parameter and the fix", () => {
  refused(
    "mqtt-server://127.0.0.1:1884/cars/+/sensors",
    /^--source would let any device publish: add users=PATH .* or allow-anonymous=true$/,
  );
  refused("mqtt-server://127.0.0.1:1884", /needs the topic filter devices publish to/);
  refused("mqtt-server://u:secret@127.0.0.1:1884/cars/#", /user info.*users=PATH/);
  refused("mqtt-server://127.0.0.1:1884/cars/#/x?allow-anonymous=true", /'#' must be the last level/);
  refused(
    "mqtt-server://127.0.0.1:1884/cars/#?allow-anonymous=true&acl=cars/#",
    /acl=cars\/# must contain \{identity\}/,
  );
  refused(
    "mqtt-server://127.0.0.1:1884/cars/#?users=/nonexistent/users",
    /users=\/nonexistent\/users cannot be read/,
  );
  refused("mqtt-server://127.0.0.1:1884/cars/#?allow-anonymous=true&qos=1", /unknown parameter 'qos'/);
  refused(
    "mqtt-server://127.0.0.1:1884/cars/#?allow-anonymous=true&cert=a.pem",
    /cert= needs TLS: use mqtts-server:/,
  );
  refused(
    "mqtts-server://127.0.0.1:1884/cars/#?allow-anonymous=true",
    /mqtts-server:\/\/ needs the server.s certificate/,
  );
});

Deno.test("mqtt-server:// takes acl= with a literal '#' and {identity}", () => {
  const source = createSource(
    "mqtt-server://127.0.0.1:1884/cars/+/sensors?allow-anonymous=true&acl=cars/{identity}/#",
  );
  assert.equal(source.description, "mqtt-server://127.0.0.1:1884/cars/+/sensors");
});

Deno.test("mqtt-server:// as a sink is refused", async () => {
  await assert.rejects(
    () => createSink("--sink", "mqtt-server://127.0.0.1:1884/cars/#"),
    /--sink mqtt-server:\/\/ is a source/,
  );
});
