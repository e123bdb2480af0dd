"""Entry point of the ``turnout`` command: global options, error rendering, sub-commands."""

from __future__ import annotations

import logging
import sys

import typer

from engine.errors import ClientError, TurnoutError
from service.cli import chart, doctor, generate, models, serve

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Turnout: LLM serving on vLLM and Ray Serve.")
app.add_typer(models.app, name="models")
app.command("generate")(generate.generate)
app.command("serve")(serve.serve)
app.command("build-config")(serve.build_config)
app.command("chart-schema")(chart.chart_schema)
app.command("doctor")(doctor.doctor)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    """Run the CLI; Turnout errors become one line on stderr and exit code 2 (client) or 1."""
    try:
        code = app(standalone_mode=False)  # a typer.Exit is returned here, not raised
    except TurnoutError as e:
        print(f"error: {e.message}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ClientError) else 1)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.TyperException as e:  # usage errors: typer >= 0.24 vendors click's exceptions
        e.show()  # type: ignore[attr-defined] - every subclass typer raises is a ClickException
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise

    if isinstance(code, int) and code:
        sys.exit(code)
