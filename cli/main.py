"""The ``popularity`` app, assembled from its command groups, and :func:`main`, which runs one command
and turns every error into one line (and a JSON line under ``--json``)."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Annotated

import typer
from rich.markup import escape

from cli import outcome_commands, pipeline_commands, service_commands, stack_commands
from cli.output import CommandError, console, error_kind, finite

app = typer.Typer(help="Predict how well an image will do online.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
for group in (pipeline_commands, service_commands, outcome_commands, stack_commands):
    app.add_typer(group.app)  # no name: the group's commands join the top level
app.add_typer(stack_commands.stack_app, name="stack")
app.add_typer(stack_commands.prefect_app, name="prefect")


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (also POPULARITY_DEBUG=1; "
                                                        "`main` reads it anywhere on the line).")] = False,
) -> None:
    """Predict how well an image will do online."""


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors become one line (and a JSON line under ``--json``), never a traceback
    unless ``--debug`` (anywhere on the line) or ``POPULARITY_DEBUG=1`` asks for it."""
    import json

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("POPULARITY_DEBUG", "") not in ("", "0")
    args = ["--debug"] * debug + [a for a in args if a != "--debug"]
    if not debug:  # MLflow's retries are urllib3 warnings, one line each: the command's one error line says it
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    try:
        code = app(args=args, prog_name="popularity", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except typer.TyperException as exc:  # Typer's usage errors: unknown options, missing arguments
        if type(exc).__name__ == "NoArgsIsHelpError":  # ``popularity`` alone: the help, as Typer shows it
            exc.show()
            return exc.exit_code
        context = getattr(exc, "ctx", None)
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        error = CommandError(exc.format_message() + hint, exc.exit_code, "usage" if exc.exit_code == 2 else "failed")
        caught: BaseException = exc
    except CommandError as exc:
        error = caught = exc
    except KeyboardInterrupt as exc:
        error, caught = CommandError("interrupted", 130, "interrupted"), exc
    except Exception as exc:  # noqa: BLE001 (the last line of defence: one line, not a traceback)
        lines = str(exc).strip().splitlines()
        detail = lines[0] if lines else type(exc).__name__
        error = CommandError(f"{detail} ({type(exc).__name__}; `--debug` shows the traceback)", 1, error_kind(exc))
        caught = exc
    if debug:
        traceback.print_exception(caught)
    console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True, highlight=False)
    if "--json" in args:
        print(json.dumps(finite({**error.details, "error": str(error), "kind": error.kind}), default=str))
    return error.code


if __name__ == "__main__":
    sys.exit(main())
