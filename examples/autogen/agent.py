"""An AutoGen agent whose SQL goes through Gatehouse.

`report_bot` is a real AutoGen AssistantAgent with one tool, `run_sql`. The
tool connects through the gateway with the agent's own identity and
short-lived credential (GATEHOUSE_DSN), never the database's credential,
and sets application_name to the agent's name so operators see who is who
(`gatehouse sessions`).

Offline (the default), the model is autogen-ext's ReplayChatCompletionClient
playing a scripted conversation: the agent reads orders, reads customers
(masked), asks for SSNs (denied), deletes one order (held until a human
approves) and then deletes in bulk (held, and denied by the approver). To
use a real model, replace `model_client` (see README.md).

Each tool result is printed as one JSON line (for the CI test).
"""

import asyncio
import json
import os
import sys

import psycopg
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import ToolCallExecutionEvent
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, ModelFamily, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient

AGENT = os.environ.get("AGENT_NAME", "report_bot")
DSN = os.environ["GATEHOUSE_DSN"]

# Refusals that a retry will not change (docs/agents.md): told to the
# model as answers instead of raised, so it can explain or change course.
REFUSALS = {
    "gatehouse_policy_denied",
    "gatehouse_approval_denied",
    "gatehouse_approval_expired",
    "gatehouse_identity_blocked",
}


async def run_sql(sql: str) -> str:
    """Run one SQL statement on the shop database and return its rows as JSON."""
    notices = []
    # One connection per call: a statement held for approval keeps its
    # connection busy until a human decides, and must not block the others.
    async with await psycopg.AsyncConnection.connect(
        DSN, application_name=AGENT, autocommit=True
    ) as conn:
        conn.add_notice_handler(
            lambda n: notices.append((n.source_function, n.message_primary))
        )
        try:
            cur = await conn.execute(sql)
            rows = await cur.fetchall() if cur.description else []
        except psycopg.Error as e:
            kind = e.diag.source_function or ""
            if kind in REFUSALS:
                return json.dumps({"refused": kind, "message": e.diag.message_primary})
            raise
        answer = {"rows": [[str(v) for v in r] for r in rows], "status": cur.statusmessage}
        masked = [m for (kind, m) in notices if kind == "gatehouse_masked"]
        if masked:
            answer["masked"] = masked[0]
        return json.dumps(answer)


def tool_call(n: int, sql: str) -> CreateResult:
    """One scripted model turn: a call of run_sql."""
    return CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id=f"call_{n}", name="run_sql", arguments=json.dumps({"sql": sql}))],
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
        cached=False,
    )


SCRIPT = [
    "SELECT id, customer, total FROM orders ORDER BY id LIMIT 3",
    "SELECT id, name, email FROM customers ORDER BY id LIMIT 3",
    "SELECT name, ssn FROM customers WHERE id = 1",
    "DELETE FROM orders WHERE id = 3",
    "DELETE FROM orders WHERE total < 50",
]


async def main() -> int:
    model_client = ReplayChatCompletionClient(
        [tool_call(i, sql) for i, sql in enumerate(SCRIPT)]
        + ["Orders read, customers read (masked); SSNs refused; order 3 deleted. TERMINATE"],
        model_info={
            "vision": False,
            "function_calling": True,
            "json_output": False,
            "family": ModelFamily.UNKNOWN,
            "structured_output": False,
        },
    )
    agent = AssistantAgent(
        AGENT,
        model_client=model_client,
        tools=[run_sql],
        system_message="You answer questions about the shop database with run_sql.",
        max_tool_iterations=len(SCRIPT) + 1,
    )
    result = await agent.run(task="Report on recent orders and tidy up order 3.")
    for message in result.messages:
        if isinstance(message, ToolCallExecutionEvent):
            for r in message.content:
                print(
                    json.dumps({"call": r.call_id, "error": r.is_error, "result": r.content}),
                    flush=True,
                )
    await model_client.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
