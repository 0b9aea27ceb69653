/**
 * kafka:// URL parameters for secured clusters (Confluent Cloud, MSK, Event Hubs, Redpanda Cloud, a
 * SASL_SSL or mTLS listener of one's own):
 *   tls=true                    TLS; the broker's certificate is always verified (ca=PATH, else the
 *                               system's CAs); cert=PATH&key=PATH present a client certificate (mTLS)
 *   sasl=plain|scram-sha-256|scram-sha-512
 *                               SASL authentication as username=NAME, with the password from
 *                               password-file=PATH or $EDGEINFER_KAFKA_PASSWORD (never the URL: argv is
 *                               visible to every user in `ps`)
 * OAUTHBEARER, GSSAPI (Kerberos) and AWS IAM are not offered: each needs a token or ticket provider of its
 * own, which a URL parameter cannot carry.
 */
import { isIP } from "node:net";
import { readEnv, readPasswordFile } from "../config/endpoint.ts";
import { readTlsFiles, type TlsFiles, tlsParamGiven } from "../config/tls.ts";
import { UsageError } from "../errors.ts";

/** The environment variable that carries the SASL password. */
export const KAFKA_PASSWORD_ENV = "EDGEINFER_KAFKA_PASSWORD";

/** The query parameters kafkaSecurity reads; every Kafka endpoint allows them. */
export const SECURITY_PARAMS = ["tls", "ca", "cert", "key", "sasl", "username", "password-file"];

const MECHANISMS = {
  "plain": "PLAIN",
  "scram-sha-256": "SCRAM-SHA-256",
  "scram-sha-512": "SCRAM-SHA-512",
} as const;

export interface KafkaSecurity {
  /** The flag the settings came from, for messages (e.g. "--sink"). */
  flag: string;
  tls?: TlsFiles;
  sasl?: { mechanism: (typeof MECHANISMS)[keyof typeof MECHANISMS]; username: string; password: string };
}

/** Reads tls=, ca=, cert=, key=, sasl=, username=, password-file= of a Kafka endpoint. */
export function kafkaSecurity(
  flag: string,
  q: Map<string, string>,
  env: (name: string) => string | undefined = readEnv,
): KafkaSecurity {
  const security: KafkaSecurity = { flag };
  const tls = q.get("tls");
  if (tls !== undefined && tls !== "true" && tls !== "false") {
    throw new UsageError(`${flag} tls=${tls} must be true or false`);
  }
  if (tls === "true") {
    security.tls = readTlsFiles(flag, q);
  } else {
    const given = tlsParamGiven(q);
    if (given) throw new UsageError(`${flag} ${given}= needs TLS: add tls=true`);
  }

  const sasl = q.get("sasl");
  const username = q.get("username");
  const file = q.get("password-file");
  if (sasl === undefined) {
    const given = username !== undefined ? "username=" : file !== undefined ? "password-file=" : undefined;
    if (given) throw new UsageError(`${flag} ${given} needs sasl=plain|scram-sha-256|scram-sha-512`);
    return security;
  }
  const mechanism = MECHANISMS[sasl.toLowerCase() as keyof typeof MECHANISMS];
  if (mechanism === undefined) {
    throw new UsageError(
      `${flag} sasl=${sasl} is not supported: use plain, scram-sha-256 or scram-sha-512 ` +
        `(OAUTHBEARER, GSSAPI and AWS IAM are not)`,
    );
  }
  if (username === undefined || username === "") {
    throw new UsageError(`${flag} sasl=${sasl} needs username=NAME`);
  }
  const password = file !== undefined ? readPasswordFile(flag, file) : env(KAFKA_PASSWORD_ENV) || undefined;
  if (password === undefined) {
    throw new UsageError(
      `${flag} sasl=${sasl} needs a password: set ${KAFKA_PASSWORD_ENV} or add password-file=PATH`,
    );
  }
  security.sasl = { mechanism, username, password };
  return security;
}

/** The @platformatic/kafka connection options for `security`. */
export function securityClientOptions(security: KafkaSecurity | undefined, brokers: string[]) {
  if (security === undefined) return {};
  const { tls, sasl } = security;
  return {
    ...(tls
      ? {
        tls: { ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: true },
        // SNI, which managed clusters route by; not for IP addresses (TLS forbids an IP there).
        tlsServerName: brokers.every((b) => isIP(b.replace(/:\d+$/, "").replace(/^\[|\]$/g, "")) === 0),
      }
      : {}),
    ...(sasl
      ? { sasl: { mechanism: sasl.mechanism, username: sasl.username, password: sasl.password } }
      : {}),
  };
}

/** Who the broker sees, for authorization messages: e.g. "User:edgeinfer". */
export function principalOf(security: KafkaSecurity | undefined): string {
  if (security?.sasl) return `User:${security.sasl.username}`;
  if (security?.tls?.cert) return `the principal of ${security.flag} cert=${security.tls.certPath}`;
  return "User:ANONYMOUS";
}

/** How a client connects, for descriptions: e.g. " (TLS, SASL SCRAM-SHA-512 as edgeinfer)". */
export function describeSecurity(security: KafkaSecurity | undefined): string {
  const parts: string[] = [];
  if (security?.tls) parts.push(security.tls.cert ? "mTLS" : "TLS");
  if (security?.sasl) parts.push(`SASL ${security.sasl.mechanism} as ${security.sasl.username}`);
  return parts.length === 0 ? "" : ` (${parts.join(", ")})`;
}
