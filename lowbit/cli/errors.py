"""How the `lowbit` command reports errors a user can fix: one `error: …` line and exit
status 2 (`--debug` shows the traceback instead), for usage errors and stage errors alike."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer
from typer._click.exceptions import UsageError  # typer 0.29 ships its own click
from typer.core import TyperGroup

from lowbit.errors import LowbitError


class OneLineErrors(TyperGroup):
    """A usage error (an unknown option, a value outside an enum) is one `error:` line and
    exit status 2, like every other error a user can fix, not a framed help panel."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            rc = super().main(*args, standalone_mode=False, **kwargs)
        except UsageError as e:
            message = e.format_message().replace("Value error, ", "")
            if message.strip():  # (no arguments at all: the help was printed instead)
                typer.echo(f"error: {message}", err=True)
            sys.exit(2)
        except typer.Abort:
            typer.echo("error: interrupted", err=True)
            sys.exit(130)
        if standalone_mode:
            sys.exit(rc if isinstance(rc, int) else 0)
        return rc

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """An unknown command's error names the commands there are (typer suggests one
        only when the name is close to one)."""
        try:
            return super().resolve_command(ctx, args)
        except UsageError as e:
            if e.message.startswith("No such command") and "Did you mean" not in e.message:
                names = ", ".join(self.list_commands(ctx))
                e.message = f"{e.message.rstrip('.')}; commands: {names}"
            raise


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def guarded(debug: bool, fn: Callable[[], Any]) -> Any:
    """Run fn; turn user-facing errors into one line and a non-zero exit."""
    try:
        return fn()
    except typer.Exit:
        raise
    except LowbitError as e:
        if debug:
            traceback.print_exc()
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as e:  # an unexpected failure: still one line unless --debug
        if debug:
            traceback.print_exc()
            raise typer.Exit(1) from None
        fail(f"{type(e).__name__}: {e} (rerun with --debug for the traceback)", 1)
