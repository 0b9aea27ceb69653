/** The two ways alerts reach devices: the embedded MQTT server (server mode), or the source's broker. */
import { Buffer } from "node:buffer";
import type { MqttClient } from "mqtt";
import { parseEndpoint } from "../config/endpoint.ts";
import { mqttCredentials } from "../config/endpoint.ts";
import type { Logger } from "../log.ts";
import { tlsOptions } from "../mqtt/connect.ts";
import { openMqttPublisher, publisherClientId } from "../mqtt/publisher.ts";
import { DEFAULT_KEEPALIVE_S } from "../mqtt/source.ts";
import type { Source } from "../pipeline/types.ts";
import type { AlertChannel } from "./alerts.ts";

/** Bytes of alerts waiting in the broker connection's send buffer beyond which new ones are dropped. */
const MAX_BUFFERED_BYTES = 1 << 20;

/** A source devices connect to (mqtt-server://), which can publish to those subscribed on it. */
export interface DevicePublisher {
  /** Publishes at QoS 0 to the devices subscribed to `topic`; false before the server listens. */
  publishToDevices(topic: string, payload: Buffer): boolean;
}

export function isDevicePublisher(source: Source): source is Source & DevicePublisher {
  return typeof (source as Partial<DevicePublisher>).publishToDevices === "function";
}

/** Server mode: through the embedded server, to the devices subscribed on it. */
export function deviceChannel(source: Source & DevicePublisher): AlertChannel {
  return {
    description: source.description.replace(/^(mqtts?-server:\/\/[^/]+).*$/, "$1"),
    publish: (topic, payload) => source.publishToDevices(topic, Buffer.from(payload)),
    close: () => Promise.resolve(), // the source closes the server
  };
}

/**
 * Broker mode: a second connection to the --source broker, with its login and TLS (the source's own
 * connection holds back its packet loop under backpressure; alerts must not wait for that).
 */
export function brokerChannel(sourceUrl: string, log: Logger): AlertChannel {
  const flag = "--source";
  const endpoint = parseEndpoint(flag, sourceUrl);
  if (endpoint.kind !== "mqtt") {
    throw new Error(`brokerChannel needs an mqtt:// source, got ${endpoint.kind}`);
  }
  const q = new Map(endpoint.params);
  const { username, password } = mqttCredentials(flag, endpoint, q);
  const sourceClientId = q.get("client-id");
  const clientId = sourceClientId ? `${sourceClientId}-alerts` : publisherClientId("alerts");
  let stopped = false;
  let down = false;
  const client: MqttClient = openMqttPublisher({
    flag,
    brokerUrl: endpoint.brokerUrl,
    username,
    password,
    tls: tlsOptions(flag, endpoint.brokerUrl, q),
    clientId,
    protocolVersion: q.get("version") === "4" ? 4 : 5,
    keepaliveSeconds: Number(q.get("keepalive") ?? DEFAULT_KEEPALIVE_S),
    onUp(firstTime) {
      if (down) log.info(`alerts: reconnected to ${endpoint.brokerUrl}`);
      else if (firstTime) log.debug(`alerts: connected to ${endpoint.brokerUrl} as ${clientId}`);
      down = false;
    },
    onDown(reason) {
      if (down || stopped) return;
      down = true;
      log.warn(`alerts: ${endpoint.brokerUrl}: ${reason}; alerts are dropped until it is back`);
    },
    onFatal(err) {
      if (!stopped) log.error(`alerts: ${err.message}; no more alerts in this run`);
      stopped = true;
    },
  });
  return {
    description: endpoint.brokerUrl,
    publish(topic, payload) {
      if (stopped || !client.connected) return false;
      // A slow link: drop rather than let alerts pile up in the socket's buffer.
      if ((client.stream?.writableLength ?? 0) > MAX_BUFFERED_BYTES) return false;
      client.publish(topic, payload, { qos: 0 });
      return true;
    },
    async close() {
      stopped = true;
      await new Promise<void>((resolve) => client.end(!client.connected, {}, () => resolve()));
    },
  };
}
