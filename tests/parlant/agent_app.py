"""A Parlant server whose every model call Turnout serves: one agent with one guideline.

Run as ``python -m tests.parlant.agent_app TURNOUT_URL PORT TOOL_PORT AGENT_ID_FILE``; the agent's
id is written to AGENT_ID_FILE once the agent exists, and the server then serves until SIGINT.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import parlant.sdk as p
from turnout_parlant import GenerationSettings, turnout_nlp_service


async def main(turnout_url: str, port: int, tool_port: int, agent_id_file: Path) -> None:
    nlp = turnout_nlp_service(turnout_url, kind="llama", settings=GenerationSettings(default_temperature=0.0))
    async with p.Server(host="127.0.0.1", port=port, tool_service_port=tool_port, nlp_service=nlp) as server:
        agent = await server.create_agent(name="Otto", description="A concise assistant of a travel agency.")
        await agent.create_guideline(
            condition="the customer asks for the capital of a country",
            action="name the capital city in one short sentence",
        )
        agent_id_file.write_text(agent.id)


if __name__ == "__main__":
    url, port, tool_port, out = sys.argv[1:5]
    asyncio.run(main(url, int(port), int(tool_port), Path(out)))
