/**
 * MQTT source: a persistent-session subscriber whose QoS 1/2 acknowledgements are deferred until
 * the pipeline calls `ack()` (the event's predictions are durable), without serialising delivery.
 *
 * How: mqtt.js handles incoming packets one after another and writes each PUBACK (QoS 1) or PUBREC
 * (QoS 2) as soon as the message was handed to the application. We let that packet loop run at
 * full speed and only swallow those two packets (see `holdBackAcks`); `ack()` writes the same
 * packet later. The broker stops at its in-flight window of un-acked deliveries: MQTT 5
 * `receiveMaximum` (= `maxInFlight`), or Mosquitto's `max_inflight_messages` for MQTT 3.1.1.
 *
 * Memory bound: the events held (received, not yet acknowledged) never exceed `maxInFlight`, and their
 * payload bytes never exceed `maxHeldBytes` by more than one message. At the limit the source stops
 * mqtt.js's packet loop itself (see `gate`), not only the socket: pausing the socket is not enough,
 * because mqtt.js pipes the socket into a Writable whose parser has already split a whole read
 * (often hundreds of PUBLISHes) into a packet queue, and the pipe resumes the socket as soon as that
 * Writable drains. With the packet loop held, the Writable's callback is not called, the pipe stops
 * reading, TCP backpressure reaches the broker, and the broker queues the rest. The broker's window
 * alone is no bound: Mosquitto 2.0.11 releases more messages on every PUBACK of the oldest one
 * (measured: window 20, acks 20 ms late -> ~1600 outstanding). While the loop is held no PINGRESP is
 * read either: the source then sends PINGREQs itself, every keepalive, and keeps mqtt.js from timing
 * the link out (see `holdKeepalive`), so a long stall (Kafka down) does not end in reconnect churn.
 *
 * Keepalive: a link that goes silent (a half-open connection, as a NAT timeout leaves it) is dropped
 * and redialled within 1.5 x keepalive (mqtt.js pings after one keepalive without a PINGRESP or a
 * PUBLISH, and gives up half a keepalive later); the broker drops ours within 1.5 x keepalive too.
 * A ping's round trip must stay under half a keepalive. While the packet loop is held, the link is not
 * checked: a fault then is found within 1.5 x keepalive after the loop runs again.
 *
 * A payload over `maxPayloadBytes` is cut to its first `keepOversizeBytes` as soon as it arrives
 * (its size and sha256 are kept for the dead-letter record): it costs its full size only while
 * mqtt.js parses it. No MQTT 5 maximum packet size is announced on purpose: Mosquitto then drops a
 * larger message for this client with only a line in its own log ("Dropping too large outgoing
 * PUBLISH"), so it would be lost without a trace; this way it is dead-lettered and counted.
 *
 * QoS 2: the event is delivered when the PUBLISH arrives and PUBREC is withheld until `ack()`;
 * mqtt.js then answers the broker's PUBREL with PUBCOMP by itself. If the connection drops before
 * `ack()`, the broker re-sends the PUBLISH, so QoS 2 is at-least-once towards the pipeline (like
 * QoS 1), never "acked and lost".
 */
import mqtt from "mqtt";
import type { IClientOptions, IConnackPacket, IPublishPacket, MqttClient, Packet } from "mqtt";
import { RuntimeError, UsageError } from "../errors.ts";
import { type Logger, rootLogger } from "../log.ts";
import { Health } from "../pipeline/health.ts";
import { ChunkQueue } from "../pipeline/chunk_queue.ts";
import { cutOversize, HeldBudget } from "../pipeline/held.ts";
import type { Origin, Source, SourceEvent } from "../pipeline/types.ts";
import { takeoverTopic, takeoverWill } from "./takeover.ts";
import { fatalTlsReason, type TlsFiles } from "../config/tls.ts";

export interface MqttSourceOptions {
  /** Broker URL, e.g. "mqtt://127.0.0.1:1883" (mqtts://, ws:// also work). */
  brokerUrl: string;
  username?: string;
  password?: string;
  /**
   * TLS (mqtts:// only): `ca` verifies the broker's certificate (always verified; without `ca`, against
   * the system's CAs); `cert` + `key` present a client certificate (mutual TLS). PEM contents, not paths.
   */
  tls?: TlsFiles;
  /** Topic filter, e.g. "cars/+/sensors". */
  topicFilter: string;
  /** Maximum QoS of the subscription. 0 means no acks and no redelivery. */
  qos: 0 | 1 | 2;
  /** Stable client id: the broker keeps the session (subscription + queued messages) under it. */
  clientId: string;
  /** Subscribe as `$share/<group>/<filter>` (MQTT 5 shared subscription; needs protocolVersion 5). */
  shareGroup?: string;
  protocolVersion: 4 | 5;
  /**
   * Un-acked QoS 1/2 deliveries the broker may have outstanding (1..65535, default 65535); should be
   * >= batch size x batches in flight. Sent as MQTT 5 `receiveMaximum`, which Mosquitto 2.0 uses
   * *instead of* its `max_inflight_messages` (larger or smaller). MQTT 3.1.1 cannot announce it:
   * there the broker's `max_inflight_messages` is the window and must be >= the batch size, or
   * batches only fill up to the window and then wait for linger. Also the number of buffered,
   * not yet acknowledged events at which the source stops reading.
   */
  maxInFlight?: number;
  /** Payload bytes held (received, not acknowledged) at which the source stops reading. */
  maxHeldBytes?: number;
  /** Payloads larger than this are cut to `keepOversizeBytes` on arrival (they are dead-lettered). */
  maxPayloadBytes?: number;
  /** How much of an oversized payload is kept for its dead-letter record. */
  keepOversizeBytes?: number;
  /** Where connection losses and fatal failures are reported. */
  health?: Health;
  /** Where its own lines go (subscriptions, reconnects, takeovers); default: the root logger. */
  logger?: Logger;
  /** MQTT keepalive in seconds (DEFAULT_KEEPALIVE_S): a silent link is declared dead after 1.5 x this. */
  keepaliveSeconds?: number;
  /**
   * With `shareGroup`: the Will Delay after which a surviving member takes over a lost member's session
   * (takeover.ts). Undefined: no takeover.
   */
  takeoverDelaySeconds?: number;
}

/** The mqtt.js version whose internals `holdBackAcks` was written against and tested with. */
export const PINNED_MQTT_VERSION = "5.16.0";

/**
 * Seconds between pings on a quiet link (`keepalive=`). 15 s finds a dead link within 22.5 s, rides out
 * ping round trips up to 7.5 s, and costs ~100 bytes on the wire per ping. mqtt.js's default is 60 s.
 */
export const DEFAULT_KEEPALIVE_S = 15;

/** Seconds the broker keeps an MQTT 5 session (subscription + queued messages) while we are away. */
const SESSION_EXPIRY_S = 24 * 60 * 60;

type AckCmd = "puback" | "pubrec";
type SendPacket = (packet: Packet, cb?: (err?: Error) => void, ...rest: unknown[]) => void;

/**
 * The one reach into mqtt.js internals (pinned to 5.16.0, build/lib/handlers/publish.js):
 * after handing a QoS 1 message to the application, the publish handler calls
 * `client._sendPacket({cmd: 'puback', messageId, reasonCode: 0}, done)`, and for QoS 2
 * `client._sendPacket({cmd: 'pubrec', messageId}, done)` — `done` lets the packet loop go on to
 * the next packet. We replace `_sendPacket` on this client instance: such successful acks are not
 * written, but `done` is still called, so the loop does not wait. Everything else passes through.
 * Returns the original `_sendPacket`, with which `ack()` writes the withheld packet later.
 */
export function holdBackAcks(
  client: MqttClient,
  gate: (resume: () => void) => void = (r) => r(),
): SendPacket {
  const version = mqtt.MqttClient.VERSION;
  // deno-lint-ignore no-explicit-any
  const internals = client as any;
  if (version !== PINNED_MQTT_VERSION || typeof internals._sendPacket !== "function") {
    throw new Error(
      `edgeinfer's MQTT source defers PUBACKs through mqtt.js ${PINNED_MQTT_VERSION} internals ` +
        `(MqttClient._sendPacket), but found mqtt.js ${version}; re-check src/mqtt/source.ts ` +
        `against handlers/publish.js of that version and update PINNED_MQTT_VERSION`,
    );
  }
  const send: SendPacket = internals._sendPacket.bind(client);
  internals._sendPacket = (packet: Packet, cb?: (err?: Error) => void, ...rest: unknown[]) => {
    if (
      (packet.cmd === "puback" || packet.cmd === "pubrec") && !(packet as { reasonCode?: number }).reasonCode
    ) {
      // The packet loop goes on (once the source has room: QoS 2 reaches the application here, not in
      // handleMessage); ack() writes this packet later.
      gate(() => cb?.());
      return;
    }
    return send(packet, cb, ...rest);
  };
  return send;
}

class MqttEvent implements SourceEvent {
  readonly origin: Origin;
  oversize?: { bytes: number; sha256: string };
  #pending = true;
  constructor(
    readonly payload: Uint8Array,
    readonly key: string,
    readonly receivedAt: number,
    private readonly release: (event: MqttEvent) => void,
    private readonly writeAck: ((cmd: AckCmd, messageId: number, generation: number) => void) | null,
    private readonly cmd: AckCmd,
    private readonly messageId: number,
    private readonly generation: number,
  ) {
    this.origin = { kind: "mqtt", topic: key };
  }
  ack(): void {
    if (!this.#pending) return; // already acked (a second PUBACK could ack a reused id)
    this.#pending = false;
    this.writeAck?.(this.cmd, this.messageId, this.generation); // null at QoS 0
    this.release(this);
  }
}

/** The URL without user:password, for messages and logs. */
function redact(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    return u.toString().replace(/\/$/, "");
  } catch {
    return url;
  }
}

export function createMqttSource(options: MqttSourceOptions): Source {
  const { topicFilter, shareGroup, protocolVersion, qos } = options;
  const maxInFlight = options.maxInFlight ?? 65535;
  if (shareGroup !== undefined && protocolVersion !== 5) {
    throw new UsageError(`MQTT shared subscriptions ($share/${shareGroup}/...) need MQTT protocol version 5`);
  }
  if (!/^(mqtts?|wss?|tcp|ssl):\/\/[^/]/.test(options.brokerUrl)) {
    throw new UsageError(
      `MQTT broker URL must look like mqtt://host:port, got '${redact(options.brokerUrl)}'`,
    );
  }
  if (options.clientId === "") {
    throw new UsageError(
      "MQTT client id must not be empty: the broker keeps the persistent session under it",
    );
  }
  if (!Number.isInteger(maxInFlight) || maxInFlight < 1 || maxInFlight > 65535) {
    throw new UsageError(`MQTT max in-flight must be an integer in 1..65535, got ${maxInFlight}`);
  }
  const broker = redact(options.brokerUrl);
  const subscription = shareGroup === undefined ? topicFilter : `$share/${shareGroup}/${topicFilter}`;
  const description = `${broker}/${subscription}`;

  /**
   * One connection to the broker under one client id: ours, or a lost peer's session taken over (see
   * takeover.ts). Deliveries of every link feed the same buffer and count against the same memory bound.
   */
  interface Link {
    readonly clientId: string;
    readonly adopted: boolean;
    readonly client: MqttClient;
    /** The original `_sendPacket`: writes the PUBACKs withheld by holdBackAcks. */
    readonly send: SendPacket;
    /** Bumped whenever the connection closes: acks of earlier deliveries are then dropped. */
    generation: number;
    /** mqtt.js packet-loop continuations held back while the source is full (see `gate`). */
    gated: (() => void)[];
    readonly writeAck: (cmd: AckCmd, messageId: number, generation: number) => void;
  }
  let primary: Link | undefined;
  const links = new Set<Link>();
  const queue = new ChunkQueue();
  let closed = false;
  let failure: Error | undefined;
  const log = options.logger ?? rootLogger;
  const health = options.health ?? new Health(undefined, log);
  const part = `MQTT source ${broker}`;
  const maxPayloadBytes = options.maxPayloadBytes ?? Infinity;
  const keepOversizeBytes = Math.min(options.keepOversizeBytes ?? 64 * 1024, maxPayloadBytes);
  const keepaliveMs = (options.keepaliveSeconds ?? DEFAULT_KEEPALIVE_S) * 1000;
  const takeover = shareGroup !== undefined && options.takeoverDelaySeconds !== undefined
    ? { topic: takeoverTopic(shareGroup, topicFilter), delayS: options.takeoverDelaySeconds }
    : undefined;
  let releaseScheduled = false;

  const anyGated = () => {
    for (const link of links) if (link.gated.length > 0) return true;
    return false;
  };

  const releaseGated = () => {
    releaseScheduled = false;
    for (const link of links) {
      while (link.gated.length > 0 && (!held.full || closed)) link.gated.shift()!();
    }
  };

  /** The memory bound; an ack that makes room resumes the packet loops, once per burst of acks. */
  const held = new HeldBudget(maxInFlight, options.maxHeldBytes ?? 64 * 1024 * 1024, () => {
    if (!releaseScheduled && anyGated()) {
      releaseScheduled = true;
      queueMicrotask(releaseGated); // outside the pipeline's ack loop
    }
  });

  /** Runs `resume` (mqtt.js's "handle the next packet") now, or once the source has room again. */
  const gate = (link: Link, resume: () => void) => {
    if (held.full && !closed) {
      link.gated.push(resume);
      holdKeepalive();
    } else resume();
  };

  /** Lets every held continuation of a link run out (its connection closed, or the source is closing). */
  const releaseAllGated = (link: Link) => {
    const stale = link.gated;
    link.gated = [];
    for (const resume of stale) resume();
  };

  /**
   * While a packet loop is held, PINGRESPs stay unread: without this, mqtt.js would time out a healthy
   * link after 1.5 x keepalive of backpressure, and each reconnect would redeliver the whole window.
   * Every half keepalive: tell mqtt.js's keepalive timer to start over, and every other time send a
   * PINGREQ, so the broker (which drops a client silent for 1.5 x keepalive) keeps us connected.
   */
  let holdTimer: ReturnType<typeof setInterval> | undefined;
  const holdKeepalive = () => {
    if (holdTimer !== undefined) return;
    let ticks = 0;
    holdTimer = setInterval(() => {
      ticks++;
      let holding = false;
      for (const link of links) {
        if (link.gated.length === 0 || closed) {
          link.client.reschedulePing(true); // its loop runs: the link is checked from now on
          continue;
        }
        holding = true;
        if (!link.client.connected) continue;
        link.client.reschedulePing(true);
        if (ticks % 2 === 0) link.send({ cmd: "pingreq" } as Packet);
      }
      if (!holding) {
        clearInterval(holdTimer);
        holdTimer = undefined;
      }
    }, keepaliveMs / 2);
  };

  const release = (event: MqttEvent) => held.release(event.payload.length);

  const fail = (err: Error) => {
    if (failure || closed) return;
    failure = err;
    for (const link of links) link.client.end(true);
    health.fatal(err);
    queue.wake();
  };

  /** A peer of the share group is gone (its will arrived): resume its session, unless we hold it. */
  const adopt = (peerId: string) => {
    if (closed || failure || peerId === options.clientId) return;
    for (const link of links) if (link.clientId === peerId) return;
    log.info(`mqtt: ${peerId} left the shared subscription '${subscription}': taking over its session`);
    openLink(peerId, true);
  };

  const openLink = (clientId: string, adopted: boolean): Link => {
    const clientOptions: IClientOptions = {
      clientId,
      username: options.username,
      password: options.password,
      ...(options.tls
        ? {
          ca: options.tls.ca,
          cert: options.tls.cert,
          key: options.tls.key,
          // Always verified: there is deliberately no way to turn this off.
          rejectUnauthorized: true,
        }
        : {}),
      protocolVersion,
      clean: false,
      // An adopted session is never redialled: its will (below) brings it to whichever member is alive.
      reconnectPeriod: adopted ? 0 : 1000,
      connectTimeout: 10_000,
      keepalive: keepaliveMs / 1000,
      resubscribe: !adopted, // mqtt.js re-subscribes on reconnect when the broker reports no session
      will: takeover ? takeoverWill(takeover.topic, clientId, takeover.delayS) : undefined,
      properties: protocolVersion === 5
        ? { sessionExpiryInterval: SESSION_EXPIRY_S, receiveMaximum: maxInFlight }
        : undefined,
    };
    const c = mqtt.connect(options.brokerUrl, clientOptions);
    const link: Link = {
      clientId,
      adopted,
      client: c,
      send: holdBackAcks(c, (resume) => gate(link, resume)),
      generation: 0,
      gated: [],
      writeAck: (cmd: AckCmd, messageId: number, gen: number) => {
        // An ack for a delivery from an earlier connection must not be sent: the broker re-sends that
        // message (same packet id) on the new connection, and once acked it may reuse the id for a
        // different message, which a late PUBACK would then acknowledge before it was processed.
        if (gen !== link.generation || !c.connected) return;
        link.send({ cmd, messageId } as Packet);
      },
    };
    links.add(link);
    // QoS 0 and 1 messages reach the application through handleMessage (public API): holding its
    // callback holds the packet loop. (QoS 2 is held at PUBREC, in holdBackAcks.)
    c.handleMessage = (packet: Packet, callback: (err?: Error) => void) => {
      const p = packet as IPublishPacket;
      if (p.qos === 2 || p.topic === takeover?.topic) callback();
      else gate(link, () => callback());
    };
    let everConnected = false;
    let offline = false;
    let lastAlive = 0;

    // 'packetreceive' (public) fires for every packet before mqtt.js handles it — for QoS 2 at
    // PUBLISH time, whereas 'message' would only fire after PUBREL, i.e. after PUBREC was sent.
    c.on("packetreceive", (packet: Packet) => {
      if (packet.cmd !== "publish" || closed) return;
      // A PUBLISH proves the link alive. mqtt.js counts only acks and PINGRESP: when the broker has
      // a backlog for us, its PINGRESP queues behind those messages, and under sustained overload
      // mqtt.js timed out a healthy connection every ~90 s (measured). At most once a second.
      const now = Date.now();
      if (now - lastAlive >= 1000) {
        lastAlive = now;
        c.reschedulePing();
      }
      const p = packet as IPublishPacket;
      const topic = p.topic;
      if (topic === takeover?.topic) {
        // A departure, not an event (also when the shared filter matches it: then acked here).
        if (p.qos === 1) link.send({ cmd: "puback", messageId: p.messageId } as Packet);
        adopt(new TextDecoder().decode(p.payload as Uint8Array));
        return;
      }
      let payload = p.payload as Uint8Array; // a Buffer, i.e. a Uint8Array; not copied
      let oversize: { bytes: number; sha256: string } | undefined;
      if (payload.length > maxPayloadBytes) {
        // Also drop the packet's reference: mqtt.js keeps QoS 2 packets until PUBREL.
        ({ head: payload, oversize } = cutOversize(payload, keepOversizeBytes));
        p.payload = payload as IPublishPacket["payload"];
      }
      const event = new MqttEvent(
        payload,
        topic,
        now,
        release,
        p.qos === 0 ? null : link.writeAck,
        p.qos === 2 ? "pubrec" : "puback",
        p.messageId ?? 0,
        link.generation,
      );
      if (oversize) event.oversize = oversize;
      held.hold(payload.length);
      // One chunk per macrotask: the packets parsed from one socket read (mqtt.js handles them in a
      // chain of nextTicks) reach the pipeline together.
      queue.push(event);
    });

    if (adopted) {
      c.on("connect", (connack: IConnackPacket) => {
        if (connack.sessionPresent) {
          log.info(`mqtt: took over the session of ${clientId}: scoring its queued and new messages`);
        } else {
          // Gone already (expired, or drained and ended by another member): leave no empty session behind.
          log.info(`mqtt: the session of ${clientId} no longer exists: nothing to take over`);
          c.end(false, { properties: { sessionExpiryInterval: 0 } });
        }
      });
      c.on("close", () => {
        link.generation++;
        releaseAllGated(link);
        if (!links.delete(link) || closed) return;
        log.info(`mqtt: let go of the session of ${clientId} (its owner is back, or the link dropped)`);
        c.end(true);
      });
      c.on("error", (err: Error) => {
        if (!closed) log.warn(`mqtt: session of ${clientId}: ${err.message}`);
      });
      return link;
    }

    c.on("connect", (connack: IConnackPacket) => {
      log.debug(
        `mqtt: connected to ${broker} as ${clientId} (MQTT ${
          protocolVersion === 5 ? "5" : "3.1.1"
        }, session ` +
          `${connack.sessionPresent ? "resumed" : "new"})`,
      );
      if (!everConnected) {
        everConnected = true;
        // Subscribe on the first connection even when the session exists (the filter or QoS may
        // have changed); later reconnects re-subscribe through mqtt.js when the session was lost.
        const filters: Record<string, { qos: 0 | 1 | 2; rh?: number }> = {
          [subscription]: { qos, ...(protocolVersion === 5 ? { rh: 1 } : {}) },
        };
        if (takeover) filters[takeover.topic] = { qos: 0, rh: 1 };
        c.subscribe(filters, (err) => {
          if (err) {
            fail(
              new RuntimeError(
                `MQTT broker ${broker} refused subscription '${subscription}': ${err.message}`,
              ),
            );
          } else {
            log.info(
              `mqtt: subscribed to '${subscription}' at QoS ${qos} as ${clientId} ` +
                `(session ${connack.sessionPresent ? "resumed" : "new"})`,
            );
          }
        });
      } else if (offline) {
        log.info(`mqtt: reconnected to ${broker} (session ${connack.sessionPresent ? "resumed" : "new"})`);
      }
      offline = false;
      health.recovered(part);
    });
    c.on("close", () => {
      link.generation++;
      releaseAllGated(link); // the closed connection's packet loop is superseded
    });
    c.on("offline", () => {
      log.debug(`mqtt: offline from ${broker}`);
      if (!closed) {
        offline = true;
        health.waiting(part, everConnected ? "connection lost" : "not connected yet");
      }
    });
    c.on("error", (err: Error) => {
      if (closed) return;
      if (/^Connection refused/.test(err.message) || (err as { code?: unknown }).code === 135) {
        // A CONNACK refusal (bad credentials, not authorised, client id rejected): mqtt.js stops
        // reconnecting, and retrying would not help.
        fail(new RuntimeError(`MQTT broker ${broker} refused the connection: ${err.message}`));
      } else if (fatalTlsReason(err, options.tls) !== undefined) {
        // A certificate problem is the same on every retry: end the run instead of redialling for ever.
        fail(new RuntimeError(`MQTT broker ${broker}: ${fatalTlsReason(err, options.tls)}`));
      } else {
        // ECONNREFUSED, ECONNRESET, keepalive timeout, DNS: transient; mqtt.js reconnects every 1 s.
        health.waiting(part, err.message || String(err));
      }
    });
    return link;
  };

  /** Ends a link gracefully: acks written so far go out ahead of DISCONNECT (flushed, not destroyed). */
  const endLink = (link: Link) =>
    new Promise<void>((resolve) => {
      // With takeover, leave "with Will" (0x04): after the will delay a peer resumes this session and
      // scores what the broker queues for it meanwhile, unless this instance is back before that.
      const disconnect = takeover ? { reasonCode: 0x04 } : {};
      link.client.end(false, disconnect, () => resolve());
    });

  return {
    description,

    async *events(signal: AbortSignal): AsyncIterable<SourceEvent[]> {
      if (primary) throw new Error("MqttSource.events() may only be called once");
      health.onFatal(fail); // e.g. an outage that outlasted --give-up-after
      primary = openLink(options.clientId, false);
      yield* queue.chunks(signal, () => failure ?? (closed ? "closed" : undefined));
    },

    pause() {
      queue.pause();
    },

    resume() {
      queue.resume();
    },

    async close() {
      if (closed) return;
      closed = true;
      queue.wake();
      // Deliveries are ignored now, and a held loop would keep mqtt.js from closing.
      for (const link of links) releaseAllGated(link);
      clearInterval(holdTimer);
      // Un-acked deliveries get no PUBACK: the broker re-sends them in the next session.
      await Promise.all([...links].map(endLink));
    },
  };
}
