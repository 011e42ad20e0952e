"""The ``guide-opt`` command line.

Each verb lives in its own module and registers itself on :data:`guide_opt.cli.app.cli`.
:func:`main` is the console-script entry point: it maps bad input to one line on stderr
and exit code 1, and never shows a traceback unless ``GUIDE_OPT_DEBUG=1``.

Exit codes: 0 an answer was found, 1 bad input, 2 infeasible (reasons printed),
3 an internal error (please report it).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

import click

from guide_opt.cli.app import clear_command_start, cli, mark_command_start
from guide_opt.errors import InputError

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_INFEASIBLE = 2
EXIT_INTERNAL = 3


def one_line(text: str) -> str:
    """``text`` on one line: a user's value may carry line breaks (``\\r``, ``\\u2028``, ...) into a message."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    """Run ``guide-opt`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    Only the module of the verb that runs is imported (:class:`~guide_opt.cli.app.LazyGroup`).
    """
    mark_command_start()
    try:
        result = cli.main(args=argv, prog_name="guide-opt", standalone_mode=False)
    except InputError as exc:
        click.echo(f"error: {one_line(str(exc))}", err=True)
        return EXIT_BAD_INPUT
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return EXIT_OK
    except click.UsageError as exc:
        hint = f" (see 'guide-opt {exc.ctx.command_path.split(' ', 1)[-1]} --help')" if exc.ctx and " " in exc.ctx.command_path else " (see 'guide-opt --help')"
        click.echo(f"error: {one_line(exc.format_message())}{hint}", err=True)
        return EXIT_BAD_INPUT
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_BAD_INPUT
    except click.ClickException as exc:
        click.echo(f"error: {one_line(exc.format_message())}", err=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # a bug: say so in one line, traceback only on request
        if os.environ.get("GUIDE_OPT_DEBUG"):
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} (set GUIDE_OPT_DEBUG=1 for the traceback and please report it)", err=True)
        return EXIT_INTERNAL
    finally:
        clear_command_start()
    return result if isinstance(result, int) else EXIT_OK


def console_main() -> None:
    """Console-script wrapper that exits with :func:`main`'s code.

    The exit skips the interpreter's teardown of its modules: freeing pandas (loaded by OR-Tools),
    OR-Tools and numpy one object at a time takes about 0.2 s, a fifth of a warm solve, and
    saves nothing once the process ends. Everything an exit owes is done first: the output is
    flushed and the exit handlers run (child processes are joined or stopped, temporary files
    removed, log handlers flushed). With a thread other than the main one still running, it
    exits the usual way, which waits for it.
    """
    code = main()
    if threading.active_count() > 1:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written to it
            pass
    atexit._run_exitfuncs()
    os._exit(code)
