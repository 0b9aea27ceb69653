/**
 * Publish → PUBACK latency of an `edgeinfer run --source mqtt-server://…` endpoint: N devices (one MQTT
 * 3.1.1 connection each) publish car events at QoS 1, R events/s in total, for S seconds; prints the rate
 * acknowledged and the latency percentiles (a PUBACK comes once the prediction is durable in the sink).
 *
 *   deno task edgeinfer run --model models/car-anomaly.onnx \
 *     --source 'mqtt-server://127.0.0.1:18830/bench/+/sensors?allow-anonymous=true' \
 *     --sink kafka://127.0.0.1:9092/latency-predictions &
 *   deno run -A scripts/bench_mqtt_server.ts --port 18830 --connections 100 --rate 10000 --seconds 8
 */
import { parseArgs } from "node:util";
import mqtt from "mqtt";
import { FEATURES } from "../src/sim/fleet.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string", default: "1883" },
    connections: { type: "string", default: "1" },
    rate: { type: "string", default: "10000" },
    seconds: { type: "string", default: "8" },
  },
});
const port = Number(values.port);
const connections = Number(values.connections);
const rate = Number(values.rate);
const total = rate * Number(values.seconds);

const devices: mqtt.MqttClient[] = [];
for (let first = 0; first < connections; first += 200) {
  const group = [];
  for (let i = first; i < Math.min(connections, first + 200); i++) {
    group.push(mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      protocolVersion: 4,
      clientId: `bench-device-${i}`,
      reconnectPeriod: 0,
      keepalive: 60,
    }));
  }
  devices.push(...await Promise.all(group));
}
console.error(`${devices.length} devices connected`);

// One payload per device: the car model keeps per-device state, so a reading names its car and its time
// (the same time in every reading: scored against the device's state without moving it).
const readings = Object.fromEntries(FEATURES.map((f) => [f, 1]));
const payloads = devices.map((_, i) =>
  JSON.stringify({ car: `car-${i}`, ts: 1_735_689_600_000, ...readings })
);
const latencies: number[] = [];
let sent = 0;
const start = performance.now();
while (sent < total) {
  const due = Math.min(total, Math.floor((performance.now() - start) * rate / 1000));
  for (; sent < due; sent++) {
    const device = sent % devices.length;
    const publishedAt = performance.now();
    devices[device].publish(`bench/${device}/sensors`, payloads[device], { qos: 1 }, () => {
      latencies.push(performance.now() - publishedAt);
    });
  }
  await new Promise((resolve) => setTimeout(resolve, 1));
}
while (latencies.length < total) await new Promise((resolve) => setTimeout(resolve, 10));
const elapsed = (performance.now() - start) / 1000;
latencies.sort((a, b) => a - b);
const at = (q: number) =>
  latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))].toFixed(1);
console.log(
  `${connections} connections, ${total} events at ${rate}/s: ${
    Math.round(total / elapsed)
  }/s acknowledged; ` +
    `publish → PUBACK p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms`,
);
await Promise.all(devices.map((d) => d.endAsync()));
