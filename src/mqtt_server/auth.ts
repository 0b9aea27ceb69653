/**
 * Device logins of the MQTT server source: a users file of `name:bcrypt-hash` lines (the format of
 * `htpasswd -nbB name password`), checked with bcryptjs.
 */
import bcrypt from "bcryptjs";
import { createHash } from "node:crypto";
import { UsageError } from "../errors.ts";

/** Parses a users file: `name:hash` per line, `#` comments and blank lines ignored. */
export function parseUsersFile(flag: string, path: string, text: string): Map<string, string> {
  const users = new Map<string, string>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "" || line.startsWith("#")) continue;
    const where = `${flag} users=${path} line ${i + 1}`;
    const colon = line.indexOf(":");
    if (colon <= 0) {
      throw new UsageError(`${where} must be NAME:BCRYPT-HASH (e.g. from htpasswd -nbB NAME PASSWORD)`);
    }
    const name = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (!/^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) {
      throw new UsageError(
        `${where}: the password of '${name}' is not a bcrypt hash ($2y$…); make one with htpasswd -nbB NAME PASSWORD`,
      );
    }
    if (users.has(name)) throw new UsageError(`${where}: '${name}' is listed twice`);
    users.set(name, hash);
  }
  if (users.size === 0) throw new UsageError(`${flag} users=${path} lists no users`);
  return users;
}

/** Reads and parses the users file; a missing or unreadable file is a UsageError naming the path. */
export function readUsersFile(flag: string, path: string): Map<string, string> {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    const reason = err instanceof Deno.errors.NotFound ? "no such file" : (err as Error).message;
    throw new UsageError(`${flag} users=${path} cannot be read (${reason})`);
  }
  return parseUsersFile(flag, path, text);
}

/** A hash of the same cost as the users', checked for an unknown name so that it takes as long as a known one. */
const UNKNOWN_USER_HASH = "$2b$10$w4zs2YqgBS.OsS5tYoTPM.DZ8sCaufVL5FMCbBcx3LISi.d4T5lKe";

/**
 * Checks a login against `users`: resolves to the user name (the device's identity) or undefined.
 * bcrypt costs ~100 ms of CPU per check, so a fleet reconnecting at once would queue for minutes: a
 * successful login is remembered (as the SHA-256 of name and password, never the password) and the
 * next login of that device with the same password is checked against that instead.
 */
export function bcryptLogin(
  users: Map<string, string>,
): (username: string | undefined, password: Uint8Array | undefined) => Promise<string | undefined> {
  const verified = new Map<string, string>();
  const digest = (name: string, password: string) =>
    createHash("sha256").update(name).update("\u0000").update(password).digest("hex");
  return async (username, passwordBytes) => {
    if (username === undefined || passwordBytes === undefined) return undefined;
    const password = new TextDecoder().decode(passwordBytes);
    const hash = users.get(username);
    if (hash !== undefined && verified.get(username) === digest(username, password)) return username;
    const ok = await bcrypt.compare(password, hash ?? UNKNOWN_USER_HASH);
    if (!ok || hash === undefined) return undefined;
    verified.set(username, digest(username, password));
    return username;
  };
}
