/**
 * TLS settings shared by every endpoint (mqtts:// and kafka://…?tls=true): `ca=PATH` (the CA that signed
 * the broker's certificate; the certificate is always verified, against the system's CAs without ca=),
 * `cert=PATH` and `key=PATH` (a client certificate, for brokers that require one). The files are read and
 * checked when the URL is read, so an unreadable or mismatched file stops the run before it starts; the
 * TLS failures no retry can heal are named by fatalTlsReason.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { UsageError } from "../errors.ts";

/** PEM contents, and where they came from (for messages). */
export interface TlsFiles {
  ca?: string;
  caPath?: string;
  cert?: string;
  certPath?: string;
  key?: string;
}

/** The query parameters readTlsFiles reads. */
export const TLS_PARAMS = ["ca", "cert", "key"] as const;

/** The first of ca=, cert=, key= present in `q`, if any (for "needs TLS" messages). */
export function tlsParamGiven(q: Map<string, string>): string | undefined {
  return TLS_PARAMS.find((name) => q.get(name) !== undefined);
}

/** Reads and checks ca=, cert= and key= of an endpoint that uses TLS; `flag` names it in messages. */
export function readTlsFiles(flag: string, q: Map<string, string>): TlsFiles {
  const caPath = q.get("ca");
  const certPath = q.get("cert");
  const keyPath = q.get("key");
  if ((certPath === undefined) !== (keyPath === undefined)) {
    throw new UsageError(
      `${flag} ${certPath === undefined ? "key=" : "cert="} needs ${
        certPath === undefined ? "cert=" : "key="
      } too: a client certificate is the pair cert=PATH&key=PATH`,
    );
  }
  const cert = readPem(flag, "cert", certPath);
  const key = readPem(flag, "key", keyPath);
  if (cert !== undefined && key !== undefined) checkClientCertificate(flag, certPath!, cert, keyPath!, key);
  return { ca: readPem(flag, "ca", caPath), caPath, cert, certPath, key };
}

/**
 * A TLS failure no retry can heal (wrong CA, expired or mismatched certificate, a client certificate the
 * broker refuses): one line naming the cause, or undefined for a transient error.
 */
export function fatalTlsReason(
  err: Error,
  tls: TlsFiles | undefined,
  flag = "--source",
): string | undefined {
  const code = String((err as { code?: unknown }).code ?? "");
  const text = `${code} ${err.message}`;
  const ca = tls?.caPath ? `${flag} ca=${tls.caPath}` : `the system's CAs (no ${flag} ca=)`;
  if (
    /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT|SELF_SIGNED_CERT|unknown[ _]?issuer|TLS not authorized|certificate verify failed/i
      .test(text)
  ) {
    return `TLS: the broker's certificate is not signed by ${ca}`;
  }
  if (/CERT_HAS_EXPIRED|CERT_NOT_YET_VALID|certificate has expired|not yet valid/i.test(text)) {
    return `TLS: the broker's certificate has expired or is not valid yet (${err.message})`;
  }
  if (/ERR_TLS_CERT_ALTNAME_INVALID|not valid for name|Hostname\/IP does not match/i.test(text)) {
    return `TLS: the broker's certificate does not name this host (${err.message})`;
  }
  if (
    /ALERT_(CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|CERTIFICATE_EXPIRED|HANDSHAKE_FAILURE)|CertificateRequired|BadCertificate/i
      .test(text)
  ) {
    return tls?.cert
      ? `TLS: the broker refused the client certificate ${flag} cert=${tls.certPath} (${err.message})`
      : `TLS: the broker requires a client certificate: add ${flag} cert=PATH&key=PATH (${err.message})`;
  }
  return undefined;
}

/**
 * A client certificate that cannot work — unparsable, expired, or not the key's pair — is reported now:
 * the TLS stack would only say "unsupported protocol" or the broker would close the connection.
 */
function checkClientCertificate(flag: string, certPath: string, cert: string, keyPath: string, key: string) {
  let x509: X509Certificate;
  let privateKey: KeyObject;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new UsageError(`${flag} cert=${certPath} is not a PEM certificate (${(err as Error).message})`);
  }
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new UsageError(
      `${flag} key=${keyPath} is not an unencrypted PEM private key (${(err as Error).message})`,
    );
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new UsageError(`${flag} key=${keyPath} is not the private key of cert=${certPath}`);
  }
  const now = Date.now();
  if (now > Date.parse(x509.validTo) || now < Date.parse(x509.validFrom)) {
    throw new UsageError(
      `${flag} cert=${certPath} is valid only from ${x509.validFrom} to ${x509.validTo}: the broker would refuse it`,
    );
  }
}

function readPem(flag: string, name: string, path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  if (path === "") throw new UsageError(`${flag} ${name}= needs a path to a PEM file`);
  let content: string;
  try {
    content = Deno.readTextFileSync(path);
  } catch (err) {
    const reason = err instanceof Deno.errors.NotFound ? "no such file" : (err as Error).message;
    throw new UsageError(`${flag} ${name}=${path} cannot be read (${reason})`);
  }
  if (!content.includes("-----BEGIN ")) {
    throw new UsageError(`${flag} ${name}=${path} is not a PEM file (no -----BEGIN line)`);
  }
  return content;
}
