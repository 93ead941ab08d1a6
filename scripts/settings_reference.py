"""Print every pod-monitor setting as one Markdown table, for docs/deployment.md.

The rows come from the pydantic settings models themselves: the environment
variable (the model's ``env_prefix`` plus the field name, or the field's
aliases), the type, the default, the limits of the field's constraints, and
the description. A description is the field's ``description=``, else the
``#:`` comment lines above the field in the model's source, the convention
``tasks/settings.py`` uses.

Usage::

    .venv/bin/python scripts/settings_reference.py                 # print it
    .venv/bin/python scripts/settings_reference.py --update docs/deployment.md
    .venv/bin/python scripts/settings_reference.py --check docs/deployment.md

``--update`` replaces the table between the ``settings-reference`` markers
of the file; ``--check`` exits with 1 when that table is out of date.

A field with no description is listed with an empty cell and named on
stderr, so that a missing description shows up when the docs are rebuilt.
"""

from __future__ import annotations

import argparse
import ast
import enum
import inspect
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import annotated_types
from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

# Run from a checkout without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks import settings as task_settings
from watcher import settings as watcher_settings

#: Each settings model, with the processes that read it.
MODELS: tuple[tuple[type[BaseSettings], str], ...] = (
    (task_settings.BrokerSettings, "all"),
    (task_settings.PodSelection, "watcher, workers"),
    (task_settings.Policy, "workers"),
    (task_settings.KafkaSettings, "workers, `pod-monitor` CLI"),
    (task_settings.LogSettings, "workers"),
    (task_settings.WorkerSettings, "workers, Beat"),
    (watcher_settings.WatcherSettings, "watcher"),
)

#: Markers around the generated table in a Markdown file.
START_MARKER = "<!-- settings-reference:start -->"
END_MARKER = "<!-- settings-reference:end -->"

#: Defaults made by a factory that depends on the machine are not printed.
_MACHINE_DEPENDENT = "computed at start"


@dataclass(frozen=True)
class Row:
    variables: list[str]
    type_name: str
    default: str
    read_by: str
    description: str


def field_comments(model: type[BaseSettings]) -> dict[str, str]:
    """Return the ``#:`` comment above each field of ``model``, by field name."""
    source = textwrap.dedent(inspect.getsource(model))
    lines = source.splitlines()
    comments: dict[str, str] = {}
    class_node = ast.parse(source).body[0]
    assert isinstance(class_node, ast.ClassDef)
    for node in class_node.body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        collected: list[str] = []
        index = node.lineno - 2  # the line above, 0-based
        while index >= 0 and lines[index].strip().startswith("#:"):
            collected.insert(0, lines[index].strip()[2:].strip())
            index -= 1
        if collected:
            comments[node.target.id] = " ".join(collected)
    return comments


def environment_variables(model: type[BaseSettings], name: str) -> list[str]:
    """Return the environment variables that set field ``name`` of ``model``."""
    field = model.model_fields[name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        # Aliases that are not upper case are init and flag names.
        return [
            choice
            for choice in alias.choices
            if isinstance(choice, str) and choice.isupper()
        ]
    if isinstance(alias, str):
        return [alias]
    prefix = str(model.model_config.get("env_prefix", ""))
    return [(prefix + name).upper()]


def type_name(annotation: object) -> str:
    """Return a short, reader-facing name of a field's type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(type_name(arg) for arg in members) + " (optional)"
    if origin is list:
        return "list (comma-separated or JSON)"
    if origin is dict:
        return "JSON object"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " or ".join(f"`{member.value}`" for member in annotation)
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def format_value(value: object) -> str:
    """Return ``value`` as an environment variable would spell it."""
    if value is None:
        return "unset"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, list | tuple):
        return "empty" if not value else "`" + ",".join(map(str, value)) + "`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    if value == "":
        return "empty"
    return f"`{value}`"


def default_of(field: FieldInfo) -> str:
    if field.default_factory is not None:
        produced = field.default_factory()  # type: ignore[call-arg]
        # A container default is the same on every machine, a host name is not.
        if isinstance(produced, list | dict | tuple):
            return format_value(produced)
        return _MACHINE_DEPENDENT
    if field.default is PydanticUndefined:
        return "required"
    return format_value(field.default)


def limits_of(field: FieldInfo) -> str:
    """Return the numeric bounds of a field, such as ">= 60, <= 65535"."""
    bounds = []
    for constraint in field.metadata:
        if isinstance(constraint, annotated_types.Ge):
            bounds.append(f">= {format_value(constraint.ge).strip('`')}")
        elif isinstance(constraint, annotated_types.Gt):
            bounds.append(f"> {format_value(constraint.gt).strip('`')}")
        elif isinstance(constraint, annotated_types.Le):
            bounds.append(f"<= {format_value(constraint.le).strip('`')}")
        elif isinstance(constraint, annotated_types.Lt):
            bounds.append(f"< {format_value(constraint.lt).strip('`')}")
    return ", ".join(bounds)


def rows() -> Iterator[Row]:
    for model, read_by in MODELS:
        comments = field_comments(model)
        for name, field in model.model_fields.items():
            description = _sentence(field.description or comments.get(name, ""))
            if not description:
                print(
                    f"settings_reference: {model.__name__}.{name} has no description",
                    file=sys.stderr,
                )
            limits = limits_of(field)
            if limits:
                description = f"{description} Allowed: {limits}.".strip()
            yield Row(
                variables=environment_variables(model, name),
                type_name=type_name(field.annotation),
                default=default_of(field),
                read_by=read_by,
                description=description,
            )


def _sentence(text: str) -> str:
    # reST literals (``x``) become Markdown code, and a docstring's line
    # breaks become spaces, because a table row is one line.
    text = " ".join(text.replace("``", "`").split())
    if text and not text.endswith("."):
        text += "."
    return text[0].upper() + text[1:] if text else text


def _cell(text: str) -> str:
    # A pipe would end the table cell.
    return text.replace("|", "\\|")


def render_table() -> str:
    lines = [
        "| Environment variable | Type | Default | Read by | Description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows():
        variables = ", ".join(f"`{name}`" for name in row.variables)
        cells = [variables, row.type_name, row.default, row.read_by, row.description]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def replace_table(document: str, table: str, path: Path) -> str:
    """Return ``document`` with ``table`` between the markers.

    Raises ``ValueError`` when the markers are missing or out of order.
    """
    start = document.find(START_MARKER)
    end = document.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(
            f"{path}: expected the lines {START_MARKER} and {END_MARKER}, "
            "in this order, around the settings table"
        )
    body_start = start + len(START_MARKER) + 1
    return document[:body_start] + table + document[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--update", type=Path, metavar="FILE", help="rewrite the table in FILE"
    )
    mode.add_argument(
        "--check",
        type=Path,
        metavar="FILE",
        help="exit with 1 when the table in FILE is out of date",
    )
    args = parser.parse_args(argv)

    table = render_table()
    path: Path | None = args.update or args.check
    if path is None:
        sys.stdout.write(table)
        return 0

    document = path.read_text(encoding="utf-8")
    try:
        updated = replace_table(document, table, path)
    except ValueError as error:
        print(f"settings_reference: {error}", file=sys.stderr)
        return 2

    if args.check:
        if updated != document:
            print(
                f"settings_reference: the table in {path} is out of date; "
                f"run scripts/settings_reference.py --update {path}",
                file=sys.stderr,
            )
            return 1
        return 0
    path.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
