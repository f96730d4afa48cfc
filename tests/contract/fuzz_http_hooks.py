"""schemathesis hooks for tests/contract/live.sh (loaded through schemathesis.toml).

Generated order bodies must not take the stock of the demo catalog (P-001 ... P-008, deploy/seed.jsonl)
that a developer's stack relies on: a line naming one of those products (the document's own examples
do) is sent for FZ-H-<its number> instead, a product of the contract run's own that live.sh stocks.
Every other generated product id is sent as generated (an unknown product: 409 unknown_product)."""

import re

import schemathesis

DEMO = re.compile(r"^P-(\d{3})$")


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        for line in body["items"]:
            if isinstance(line, dict) and isinstance(line.get("product_id"), str):
                m = DEMO.match(line["product_id"])
                if m:
                    line["product_id"] = f"FZ-H-{m.group(1)}"
    return body
