import onnxProto from "onnx-proto";

/** A tensor input or output of the graph, as the ONNX file declares it. */
export interface TensorInfo {
  name: string;
  /** ONNX element type name, e.g. "float32". */
  type: string;
  /** Dimensions: a number, a symbolic name (e.g. "N"), or null when unknown. */
  shape: (number | string | null)[];
}

/** What an ONNX file says about itself, read without creating an inference session. */
export interface OnnxFileInfo {
  irVersion: number;
  producer: string;
  opsets: { domain: string; version: number }[];
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  metadata: Record<string, string>;
}

// onnx.TensorProto.DataType, as names that match onnxruntime's Tensor types.
const ELEMENT_TYPES: Record<number, string> = {
  1: "float32",
  2: "uint8",
  3: "int8",
  4: "uint16",
  5: "int16",
  6: "int32",
  7: "int64",
  8: "string",
  9: "bool",
  10: "float16",
  11: "float64",
  12: "uint32",
  13: "uint64",
  16: "bfloat16",
};

// Minimal views of the protobufjs-decoded messages we read (onnx-proto's own typings pull in
// protobufjs's Long type, which we do not need).
type Int64 = number | { toNumber(): number };
interface ValueInfo {
  name: string;
  type?: { tensorType?: { elemType: number; shape?: { dim: { dimValue?: Int64; dimParam?: string }[] } } };
}
interface DecodedModel {
  irVersion: Int64;
  producerName: string;
  opsetImport: { domain: string; version: Int64 }[];
  metadataProps: { key: string; value: string }[];
  graph?: { input: ValueInfo[]; output: ValueInfo[]; initializer: { name: string }[] };
}

const toNumber = (v: Int64 | undefined | null): number =>
  v === undefined || v === null ? 0 : typeof v === "number" ? v : v.toNumber();

/** Decodes the ModelProto header of an ONNX file. Throws when the bytes are not an ONNX model. */
export function readOnnxInfo(bytes: Uint8Array): OnnxFileInfo {
  const model = (onnxProto as unknown as { onnx: { ModelProto: { decode(b: Uint8Array): DecodedModel } } })
    .onnx.ModelProto.decode(bytes);
  if (!model.graph) throw new Error("the file holds no ONNX graph");
  const initializers = new Set(model.graph.initializer.map((t) => t.name));
  const tensor = (v: ValueInfo): TensorInfo => ({
    name: v.name,
    type: ELEMENT_TYPES[v.type?.tensorType?.elemType ?? -1] ?? "unknown",
    shape: (v.type?.tensorType?.shape?.dim ?? []).map((d) =>
      d.dimParam ? d.dimParam : d.dimValue !== undefined && d.dimValue !== null ? toNumber(d.dimValue) : null
    ),
  });
  return {
    irVersion: toNumber(model.irVersion),
    producer: model.producerName ?? "",
    opsets: model.opsetImport.map((o) => ({ domain: o.domain || "ai.onnx", version: toNumber(o.version) })),
    // Older exporters list initializers among the inputs; they are weights, not inputs.
    inputs: model.graph.input.filter((v) => !initializers.has(v.name)).map(tensor),
    outputs: model.graph.output.map(tensor),
    metadata: Object.fromEntries(model.metadataProps.map((p) => [p.key, p.value])),
  };
}
