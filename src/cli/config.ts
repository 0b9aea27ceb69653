/** `edgeinfer config check FILE`: validates a config file and prints the effective settings, secrets masked. */
import { rootLogger } from "../log.ts";
import { parseEndpoint } from "../config/endpoint.ts";
import { describeConfig, loadConfig, type RunSettings, settingsToArgv } from "../config/file.ts";
import { UsageError } from "../errors.ts";
import { parseFlags } from "./args.ts";
import { checkedPipelines, RUN_FLAGS } from "./run.ts";
import { pipelineSettings, processSettings } from "./run_settings.ts";

export const CONFIG_HELP = `Usage: edgeinfer config check FILE

Checks a config file for 'edgeinfer run --config FILE' and prints the settings it gives, after \${VAR}
interpolation, with passwords masked. Exit code 0 when it is valid, 2 (with the key and the fix) when not.

A config file is YAML (or JSON) whose keys are run's flags without the dashes, e.g.

  model: models/car-anomaly.onnx
  source: mqtt://127.0.0.1:1883/cars/+/sensors?qos=1
  sink: kafka://\${KAFKA:-127.0.0.1:9092}/car-predictions
  key-field: car
  buffer: /var/lib/edgeinfer/buffer

Several pipelines in one process: 'pipelines:' maps names to settings, the top level's keys being their
defaults; the effective settings of each pipeline are printed.

Flags given on the command line override the file's keys. See scripts/edge.example.yaml and
scripts/edge.pipelines.example.yaml.`;

export function configCommand(argv: string[]): Promise<void> {
  const { positionals } = parseFlags("config", argv, {}, true);
  const [action, file, ...extra] = positionals;
  if (action !== "check" || file === undefined || extra.length > 0) {
    throw new UsageError("usage: edgeinfer config check FILE (see 'edgeinfer config --help')");
  }
  const config = loadConfig(file, RUN_FLAGS);
  if (config.pipelines === undefined) {
    checkPipeline(file, config.settings);
  } else {
    processSettings(parseFlags("run", settingsToArgv(config.settings), RUN_FLAGS).values);
    checkedPipelines(file, config.pipelines);
  }
  console.log(describeConfig(config));
  rootLogger.info(`${file}: valid`);
  return Promise.resolve();
}

/** The same flag checks as run (types, unknown flags, values), and the URLs' syntax. */
function checkPipeline(file: string, settings: RunSettings): void {
  const { values } = parseFlags("run", settingsToArgv(settings), RUN_FLAGS);
  for (const flag of ["source", "sink", "dlq"] as const) {
    const url = values[flag];
    if (url !== undefined && url !== "-") parseEndpoint(`${file}: ${flag}`, url);
  }
  if (values.model === undefined) throw new UsageError(`${file}: model: missing (the ONNX model's path)`);
  if (values.source === undefined) throw new UsageError(`${file}: source: missing (where events come from)`);
  pipelineSettings(values);
  processSettings(values);
}
