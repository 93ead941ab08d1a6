"""The JSON Schemas under docs/ are the ones the models export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tasks.events import json_schema

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def test_event_schema_file_is_current() -> None:
    on_disk = json.loads((SCHEMAS / "execution-event.schema.json").read_text())

    assert on_disk == json_schema(), (
        "docs/schemas/execution-event.schema.json is stale; run "
        "python -m tasks.events > docs/schemas/execution-event.schema.json"
    )


def test_settings_reference_is_current() -> None:
    script = SCHEMAS.parents[1] / "scripts" / "settings_reference.py"
    deployment = SCHEMAS.parent / "deployment.md"

    result = subprocess.run(
        [sys.executable, str(script), "--check", str(deployment)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, (
        "the settings table in docs/deployment.md is stale; run "
        "python scripts/settings_reference.py --update docs/deployment.md\n"
        + result.stdout
        + result.stderr
    )
