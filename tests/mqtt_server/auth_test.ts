import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { bcryptLogin, parseUsersFile } from "../../src/mqtt_server/auth.ts";
import { RefusalLog } from "../../src/mqtt_server/source.ts";
import { UsageError } from "../../src/errors.ts";

const HASH = "$2y$05$" + "a".repeat(53);

Deno.test("parseUsersFile: NAME:bcrypt lines, comments and blank lines skipped", () => {
  const users = parseUsersFile(
    "--source",
    "u",
    `# devices\n\ncar-1:${HASH}\r\ncar-2:${HASH.replace("$2y", "$2b")}\n`,
  );
  assert.deepEqual([...users.keys()], ["car-1", "car-2"]);
});

Deno.test("parseUsersFile: mistakes name the file, the line and the fix", () => {
  assert.throws(() => parseUsersFile("--source", "u", "car-1\n"), (e: Error) => {
    assert.ok(e instanceof UsageError);
    assert.match(e.message, /^--source users=u line 1 must be NAME:BCRYPT-HASH .*htpasswd -nbB/);
    return true;
  });
  assert.throws(
    () => parseUsersFile("--source", "u", "car-1:plaintext\n"),
    /users=u line 1: the password of 'car-1' is not a bcrypt hash/,
  );
  assert.throws(() => parseUsersFile("--source", "u", `a:${HASH}\na:${HASH}`), /line 2: 'a' is listed twice/);
  assert.throws(() => parseUsersFile("--source", "u", "# nobody\n"), /lists no users/);
});

Deno.test("bcryptLogin: the right password gives the identity; a wrong one, an unknown user or none do not", async () => {
  const users = new Map([["car-1", bcrypt.hashSync("s3cret", 4)]]);
  const login = bcryptLogin(users);
  const bytes = (s: string) => new TextEncoder().encode(s);
  assert.equal(await login("car-1", bytes("s3cret")), "car-1");
  assert.equal(await login("car-1", bytes("s3cret")), "car-1"); // remembered
  assert.equal(await login("car-1", bytes("wrong")), undefined);
  assert.equal(await login("car-2", bytes("s3cret")), undefined);
  assert.equal(await login("car-1", undefined), undefined);
  assert.equal(await login(undefined, undefined), undefined);
});

Deno.test("RefusalLog: every refusal counted, one line per device per minute", () => {
  const lines: string[] = [];
  let now = 0;
  const log = new RefusalLog((l) => lines.push(l), () => now);
  log.refuse("device 'a'", "x");
  log.refuse("device 'a'", "x");
  log.refuse("device 'b'", "y");
  now = 30_000;
  log.refuse("device 'a'", "x");
  assert.equal(log.total, 4);
  assert.deepEqual(lines, ["mqtt-server: refused device 'a': x", "mqtt-server: refused device 'b': y"]);
  now = 61_000;
  log.refuse("device 'a'", "x");
  assert.equal(lines.at(-1), "mqtt-server: refused device 'a': x (and 2 more refusals in the last minute)");
});
