"""``date-edit``: edit photos and generate images with edit-friendly DDPM inversion and DATE.

The app: the command group and its entry point. Each command lives in its own module, which imports the shared
options (:mod:`.options`), helpers (:mod:`.common`) and error handling (:mod:`.running`) and never this module;
this module imports the commands. Heavy imports (torch, diffusers) happen inside the commands, so
``date-edit --help`` answers at once.
"""

from __future__ import annotations

import sys

import click

from .ane_cmd import ane
from .batch_cmd import batch
from .edit_cmd import edit, generate, reconstruct
from .running import DEBUG_ENV, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, say
from .scorers_cmd import score, scorers
from .sweep_cmd import sweep
from .ui_cmd import ui


class DefaultEditGroup(click.Group):
    """A group where ``date-edit IMAGE PROMPT`` means ``date-edit edit IMAGE PROMPT``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Insert ``edit`` when the first argument is not a command or an option."""
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["edit"] + list(args)
        return super().parse_args(ctx, args)


@click.group(cls=DefaultEditGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=f"An unexpected error (a bug) is one line naming the file its traceback was saved to; "
                    f"{DEBUG_ENV}=1 prints the traceback instead.")
@click.version_option(package_name="date-edit", prog_name="date-edit")  # from the package metadata
def main() -> None:
    """Edit photos and generate images with diffusion models, steering the text embedding with DATE.

    \b
      date-edit photo.png "a cat wearing a hat"          (same as: date-edit edit ...)
      date-edit generate "a red cube on a blue sphere"
      date-edit reconstruct photo.png                     (checks the inversion is exact)

    Exit codes: 0 ok, 1 runtime error (model, memory) or a bug, 2 bad input or options, 130 interrupted.
    """


for _command in (edit, generate, reconstruct, sweep, ui, batch, ane, scorers, score):
    main.add_command(_command)


def run() -> None:
    """Console entry point: click errors become one line and exit code 2."""
    try:
        code = main.main(standalone_mode=False)
    except SystemExit:
        raise
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `date-edit`: show the help
            click.echo(exc.format_message(), err=True)
            sys.exit(EXIT_USAGE)
        say(f"error: {exc.format_message()} (see date-edit --help)")
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        say("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
