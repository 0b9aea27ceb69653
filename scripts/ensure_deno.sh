#!/usr/bin/env bash
# Sourced by scripts that need Deno: sets DENO to a deno binary — the one on PATH (e.g. the one
# `npx deno@2.9.6 task …` runs), else .tools/node_modules/.bin/deno, else it installs deno@2.9.6
# from npm into .tools — and runs `deno install` (npm packages into node_modules; lifecycle scripts
# are not run: onnxruntime-node's would try to download GPU libraries, and its npm package already
# ships the CPU ones).
DENO_VERSION=2.9.6

if command -v deno >/dev/null 2>&1; then
  DENO=$(command -v deno)
elif [[ -x .tools/node_modules/.bin/deno ]]; then
  DENO="$PWD/.tools/node_modules/.bin/deno"
else
  command -v npm >/dev/null || {
    echo "error: Deno is not installed and npm is missing to install it (need Node.js/npm, or deno on PATH)" >&2
    exit 1
  }
  echo "installing deno@$DENO_VERSION from npm into .tools" >&2
  # --ignore-scripts: the package's postinstall only swaps the bin entry for the binary; without it,
  # .bin/deno is a small Node.js launcher that finds the binary in @deno/linux-x64-glibc.
  npm install --prefix .tools "deno@$DENO_VERSION" --no-save --ignore-scripts --no-audit --no-fund >&2
  DENO="$PWD/.tools/node_modules/.bin/deno"
fi
deno_version=$("$DENO" --version | head -n 1)
[[ $deno_version == "deno $DENO_VERSION "* ]] || echo "warning: edgeinfer is tested with deno $DENO_VERSION, found: $deno_version" >&2
"$DENO" install --quiet
