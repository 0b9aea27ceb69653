#!/usr/bin/env bash
# [EDGEINFER_HEAP_MB=N] deno task compile [OUTPUT]: builds one edgeinfer executable (default dist/edgeinfer) with
# models/ embedded (--include models) and native addons usable (--self-extracting: onnxruntime's
# .node library and libonnxruntime.so must exist on disk to be loaded, so the binary unpacks its
# embedded files on first run).
#
# deno compile needs the 'denort' base binary of the same Deno version. Deno downloads it from
# dl.deno.land, which our machines cannot reach: point DENORT_BIN at a local copy (from
# denort-x86_64-unknown-linux-gnu.zip of the matching release).
set -euo pipefail
cd "$(dirname "$0")/.."

deno="$(command -v deno || true)"
[ -n "$deno" ] || deno=.tools/node_modules/.bin/deno
if [ ! -x "$deno" ]; then
  echo "compile: deno not found; run through 'npx --yes deno@2.9.6 task compile'" >&2
  exit 1
fi
version="$("$deno" --version | head -n 1 | awk '{print $2}')"
out="${1:-dist/edgeinfer}"

if [ -n "${DENORT_BIN:-}" ]; then
  if [ ! -x "$DENORT_BIN" ]; then
    echo "compile: DENORT_BIN='$DENORT_BIN' is not an executable file; it must be the denort binary of Deno $version" >&2
    exit 1
  fi
  echo "compile: using the denort base binary at $DENORT_BIN (it must be Deno $version's)" >&2
else
  echo "compile: no DENORT_BIN set: deno will try to download denort $version from dl.deno.land." >&2
  echo "compile: where that is unreachable, get denort-x86_64-unknown-linux-gnu.zip of v$version, unzip it" >&2
  echo "compile: and run again with DENORT_BIN=/path/to/denort." >&2
fi

"$deno" install --quiet
mkdir -p "$(dirname "$out")"
# The V8 heap bound is part of the binary (as in the edgeinfer task): peak RSS stays under ~200 MB at
# full load with one pipeline (README, Memory). EDGEINFER_HEAP_MB sets another bound, e.g. for a gateway
# that runs several pipelines in one process (each pipeline's --max-held-bytes adds up in that heap).
heap_mb="${EDGEINFER_HEAP_MB:-192}"
if ! [[ "$heap_mb" =~ ^[1-9][0-9]*$ ]]; then
  echo "compile: EDGEINFER_HEAP_MB='$heap_mb' must be a whole number of MiB (default 192)" >&2
  exit 1
fi
"$deno" compile \
  --allow-read --allow-write --allow-net --allow-env --allow-ffi --allow-sys --allow-run \
  --v8-flags=--max-old-space-size="$heap_mb",--max-semi-space-size=8 \
  --include models \
  --self-extracting \
  --output "$out" \
  main.ts
echo "compile: built $out ($(du -h "$out" | cut -f1)); try: $out inspect models/car-anomaly.onnx" >&2
