"""An agent written with the OpenAI Agents SDK (PyPI `openai-agents`), trained as it is: the SDK's Agent and Runner on
the client raygrpo hands each session (the SDK's OpenAIChatCompletionsModel takes any AsyncOpenAI). Only `run` is
raygrpo's convention; the agent itself is the SDK's. Its tracing exporter is off: it would post to OpenAI.

    raygrpo train --config job.yaml --local rollout.agent=openai_agents_run.py:run
"""
import re

from agents import Agent, OpenAIChatCompletionsModel, RunConfig, Runner

INSTRUCTIONS = "Solve the problem step by step. End with the final answer as: #### <number>"


async def run(client, row, model="policy", max_turns=2, **_):
    solver = Agent(name="solver", instructions=INSTRUCTIONS,
                   model=OpenAIChatCompletionsModel(model=model, openai_client=client))
    result = await Runner.run(solver, row["question"], max_turns=max_turns,
                              run_config=RunConfig(tracing_disabled=True))
    found = re.search(r"####\s*(-?[\d,.]+)", str(result.final_output))
    return {"correct": float(found is not None and found.group(1).replace(",", "").rstrip(".") == row["answer"]),
            "format": 0.1 * (found is not None)}
