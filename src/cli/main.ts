import { UsageError } from "../errors.ts";

export const VERSION = "0.1.0";

interface Command {
  summary: string;
  /** Loaded on use, so `inspect` does not pay for loading the Kafka and MQTT clients. */
  load(): Promise<{ help: string; run(argv: string[]): Promise<void> }>;
}

const COMMANDS: Record<string, Command> = {
  run: {
    summary: "score a stream of events with an ONNX model, in batches",
    load: async () => {
      const m = await import("./run.ts");
      return { help: m.RUN_HELP, run: m.runCommand };
    },
  },
  inspect: {
    summary: "show a model's inputs, outputs and metadata",
    load: async () => {
      const m = await import("./inspect.ts");
      return { help: m.INSPECT_HELP, run: m.inspectCommand };
    },
  },
  simulate: {
    summary: "publish a simulated connected-car fleet",
    load: async () => {
      const m = await import("./simulate.ts");
      return { help: m.SIMULATE_HELP, run: m.simulateCommand };
    },
  },
  config: {
    summary: "check a config file for run --config, and print its settings",
    load: async () => {
      const m = await import("./config.ts");
      return { help: m.CONFIG_HELP, run: m.configCommand };
    },
  },
  probe: {
    summary: "ask a running edgeinfer (--http) whether it is alive or ready, exit 0/1",
    load: async () => {
      const m = await import("./probe.ts");
      return { help: m.PROBE_HELP, run: m.probeCommand };
    },
  },
  model: {
    summary: "publish a model to a Kafka topic for run --model-source",
    load: async () => {
      const m = await import("./model.ts");
      return { help: m.MODEL_HELP, run: m.modelCommand };
    },
  },
  bench: {
    summary: "measure a model's rows/s and latency per batch size, or a source → sink run",
    load: async () => {
      const m = await import("./bench.ts");
      return { help: m.BENCH_HELP, run: m.benchCommand };
    },
  },
};

export const MAIN_HELP = `edgeinfer ${VERSION}: batched ONNX inference on MQTT and Kafka streams at the edge

Usage: edgeinfer <command> [options]

Commands
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)}${c.summary}`).join("\n")}

Run 'edgeinfer <command> --help' for a command's options and examples.

Examples
  edgeinfer inspect models/car-anomaly.onnx
  edgeinfer bench --model models/car-anomaly.onnx
  edgeinfer run --model models/car-anomaly.onnx --source 'mqtt://127.0.0.1:1883/cars/+/sensors' \\
    --key-field car --sink kafka://127.0.0.1:9092/car-predictions
`;

/** Runs the CLI; returns when the command is done. Throws UsageError for user mistakes. */
export async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    const topic = name === "help" ? rest[0] : undefined;
    if (topic !== undefined && COMMANDS[topic]) console.log((await COMMANDS[topic].load()).help);
    else console.log(MAIN_HELP);
    return;
  }
  if (name === "--version" || name === "-V") {
    console.log(`edgeinfer ${VERSION}`);
    return;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    throw new UsageError(
      `unknown command '${name}'; commands: ${Object.keys(COMMANDS).join(", ")} (see 'edgeinfer --help')`,
    );
  }
  const loaded = await command.load();
  if (rest.includes("--help") || rest.includes("-h")) {
    console.log(loaded.help);
    return;
  }
  await loaded.run(rest);
}
