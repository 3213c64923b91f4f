"""A human approver's stand-in, as a separate process.

It watches the gateway's pending approval requests through the admin API
with an approver's token and approves a delete of a single order
(`DELETE FROM orders WHERE id = N`), denying anything else. A person does
the same with `gatehouse approvals`, `gatehouse approve N` and
`gatehouse deny N --reason TEXT`, or from a webhook (docs/webhooks.md).

Environment: GATEHOUSE_ADMIN (default http://127.0.0.1:6433),
GATEHOUSE_TOKEN_FILE (an approver operator's token; default
operator.token), DECISIONS (stop after that many; default 2), TIMEOUT
(seconds; default 60). Exits 0 once it made DECISIONS decisions.
"""

import json
import os
import re
import sys
import time
import urllib.request

ADMIN = os.environ.get("GATEHOUSE_ADMIN", "http://127.0.0.1:6433").rstrip("/")
with open(os.environ.get("GATEHOUSE_TOKEN_FILE", "operator.token")) as f:
    TOKEN = f.read().strip()
DECISIONS = int(os.environ.get("DECISIONS", "2"))
DEADLINE = time.monotonic() + float(os.environ.get("TIMEOUT", "60"))
ONE_ORDER = re.compile(r"^\s*DELETE\s+FROM\s+orders\s+WHERE\s+id\s*=\s*\d+\s*;?\s*$", re.I)


def api(method: str, path: str, body=None):
    request = urllib.request.Request(
        ADMIN + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def main() -> int:
    decided = 0
    while decided < DECISIONS and time.monotonic() < DEADLINE:
        for request in api("GET", "/v1/approvals"):
            if request.get("status") != "pending":
                continue
            number, sql = request["approval"], request["sql"]
            if ONE_ORDER.match(sql):
                api("POST", f"/v1/approvals/{number}/approve", {})
                print(f"approved {number}: {sql}", flush=True)
            else:
                api("POST", f"/v1/approvals/{number}/deny", {"reason": "bulk deletes need a ticket"})
                print(f"denied {number}: {sql}", flush=True)
            decided += 1
        time.sleep(0.2)
    return 0 if decided >= DECISIONS else 1


if __name__ == "__main__":
    sys.exit(main())
