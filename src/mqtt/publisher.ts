/**
 * An MQTT client that publishes (the MQTT sink, alerts in broker mode): mqtt.js, clean session, redialled
 * every second while the broker is away. QoS 1 publishes wait in mqtt.js's outgoing store across a lost
 * connection and are sent again on the next one; QoS 0 publishes are dropped while disconnected
 * (`queueQoSZero: false`), so an outage cannot fill memory with best-effort messages.
 */
import mqtt from "mqtt";
import type { IClientOptions, MqttClient } from "mqtt";
import { RuntimeError } from "../errors.ts";
import { fatalTlsReason, type TlsFiles } from "../config/tls.ts";

export interface MqttPublisherOptions {
  /** mqtt://host:port or mqtts://host:port, without credentials. */
  brokerUrl: string;
  username?: string;
  password?: string;
  tls?: TlsFiles;
  clientId: string;
  protocolVersion: 4 | 5;
  keepaliveSeconds: number;
  /** Names the option in TLS messages, e.g. "--sink". */
  flag: string;
  /** Connected (again). */
  onUp(firstTime: boolean): void;
  /** Lost or not yet connected, for a reason a redial may heal. */
  onDown(reason: string): void;
  /** Refused login or a certificate problem: mqtt.js stops redialling; no retry can heal it. */
  onFatal(err: RuntimeError): void;
}

export function openMqttPublisher(o: MqttPublisherOptions): MqttClient {
  const options: IClientOptions = {
    clientId: o.clientId,
    protocolVersion: o.protocolVersion,
    clean: true,
    keepalive: o.keepaliveSeconds,
    reconnectPeriod: 1000,
    connectTimeout: 10_000,
    queueQoSZero: false,
    username: o.username,
    password: o.password,
    ...(o.tls ? { ca: o.tls.ca, cert: o.tls.cert, key: o.tls.key, rejectUnauthorized: true } : {}),
  };
  const client = mqtt.connect(o.brokerUrl, options);
  let connectedBefore = false;
  let down = false;
  client.on("connect", () => {
    o.onUp(!connectedBefore);
    connectedBefore = true;
    down = false;
  });
  client.on("offline", () => {
    if (down) return;
    down = true;
    o.onDown(connectedBefore ? "connection lost" : "not connected yet");
  });
  client.on("error", (err: Error) => {
    if (/^Connection refused/.test(err.message) || (err as { code?: unknown }).code === 135) {
      o.onFatal(new RuntimeError(`MQTT broker ${o.brokerUrl} refused the connection: ${err.message}`));
      client.end(true);
      return;
    }
    const tls = fatalTlsReason(err, o.tls, o.flag);
    if (tls !== undefined) {
      o.onFatal(new RuntimeError(`MQTT broker ${o.brokerUrl}: ${tls}`));
      client.end(true);
      return;
    }
    o.onDown(err.message || String(err));
  });
  return client;
}

/** A client id unique to this process and purpose (a clean session: nothing is kept under it). */
export function publisherClientId(purpose: string): string {
  return `edgeinfer-${purpose}-${crypto.randomUUID().slice(0, 8)}`;
}
