/** The mqtt-server:// URL's parameters, read into the MQTT server source options. */
import type { SourceLimits } from "../connectors.ts";
import type { Endpoint } from "../config/endpoint.ts";
import { oneOf, readQuery } from "../config/query.ts";
import { readTlsFiles, tlsParamGiven } from "../config/tls.ts";
import { UsageError } from "../errors.ts";
import type { Source } from "../pipeline/types.ts";
import type { DevicePublisher } from "../alerts/channels.ts";
import { bcryptLogin, readUsersFile } from "./auth.ts";
import { createMqttServerSource } from "./source.ts";
import { filterProblem, IDENTITY_PLACEHOLDER } from "./topics.ts";

type MqttServerEndpoint = Extract<Endpoint, { kind: "mqtt-server" }>;

export function mqttServerSource(
  flag: string,
  endpoint: MqttServerEndpoint,
  limits: SourceLimits,
): Source & DevicePublisher {
  const q = readQuery(flag, endpoint.params, ["users", "acl", "allow-anonymous", "cert", "key", "ca"]);
  const problem = filterProblem(endpoint.topic);
  if (problem) throw new UsageError(`${flag} topic filter '${endpoint.topic}': ${problem}`);
  const given = tlsParamGiven(q);
  if (!endpoint.tls && given) {
    throw new UsageError(`${flag} ${given}= needs TLS: use mqtts-server://host:port/... (default port 8883)`);
  }
  let tlsFiles: { cert: string; key: string; ca?: string } | undefined;
  if (endpoint.tls) {
    const files = readTlsFiles(flag, q);
    if (files.cert === undefined || files.key === undefined) {
      throw new UsageError(`${flag} mqtts-server:// needs the server's certificate: cert=PATH&key=PATH`);
    }
    tlsFiles = { cert: files.cert, key: files.key, ca: files.ca };
  }
  const usersPath = q.get("users");
  const anonymous =
    oneOf(flag, "allow-anonymous", q.get("allow-anonymous"), ["true", "false"], "false") === "true";
  if (usersPath !== undefined && anonymous) {
    throw new UsageError(`${flag} has users= and allow-anonymous=true: choose one`);
  }
  if (usersPath === undefined && !anonymous && tlsFiles?.ca === undefined) {
    throw new UsageError(
      `${flag} would let any device publish: add users=PATH (NAME:BCRYPT-HASH lines, from htpasswd -nbB), ` +
        `ca=PATH on mqtts-server:// (client certificates), or allow-anonymous=true`,
    );
  }
  const acl = q.get("acl");
  if (acl !== undefined) {
    if (!acl.includes(IDENTITY_PLACEHOLDER)) {
      throw new UsageError(
        `${flag} acl=${acl} must contain ${IDENTITY_PLACEHOLDER} (the device's login name), e.g. acl=cars/{identity}/#`,
      );
    }
    const aclProblem = filterProblem(acl);
    if (aclProblem) throw new UsageError(`${flag} acl=${acl}: ${aclProblem}`);
  }
  return createMqttServerSource({
    flag,
    host: endpoint.host,
    port: endpoint.port,
    topicFilter: endpoint.topic,
    login: usersPath === undefined ? undefined : bcryptLogin(readUsersFile(flag, usersPath)),
    aclTemplate: acl,
    subscribable: limits.deviceSubscriptions,
    tls: tlsFiles,
    maxHeldEvents: limits.maxHeldEvents,
    maxHeldBytes: limits.maxHeldBytes,
    maxPayloadBytes: limits.maxPayloadBytes,
    keepOversizeBytes: limits.keepOversizeBytes,
    health: limits.health,
    logger: limits.logger,
  });
}
