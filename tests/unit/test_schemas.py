"""The JSON Schemas under docs/ are the ones the models export."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.events import json_schema

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def test_event_schema_file_is_current() -> None:
    on_disk = json.loads((SCHEMAS / "execution-event.schema.json").read_text())

    assert on_disk == json_schema(), (
        "docs/schemas/execution-event.schema.json is stale; run "
        "python -m tasks.events > docs/schemas/execution-event.schema.json"
    )
