"""Shared by the bench scripts: print the rows as one JSON line and optionally save them."""
from __future__ import annotations

import json


def emit_json(rows, path: str | None = None) -> None:
    print(json.dumps(rows))
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)
