/**
 * The one logger of the process. Diagnostics go to stderr (synchronously, so nothing is lost at exit) and
 * stdout stays clean for records. Every part of a run gets a Logger handed in; no other module writes to
 * stderr.
 *
 *   text (default): `edgeinfer: [cars] status: …` (`[name] ` only when a process runs several pipelines;
 *                   an ISO timestamp first with --log-timestamps)
 *   json:           `{"ts":"2026-12-01T15:40:46.123Z","level":"info","pipeline":"cars","msg":"status: …"}`
 *
 * Levels: error < warn < info < debug. A disabled level costs one comparison: callers that build an
 * expensive debug message check `enabled("debug")` first. Every line goes through maskUrl, the last line
 * of defence against a password in a URL.
 */
import { maskUrl } from "./config/endpoint.ts";

export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;
export type LogLevel = typeof LOG_LEVELS[number];
export const LOG_FORMATS = ["text", "json"] as const;
export type LogFormat = typeof LOG_FORMATS[number];

/** Structured fields of a line, for machines: keys of a JSON line (a text line's message says it all). */
export type LogFields = Record<string, string | number | boolean | undefined>;

export interface LogSettings {
  format: LogFormat;
  level: LogLevel;
  /** Text lines start with an ISO timestamp (JSON lines always carry `ts`). */
  timestamps: boolean;
}

const DEFAULT_SETTINGS: LogSettings = { format: "text", level: "info", timestamps: false };
const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };
const RESERVED = new Set(["ts", "level", "pipeline", "msg"]);
const encoder = new TextEncoder();

/** Settings shared by a logger and its children, so that configuring the root reaches every one. */
interface Shared {
  settings: LogSettings;
  rank: number;
  write: (line: string) => void;
  /** Logger.messages: `write` gets the bare message, no prefix, fields or newline. */
  bare?: boolean;
}

function writeStderr(line: string): void {
  const bytes = encoder.encode(line);
  let written = 0;
  while (written < bytes.length) written += Deno.stderr.writeSync(bytes.subarray(written));
}

export class Logger {
  readonly #shared: Shared;
  /** The pipeline this logger's lines belong to (with several pipelines in the process). */
  readonly pipeline: string | undefined;
  readonly #prefix: string;

  /** A logger of its own settings; `write` gets whole lines, "\n" included (default: stderr). */
  constructor(
    settings: Partial<LogSettings> = {},
    write: (line: string) => void = writeStderr,
    /** Internal: `child`'s. */
    parent?: { shared: Shared; pipeline: string },
  ) {
    if (parent !== undefined) {
      this.#shared = parent.shared;
      this.pipeline = parent.pipeline;
      this.#prefix = `[${parent.pipeline}] `;
    } else {
      const full = { ...DEFAULT_SETTINGS, ...settings };
      this.#shared = { settings: full, rank: RANK[full.level], write };
      this.pipeline = undefined;
      this.#prefix = "";
    }
  }

  /**
   * A logger handing each message (of every level, masked, without prefix or newline) to `receive`: for
   * tests, and for callers that show lines their own way (bench's progress).
   */
  static messages(receive: (message: string) => void): Logger {
    const logger = new Logger({ level: "debug" }, receive);
    logger.#shared.bare = true;
    return logger;
  }

  /**
   * True when info lines go, as text, to a terminal's stderr: a line rewritten in place (`rewrite`) may be
   * shown instead of plain lines.
   */
  get onTerminal(): boolean {
    const s = this.#shared;
    return s.rank >= 2 && s.settings.format === "text" && !s.bare && s.write === writeStderr &&
      Deno.stderr.isTerminal();
  }

  /** With `onTerminal`: shows `text` as the terminal's last line, rewritten in place ("" clears it). */
  rewrite(text: string): void {
    this.#shared.write(text === "" ? "\r\x1b[K" : `\r${text}\x1b[K`);
  }

  /** This logger's lines with the pipeline's name: `[name] ` in text, a `pipeline` field in JSON. */
  child(pipeline: string): Logger {
    return new Logger({}, this.#shared.write, { shared: this.#shared, pipeline });
  }

  /** Changes the settings of this logger and of every logger derived from it. */
  configure(settings: Partial<LogSettings>): void {
    Object.assign(this.#shared.settings, settings);
    this.#shared.rank = RANK[this.#shared.settings.level];
  }

  get settings(): Readonly<LogSettings> {
    return this.#shared.settings;
  }

  /** True when lines of `level` are written: check it before building an expensive message. */
  enabled(level: LogLevel): boolean {
    return RANK[level] <= this.#shared.rank;
  }

  error(message: string, fields?: LogFields): void {
    this.#line("error", message, fields);
  }

  warn(message: string, fields?: LogFields): void {
    if (this.#shared.rank >= 1) this.#line("warn", message, fields);
  }

  info(message: string, fields?: LogFields): void {
    if (this.#shared.rank >= 2) this.#line("info", message, fields);
  }

  debug(message: string, fields?: LogFields): void {
    if (this.#shared.rank >= 3) this.#line("debug", message, fields);
  }

  #line(level: LogLevel, message: string, fields: LogFields | undefined): void {
    const shared = this.#shared;
    if (shared.bare) {
      shared.write(masked(message));
    } else if (shared.settings.format === "json") {
      // Each string masked on its own: masking the serialised line could cut across its quotes.
      const record: Record<string, unknown> = { ts: new Date().toISOString(), level };
      if (this.pipeline !== undefined) record.pipeline = this.pipeline;
      record.msg = masked(message);
      if (fields) {
        for (const key in fields) {
          const value = fields[key];
          if (value !== undefined && !RESERVED.has(key)) {
            record[key] = typeof value === "string" ? masked(value) : value;
          }
        }
      }
      shared.write(JSON.stringify(record) + "\n");
    } else {
      // The message says it all for people; the fields are for machines reading JSON.
      const ts = shared.settings.timestamps ? `${new Date().toISOString()} ` : "";
      shared.write(`${ts}edgeinfer: ${this.#prefix}${masked(message)}\n`);
    }
  }
}

/** The last line of defence: any scheme://user:password@ left in a text loses its password. */
function masked(text: string): string {
  return text.includes("://") && text.includes("@") ? maskUrl(text) : text;
}

/**
 * The process's root logger: the CLI configures it from --log-format, --log-level, --log-timestamps
 * (`configure`) and hands it
 * (or its children) to every part; parts used as a library without one handed in fall back to it.
 */
export const rootLogger: Logger = new Logger();

/** A logger that writes nothing (tests, library use that wants silence). */
export const silentLogger: Logger = new Logger({ level: "error" }, () => {});

/**
 * @deprecated hand a Logger in instead; kept so that code written against the old API still goes through
 * the logger (an info line of the root logger).
 */
export function logLine(message: string): void {
  rootLogger.info(message);
}
