/** Which TLS errors end a run (fatalTlsReason) and which are retried as a lost link. */
import assert from "node:assert/strict";
import { fatalTlsReason } from "../../src/config/tls.ts";
import { parseEndpoint } from "../../src/config/endpoint.ts";

function tlsError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

const withCa = { ca: "PEM", caPath: "/etc/edge/ca.pem" };

Deno.test("fatalTlsReason: certificate problems are fatal, each with its own cause", () => {
  assert.equal(
    fatalTlsReason(
      tlsError("SELF_SIGNED_CERT_IN_CHAIN", "self-signed certificate in certificate chain"),
      withCa,
    ),
    "TLS: the broker's certificate is not signed by --source ca=/etc/edge/ca.pem",
  );
  assert.match(
    fatalTlsReason(
      tlsError("UNABLE_TO_VERIFY_LEAF_SIGNATURE", "unable to verify the first certificate"),
      undefined,
    )!,
    /not signed by the system's CAs \(no --source ca=\)/,
  );
  assert.match(
    fatalTlsReason(tlsError("CERT_HAS_EXPIRED", "certificate has expired"), withCa)!,
    /has expired or is not valid yet/,
  );
  assert.match(
    fatalTlsReason(
      tlsError("ERR_TLS_CERT_ALTNAME_INVALID", "Hostname/IP does not match certificate's altnames"),
      withCa,
    )!,
    /does not name this host/,
  );
  assert.match(
    fatalTlsReason(
      tlsError("ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED", "received fatal alert: CertificateRequired"),
      withCa,
    )!,
    /requires a client certificate: add --source cert=PATH&key=PATH/,
  );
  assert.match(
    fatalTlsReason(tlsError("ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE", "bad certificate"), {
      ...withCa,
      cert: "PEM",
      certPath: "/etc/edge/client.pem",
    })!,
    /refused the client certificate --source cert=\/etc\/edge\/client.pem/,
  );
});

Deno.test("fatalTlsReason: a lost or refused link stays transient", () => {
  for (
    const [code, message] of [["ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:8883"], [
      "ECONNRESET",
      "read ECONNRESET",
    ], [
      "",
      "Keepalive timeout",
    ]]
  ) {
    assert.equal(fatalTlsReason(tlsError(code, message), withCa), undefined, message);
  }
});

Deno.test("mqtts:// URLs keep their scheme, default to port 8883, and carry ca=/cert=/key=", () => {
  const e = parseEndpoint("--source", "mqtts://broker.local/cars/#?ca=/x/ca.pem&cert=/x/c.pem&key=/x/k.pem");
  assert.equal(e.kind, "mqtt");
  if (e.kind !== "mqtt") return;
  assert.equal(e.brokerUrl, "mqtts://broker.local:8883");
  assert.equal(e.topic, "cars/#");
  assert.equal(e.params.get("ca"), "/x/ca.pem");
  assert.equal((parseEndpoint("--source", "mqtt://h/t") as { brokerUrl: string }).brokerUrl, "mqtt://h:1883");
});
