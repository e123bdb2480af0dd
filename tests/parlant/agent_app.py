"""A Parlant server whose every model call Turnout serves: agents with one guideline each.

Run as ``python -m tests.parlant.agent_app TURNOUT_URL PORT TOOL_PORT AGENT_ID_FILE [AGENTS]``;
the agents' ids are written to AGENT_ID_FILE, one per line, once they all exist, and the server
then serves until SIGINT. AGENTS (default 1, at most 4): the first is the travel agency's
assistant; the others are a bank's, a bookshop's and a telecom's, each with its own description
and guideline, so that their prompts share nothing past Parlant's own text.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import parlant.sdk as p
from turnout_parlant import GenerationSettings, turnout_nlp_service

AGENTS = [
    ("Otto", "A concise assistant of a travel agency.",
     "the customer asks for the capital of a country", "name the capital city in one short sentence"),
    ("Berta", "A careful assistant of a small savings bank.",
     "the customer asks about opening hours", "say the branches open from 9 to 17 on weekdays"),
    ("Ilse", "A friendly assistant of a bookshop in the old town.",
     "the customer asks for a book recommendation", "recommend one classic novel in one sentence"),
    ("Timo", "A patient assistant of a mobile phone provider.",
     "the customer reports a network problem", "ask for the customer's postcode in one sentence"),
]


async def main(turnout_url: str, port: int, tool_port: int, agent_id_file: Path, count: int = 1) -> None:
    nlp = turnout_nlp_service(turnout_url, kind="llama", settings=GenerationSettings(default_temperature=0.0))
    async with p.Server(host="127.0.0.1", port=port, tool_service_port=tool_port, nlp_service=nlp) as server:
        ids = []
        for name, description, condition, action in AGENTS[:count]:
            agent = await server.create_agent(name=name, description=description)
            await agent.create_guideline(condition=condition, action=action)
            ids.append(agent.id)
        agent_id_file.write_text("\n".join(ids))


if __name__ == "__main__":
    url, port, tool_port, out = sys.argv[1:5]
    agents = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    if not 1 <= agents <= len(AGENTS):
        raise SystemExit(f"AGENTS must be between 1 and {len(AGENTS)}")
    asyncio.run(main(url, int(port), int(tool_port), Path(out), agents))
