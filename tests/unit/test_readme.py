"""The README's tables of metrics and commands name what the code has, and all of it."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
METRIC_TYPES = {"Counter", "Gauge", "Histogram", "Summary"}


def section(title: str) -> str:
    """The README's text under a heading, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#)", README, re.M | re.S)
    assert match, title
    return match.group(1)


def first_cells(text: str) -> list[str]:
    """The first cell of each row of the tables in `text`, header rows left out."""
    rows = re.findall(r"^\| (.*?) \|", text, re.M)
    return [row for row in rows if row.strip("-") and not row.startswith(("metric", "command"))]


def defined_metrics() -> dict[str, set[str]]:
    """Each Prometheus metric the app defines, as exposed (a counter with `_total`), and
    its label names: read from the source, where each is a call such as
    `Counter("pilotlight_runs_queued", "...", ["reason"])`."""
    metrics: dict[str, set[str]] = {}
    for path in (ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in METRIC_TYPES and node.args
                    and isinstance(node.args[0], ast.Constant)):
                continue
            name = str(node.args[0].value)
            labels = node.args[2] if len(node.args) > 2 else next(
                (k.value for k in node.keywords if k.arg == "labelnames"), None)
            suffix = "_total" if node.func.id == "Counter" else ""
            metrics[name + suffix] = set(ast.literal_eval(labels)) if labels else set()
    return metrics


def test_the_metrics_table_names_every_metric_with_its_labels() -> None:
    documented: dict[str, set[str]] = {}
    for cell in first_cells(section("Metrics")):
        for name, labels in re.findall(r"`(pilotlight_\w+)(?:\{([\w,]*)\})?`", cell):
            documented[name] = set(labels.split(",")) - {""}
    defined = defined_metrics()
    assert "pilotlight_runs_queued_total" in defined  # the source is read as expected
    assert documented == defined


def defined_commands() -> dict[str, tuple[set[str], int]]:
    """Each command of `pilotlight` ("user create"), with its options and how many
    arguments it takes."""
    import typer

    from app.cli import cli

    root = typer.main.get_command(cli)
    context = root.make_context("pilotlight", [], resilient_parsing=True)
    commands: dict[str, tuple[set[str], int]] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(context):
                walk(command.get_command(context, name), (*path, name))
            return
        params = command.params
        options = {opt for p in params if p.param_type_name == "option" for opt in p.opts}
        arguments = sum(p.param_type_name == "argument" for p in params)
        commands[" ".join(path)] = (options - {"--help"}, arguments)

    walk(root, ())
    return commands


def documented_commands() -> dict[str, tuple[set[str], int]]:
    """The commands of the README's table: "`pilotlight user create EMAIL [--name N]`",
    and the commands beside another of the same group ("`pilotlight api` / `worker`")."""
    commands: dict[str, tuple[set[str], int]] = {}
    for cell in first_cells(section("Command line")):
        group: list[str] = []
        for usage in re.findall(r"`([^`]+)`", cell):
            words = usage.removeprefix("pilotlight ").split()
            name = list(itertools.takewhile(lambda word: re.fullmatch(r"[a-z-]+", word), words))
            if usage.startswith("pilotlight "):
                group = name[:-1]
            else:
                name = [*group, *name]
            options = set(re.findall(r"--[a-z-]+", usage))
            # EMAIL, OLD NEW, [EMAIL]: what is left once the options and their values go.
            arguments = len(re.findall(r"\[?[A-Z]+\]?", re.sub(r"\[--[^]]*\]", "", usage)))
            commands[" ".join(name)] = (options, arguments)
    return commands


def test_the_command_line_table_names_every_command_with_its_options() -> None:
    defined = defined_commands()
    assert defined["user create"] == ({"--name", "--timezone", "--sample"}, 1)  # read as meant
    assert documented_commands() == defined
