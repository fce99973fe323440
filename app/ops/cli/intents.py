"""`jobq intents`: the manifest with each intent's parameters, and a check that every entry
imports, builds its parameter schema, names real secret fields and has its Celery task.

Listing imports the parameter models (small pydantic classes), never a handler module.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from app.ops.cli.common import console, err

app = typer.Typer(help="The intent manifest: keys, queues, parameters; `check` imports them all.",
                  no_args_is_help=False)


def param_schema(intent) -> dict[str, Any]:
    """The intent's parameters as JSON schema (what ``--params-json`` must satisfy)."""
    return intent.params_model.model_json_schema()


def describe_field(name: str, prop: dict[str, Any], required: bool) -> Text:
    """``seconds: number ≥ 0 ≤ 3600, required — How long to sleep.``"""
    line = Text(name, style="bold")
    kind = prop.get("type") or " | ".join(
        s.get("type", s.get("$ref", "?").rsplit("/", 1)[-1]) for s in prop.get("anyOf", [])
    ) or "any"
    line.append(f": {kind}")
    bounds = [f"{sym} {prop[key]}" for key, sym in (
        ("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"),
        ("minLength", "len ≥"), ("maxLength", "len ≤")) if key in prop]
    if "enum" in prop:
        bounds.append("one of " + ", ".join(map(str, prop["enum"])))
    if bounds:
        line.append(" " + " ".join(bounds))
    if required:
        line.append(", required", style="yellow")
    elif "default" in prop:
        line.append(f", default {prop['default']!r}", style="dim")
    if prop.get("description"):
        line.append(f" — {prop['description']}", style="dim")
    return line


def describe_params(intent) -> Text:
    try:
        schema = param_schema(intent)
    except Exception as exc:
        return Text(f"broken: {exc}", style="red")
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    out = Text()
    for name, prop in props.items():
        if out:
            out.append("\n")
        out.append(describe_field(name, prop, name in required))
        if name in intent.secret_params:
            out.append(" (secret)", style="magenta")
    if schema.get("additionalProperties") is not False:
        out.append(("\n" if out else "") + "any other fields", style="dim")
    return out or Text("none", style="dim")


@app.callback(invoke_without_command=True)
def intents_list(
    ctx: typer.Context,
    family: Annotated[str | None, typer.Option(
        "--family", "-f", help="Only this family (attendance, billing, ...).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Every intent with its full parameter JSON schema.")] = False,
) -> None:
    """List every intent: queue, retries, time limit, description and parameters."""
    if ctx.invoked_subcommand:
        return
    from app.core.registry import manifest

    intents = [i for i in manifest if family is None or i.family == family]
    if as_json:
        out = []
        for intent in intents:
            try:
                schema: Any = param_schema(intent)
            except Exception as exc:
                schema = {"error": str(exc)}
            out.append({
                "key": intent.key, "family": intent.family, "queue": intent.queue,
                "max_retries": intent.effective_max_retries,
                "time_limit": intent.effective_time_limit,
                "secret_params": list(intent.secret_params),
                "description": intent.description, "params_schema": schema,
            })
        console.print_json(data=out)
        return
    # One block per intent, not a table: keys, descriptions and parameter lists stay whole and
    # readable in an 80-column terminal and in a pipe alike.
    for i, intent in enumerate(intents):
        if i:
            console.print()
        head = Text(intent.key, style="bold")
        head.append(f"  {intent.queue} · {intent.effective_max_retries} retries · "
                    f"{intent.effective_time_limit} s limit", style="dim")
        console.print(head, soft_wrap=not console.is_terminal)
        if intent.description:
            console.print(Text(f"  {intent.description}"), soft_wrap=not console.is_terminal)
        for line in describe_params(intent).split("\n"):
            console.print(Text("    ").append(line), soft_wrap=not console.is_terminal)
    err.print(Text(f"{len(intents)} intents; parameters as JSON schema: jobq intents --json",
                   style="dim"))


def problems_of(manifest) -> list[str]:
    """One line per broken entry: imports, schema, secret fields, Celery task."""
    from app.core.manifest import check

    problems = check(manifest)
    import app.tasks  # noqa: F401  (what a worker registers at start)
    from app.broker.celery_app import celery_app

    for intent in manifest:
        try:
            schema = param_schema(intent)
        except Exception as exc:
            if not any(p.startswith(f"{intent.key}:") for p in problems):
                problems.append(f"{intent.key}: parameter schema cannot be built: {exc}")
            continue
        fields = set(schema.get("properties", {}))
        open_model = schema.get("additionalProperties") is not False
        for name in intent.secret_params:
            if name not in fields and not open_model:
                problems.append(f"{intent.key}: secret_params names {name!r}, which is not a "
                                "parameter, so nothing is hidden")
        if intent.key not in celery_app.tasks:
            problems.append(f"{intent.key}: no Celery task is registered under this key")
    return problems


@app.command("check")
def intents_check() -> None:
    """Import every handler and parameter model; exit 1 naming each broken entry."""
    from app.core.registry import manifest

    problems = problems_of(manifest)
    for problem in problems:
        err.print(Text.assemble(("broken: ", "red"), problem))
    if problems:
        raise typer.Exit(1)
    console.print(f"{len(manifest)} intents, all importable, schemas and tasks in place")
