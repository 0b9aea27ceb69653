/**
 * MQTT server source: devices connect to edgeinfer itself (MQTT 3.1.1, on aedes) and publish; each
 * publish under the topic filter is an event keyed by its topic, as with the MQTT client source.
 *
 * The PUBACK of a QoS 1 publish is written by `ack()`, i.e. once the event's prediction or dead letter is
 * durable. aedes writes the PUBACK itself (lib/handlers/publish.js, enqueuePublish), right after our
 * `authorizePublish` hook and before routing the message. The hook takes the event and turns the packet
 * into QoS 0 (a documented use: the hook may modify the packet), so aedes only routes it and writes no
 * PUBACK; `ack()` writes it on the same connection. A device that loses its connection before the
 * PUBACK keeps the message and resends it after reconnecting (at least once).
 *
 * Backpressure and the memory bound: aedes reads a socket's next chunk only when every packet of the
 * previous chunk has been handled, i.e. when every `authorizePublish` callback was called. While the
 * source is paused or holds `maxHeldEvents`/`maxHeldBytes`, callbacks are kept (`gated`), so no device
 * socket is read and TCP backpressure reaches the devices. The publishes already parsed from the chunk
 * in hand are still taken: the bound is exceeded by at most one socket read (<= 64 KiB) per device.
 * The callback is otherwise called in a microtask, never synchronously: aedes would read the next chunk
 * from inside the parser of the current one (its batch counter reaches 0 early) and corrupt the stream.
 *
 * Refused (the connection is closed: MQTT 3.1.1 can refuse a publish in no other way), counted and
 * logged once per device per minute: a publish outside the filter or the device's `acl=` rights, QoS 2.
 * Wills are routed but not scored.
 *
 * Alerts back to devices (`publishToDevices`, see src/alerts/): a device may subscribe only within
 * `subscribable` (the alerts' topics) and, with `acl=`, within its own rights; other subscriptions get a
 * failure in their SUBACK (the connection stays). Without `subscribable`, every subscription is refused.
 */
import { Aedes, type AuthenticateError, type Client, type PublishPacket, type Subscription } from "aedes";
import type { Buffer } from "node:buffer";
import mqttPacket from "mqtt-packet";
import { createServer as createTcpServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { RuntimeError } from "../errors.ts";
import { rootLogger } from "../log.ts";
import { Health } from "../pipeline/health.ts";
import { ChunkQueue } from "../pipeline/chunk_queue.ts";
import { cutOversize, HeldBudget } from "../pipeline/held.ts";
import type { Origin, Source, SourceEvent } from "../pipeline/types.ts";
import { deviceFilter, filterWithin, topicMatches } from "./topics.ts";
import type { DevicePublisher } from "../alerts/channels.ts";
import type { SourceLimits } from "../connectors.ts";

/** What it may hold, where it reports outages and logs (listening, refusals): as any source. */
export interface MqttServerSourceOptions extends Omit<SourceLimits, "deviceSubscriptions"> {
  /** Names the option in messages, e.g. "--source". */
  flag: string;
  /** The address to listen on (e.g. 127.0.0.1, or 0.0.0.0 for all interfaces) and its port (0: any free). */
  host: string;
  port: number;
  /** Publishes to topics matching this filter are events. */
  topicFilter: string;
  /**
   * Checks a device's login (user name, password): its identity if accepted, undefined if refused.
   * Absent: every device may connect (allow-anonymous=true); its identity is its client id.
   */
  login?: (username: string | undefined, password: Uint8Array | undefined) => Promise<string | undefined>;
  /** Topic rights, e.g. `cars/{identity}/#`: a device may publish (and subscribe) only under its own filter. */
  aclTemplate?: string;
  /** The filter devices may subscribe within (the alerts' topics, e.g. `cars/+/alerts`); absent: none. */
  subscribable?: string;
  /**
   * TLS (mqtts-server://): the server's certificate and key (PEM). With `ca`, devices must present a
   * certificate signed by it (mTLS), and its common name is the device's identity.
   */
  tls?: { cert: string; key: string; ca?: string };
}

class DeviceEvent implements SourceEvent {
  readonly origin: Origin;
  oversize?: { bytes: number; sha256: string };
  #pending = true;
  constructor(
    readonly payload: Uint8Array,
    readonly key: string,
    readonly receivedAt: number,
    private readonly release: (bytes: number) => void,
    /** The device's connection and the PUBLISH's id, for its PUBACK; null at QoS 0. */
    private readonly client: Client | null,
    private readonly messageId: number,
  ) {
    this.origin = { kind: "mqtt", topic: key };
  }
  ack(): void {
    if (!this.#pending) return;
    this.#pending = false;
    // On a closed connection there is no one to tell: the device resends on its next one.
    if (this.client && !this.client.closed) {
      mqttPacket.writeToStream({ cmd: "puback", messageId: this.messageId }, this.client.conn);
    }
    this.release(this.payload.length);
  }
}

/** Counts refusals and logs at most one line per device per minute, so a misbehaving fleet cannot flood the log. */
export class RefusalLog {
  total = 0;
  private readonly lastLogged = new Map<string, { at: number; since: number }>();
  constructor(private readonly log: (line: string) => void, private readonly now = () => Date.now()) {}

  refuse(device: string, what: string): void {
    this.total++;
    const now = this.now();
    const seen = this.lastLogged.get(device);
    if (seen && now - seen.at < 60_000) {
      seen.since++;
      return;
    }
    if (this.lastLogged.size >= 10_000) this.forgetOld(now);
    const more = seen && seen.since > 0 ? ` (and ${seen.since} more refusals in the last minute)` : "";
    this.lastLogged.set(device, { at: now, since: 0 });
    this.log(`mqtt-server: refused ${device}: ${what}${more}`);
  }

  private forgetOld(now: number): void {
    for (const [device, seen] of this.lastLogged) if (now - seen.at >= 60_000) this.lastLogged.delete(device);
  }
}

export function createMqttServerSource(options: MqttServerSourceOptions): Source & DevicePublisher {
  const { flag, host, topicFilter, aclTemplate } = options;
  const scheme = options.tls ? "mqtts-server" : "mqtt-server";
  const address = host.includes(":") ? `[${host}]:${options.port}` : `${host}:${options.port}`;
  const description = `${scheme}://${address}/${topicFilter}`;
  const log = options.logger ?? rootLogger;
  const health = options.health ?? new Health(undefined, log);
  const refusals = new RefusalLog((line) => log.warn(line));

  let broker: Aedes | undefined;
  let server: Server | undefined;
  const clients = new Set<Client>();
  /** The identity each connection logged in with (login name, certificate CN or client id). */
  const identities = new WeakMap<Client, string>();
  /** aedes' "packet handled" callbacks held back while the source is paused or full. */
  const gated = new Map<Client, (() => void)[]>();
  const queue = new ChunkQueue();
  let closed = false;
  let failure: Error | undefined;
  let releaseScheduled = false;

  const releaseGated = () => {
    releaseScheduled = false;
    if (queue.paused || held.full) return;
    const waiting = [...gated.values()];
    gated.clear();
    for (const callbacks of waiting) for (const done of callbacks) done();
  };
  const scheduleRelease = () => {
    if (releaseScheduled || gated.size === 0) return;
    releaseScheduled = true;
    queueMicrotask(releaseGated); // outside the pipeline's ack loop
  };
  const held = new HeldBudget(options.maxHeldEvents, options.maxHeldBytes, scheduleRelease);
  const release = (bytes: number) => held.release(bytes);

  const fail = (err: Error) => {
    if (failure || closed) return;
    failure = err;
    health.fatal(err);
    queue.wake();
  };

  const deviceName = (client: Client) => {
    const identity = identities.get(client);
    const peer = client.conn as Socket;
    const from = peer.remoteAddress ? ` from ${peer.remoteAddress}` : "";
    return identity && identity !== client.id
      ? `device '${identity}' (client id '${client.id}'${from})`
      : `client '${client.id}'${from}`;
  };

  /** The refusals logged already, which aedes reports again as client errors. */
  const logged = new WeakSet<Error>();
  const refusePublish = (client: Client, done: (err?: Error | null) => void, what: string) => {
    refusals.refuse(deviceName(client), `${what}; connection closed`);
    const err = new Error(what);
    logged.add(err);
    done(err); // aedes closes the connection (MQTT-3.3.5-2)
  };

  const authorizePublish = (
    client: Client | null,
    packet: PublishPacket,
    done: (err?: Error | null) => void,
  ) => {
    // A will (published when a connection dies): routed, not an event, and there is no one to acknowledge.
    if (client === null || client.closed) return done(null);
    if (closed) {
      // Shutting down: no PUBACK (aedes would write one on success); the device resends it later.
      const err = new Error("edgeinfer is shutting down");
      logged.add(err);
      return done(err);
    }
    const topic = packet.topic;
    if (packet.qos === 2) {
      return refusePublish(client, done, `QoS 2 publish to '${topic}' (publish at QoS 1)`);
    }
    if (!topicMatches(topicFilter, topic)) {
      return refusePublish(client, done, `publish to '${topic}', outside '${topicFilter}'`);
    }
    if (aclTemplate !== undefined) {
      const allowed = deviceFilter(aclTemplate, identities.get(client) ?? client.id);
      if (allowed === undefined || !topicMatches(allowed, topic)) {
        return refusePublish(
          client,
          done,
          `publish to '${topic}', outside its rights '${
            allowed ?? "(none: its identity cannot be a topic level)"
          }'`,
        );
      }
    }
    let payload = packet.payload as Uint8Array; // a Buffer from the parser; not copied
    let oversize: { bytes: number; sha256: string } | undefined;
    if (payload.length > options.maxPayloadBytes) {
      ({ head: payload, oversize } = cutOversize(payload, options.keepOversizeBytes));
      packet.payload = payload as PublishPacket["payload"];
    }
    const event = new DeviceEvent(
      payload,
      topic,
      Date.now(),
      release,
      packet.qos === 1 ? client : null,
      packet.messageId ?? 0,
    );
    if (oversize) event.oversize = oversize;
    held.hold(payload.length);
    // aedes must neither PUBACK (ack() does, once durable) nor retain it.
    packet.qos = 0;
    packet.retain = false;
    // One chunk per macrotask: the publishes of one socket read reach the pipeline together.
    queue.push(event);
    const next = () => done(null);
    if (queue.paused || held.full) {
      const waiting = gated.get(client);
      if (waiting) waiting.push(next);
      else gated.set(client, [next]);
    } else queueMicrotask(next);
  };

  const authenticate = (
    client: Client,
    username: string | undefined,
    password: Uint8Array | undefined,
    done: (err: AuthenticateError | null, success: boolean | null) => void,
  ) => {
    const certName = options.tls?.ca ? peerCommonName(client.conn as TLSSocket) : undefined;
    if (options.login === undefined) {
      identities.set(client, certName ?? client.id);
      return done(null, true);
    }
    options.login(username, password).then((identity) => {
      if (identity === undefined) {
        refusals.refuse(
          `client '${client.id}'${username === undefined ? "" : ` (user '${username}')`}`,
          username === undefined ? "no user name and password" : "wrong user name or password",
        );
        const err = new Error("bad user name or password") as AuthenticateError;
        err.returnCode = 4; // CONNACK "bad user name or password"
        logged.add(err);
        return done(err, null);
      }
      identities.set(client, identity);
      done(null, true);
    }, (err) => done(err, null));
  };

  /** Within the alerts' topics and the device's rights: granted; otherwise a failure in the SUBACK. */
  const authorizeSubscribe = (
    client: Client,
    subscription: Subscription,
    done: (err: Error | null, subscription?: Subscription | null) => void,
  ) => {
    const filter = subscription.topic;
    const { subscribable } = options;
    const own = aclTemplate === undefined
      ? undefined
      : deviceFilter(aclTemplate, identities.get(client) ?? client.id);
    if (subscribable === undefined) {
      refusals.refuse(deviceName(client), `subscription to '${filter}' (nothing is published to devices)`);
    } else if (!filterWithin(filter, subscribable)) {
      refusals.refuse(deviceName(client), `subscription to '${filter}', outside '${subscribable}'`);
    } else if (aclTemplate !== undefined && (own === undefined || !filterWithin(filter, own))) {
      refusals.refuse(
        deviceName(client),
        `subscription to '${filter}', outside its rights '${own ?? "(none)"}'`,
      );
    } else {
      // Granted as asked; alerts are published at QoS 0, so they arrive at QoS 0 (src/alerts/alerts.ts).
      return done(null, subscription);
    }
    done(null, null);
  };

  const listen = async (): Promise<void> => {
    broker = await Aedes.createBroker({ authenticate, authorizePublish });
    broker.authorizeSubscribe = authorizeSubscribe;
    // A device that breaks the protocol (aedes closes its connection); lost links are not worth a line.
    const report = (client: Client, err: Error) => {
      if (
        !closed && !logged.has(err) && !/keep alive|ECONNRESET|EPIPE|connection closed/i.test(err.message)
      ) {
        refusals.refuse(deviceName(client), err.message);
      }
    };
    broker.on("clientError", report);
    broker.on("connectionError", report);
    const accept = (socket: Socket) => {
      const client = broker!.handle(socket);
      clients.add(client);
      socket.once("close", () => {
        clients.delete(client);
        gated.delete(client); // its held packets are not handled: the device resends them
      });
    };
    server = options.tls
      ? createTlsServer({
        cert: options.tls.cert,
        key: options.tls.key,
        ...(options.tls.ca ? { ca: options.tls.ca, requestCert: true, rejectUnauthorized: true } : {}),
      }, accept)
      : createTcpServer(accept);
    await new Promise<void>((resolve, reject) => {
      server!.once("error", reject);
      server!.listen(options.port, host, () => {
        server!.off("error", reject);
        resolve();
      });
    }).catch((err: Error & { code?: string }) => {
      throw new RuntimeError(`${flag} ${description}: ${listenProblem(err, host, options.port)}`);
    });
    server.on("tlsClientError", (err: Error, socket: TLSSocket) => {
      if (!closed) {
        refusals.refuse(`a device from ${socket.remoteAddress ?? "?"}`, `TLS handshake: ${err.message}`);
      }
    });
    server.on("error", (err: Error) => fail(new RuntimeError(`${flag} ${description}: ${err.message}`)));
    log.info(
      `mqtt-server: listening on ${scheme}://${boundAddress(server)} for publishes to '${topicFilter}' ` +
        `(MQTT 3.1.1; QoS 1 acknowledged once durable)`,
    );
  };

  return {
    description,

    publishToDevices(topic: string, payload: Buffer): boolean {
      if (broker === undefined || closed) return false;
      broker.publish({ cmd: "publish", topic, payload, qos: 0, retain: false, dup: false }, () => {});
      return true;
    },

    async *events(signal: AbortSignal): AsyncIterable<SourceEvent[]> {
      if (broker) throw new Error("MqttServerSource.events() may only be called once");
      health.onFatal(fail);
      await listen();
      yield* queue.chunks(signal, () => failure ?? (closed ? "closed" : undefined));
    },

    pause() {
      queue.pause();
    },

    resume() {
      if (!queue.resume()) return;
      scheduleRelease();
    },

    async close() {
      if (closed) return;
      closed = true;
      queue.wake();
      gated.clear();
      if (refusals.total > 0) {
        log.warn(
          `mqtt-server: ${refusals.total} refused logins, publishes, subscriptions or handshakes in all`,
        );
      }
      server?.close();
      // The PUBACKs written so far go out before the connections close (end() flushes, destroy would not).
      await Promise.all([...clients].map((client) => endFlushed(client.conn as Socket)));
      if (broker) await new Promise<void>((resolve) => broker!.close(() => resolve()));
    },
  };
}

/** Ends a connection after its pending writes are flushed, or after one second. */
function endFlushed(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, 1000);
    function done() {
      clearTimeout(timer);
      resolve();
    }
    if (socket.destroyed || socket.writableFinished) return done();
    socket.end(done);
  });
}

function peerCommonName(socket: TLSSocket): string | undefined {
  const subject = socket.getPeerCertificate?.()?.subject;
  const cn = subject?.CN;
  return Array.isArray(cn) ? cn[0] : cn || undefined;
}

function boundAddress(server: Server): string {
  const bound = server.address();
  if (bound === null || typeof bound === "string") return String(bound);
  return bound.family === "IPv6" ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`;
}

function listenProblem(err: Error & { code?: string }, host: string, port: number): string {
  switch (err.code) {
    case "EADDRINUSE":
      return `port ${port} is in use by another process: choose another port in the URL`;
    case "EACCES":
      return `listening on port ${port} needs privileges: choose a port above 1023`;
    case "EADDRNOTAVAIL":
      return `${host} is not an address of this machine: use one of its addresses, or 0.0.0.0 for all`;
    default:
      return `cannot listen on ${host}:${port}: ${err.message}`;
  }
}
