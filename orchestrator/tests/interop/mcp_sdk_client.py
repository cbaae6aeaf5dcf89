"""A client on the official MCP Python SDK (`mcp` on PyPI) against
`triage serve --http`: it lists the tools, calls `ask` and `run_workflow`
over streamable HTTP, reads the run's resource, and prints what it saw as
one JSON object for orchestrator/tests/interop.rs to check.

Usage: python mcp_sdk_client.py URL
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

SPEC = """
name: sdk-check
version: "1"
inputs:
  code: { type: string }
steps:
  - id: detect
    agent: code
    tool: detect_language
    with: { code: "{{ inputs.code }}" }
  - id: metrics
    agent: code
    tool: code_metrics
    with: { code: "{{ inputs.code }}", language: "{{ steps.detect.output.language }}" }
outputs:
  language: "{{ steps.detect.output.language }}"
  functions: "{{ steps.metrics.output.functions }}"
"""

CODE = "import os\n\ndef wipe(path):\n    os.system('rm -rf ' + path)\n    return None\n"


async def main(url: str) -> None:
    progress = []

    async def on_progress(value, total, message):
        progress.append(value)

    async with streamable_http_client(url) as (read, write, *_):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            ask = await session.call_tool(
                "ask",
                {"task": "What does the Python expression len([1, 2, 3]) return?", "max_tokens": 16, "escalate": False},
                progress_callback=on_progress,
            )
            run = await session.call_tool(
                "run_workflow",
                {"spec": SPEC, "inputs": {"code": CODE}},
                progress_callback=on_progress,
            )
            run_out = run.structured_content or {}
            resource = await session.read_resource(run_out.get("resource", "triage://runs/missing"))
            view = json.loads(resource.contents[0].text)
            print(
                json.dumps(
                    {
                        "server": init.server_info.name,
                        "protocol": init.protocol_version,
                        "tools": sorted(t.name for t in tools.tools),
                        "ask_error": ask.is_error,
                        "ask": ask.structured_content,
                        "run_error": run.is_error,
                        "run": run_out,
                        "run_resource_status": view.get("status"),
                        "run_resource_steps": [s["step"] for s in view.get("steps", [])],
                        "progress_notifications": len(progress),
                    }
                )
            )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
