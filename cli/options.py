"""Option helpers shared by the commands, checked where click parses them: imports only click (the checks'
module, :mod:`date_edit.limits`, imports nothing heavy and only when a value is given).

Its own module so that every command module can import it without importing :mod:`.main` (which registers
the command modules at its end).
"""

from __future__ import annotations

import click


def checked(check_name: str):
    """A click callback running ``date_edit.limits.<check_name>`` on the value: a ValueError becomes one usage line
    naming the flag (exit 2), at parse time, before anything loads. None (the option left out) passes."""

    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is None:
            return None
        from date_edit import limits

        flag = max(param.opts, key=len)
        kwargs = {}
        if check_name in ("check_size", "check_side"):
            kwargs["max_pixels"] = ctx.params.get("max_pixels", limits.DEFAULT_MAX_PIXELS)
        try:
            return getattr(limits, check_name)(value, name=flag, **kwargs)
        except ValueError as exc:
            hint = " (or raise --max-pixels)" if "max_pixels" in ctx.params and "too large" in str(exc) else ""
            raise click.UsageError(f"{exc}{hint}", ctx) from None

    return callback


def device_option(**kwargs):
    """``--device``, checked at parse time (auto, cpu, cuda, cuda:N, mps)."""
    return click.option("--device", default="auto", show_default=True, callback=checked("check_device"),
                        help="auto, cpu, cuda or cuda:N.", **kwargs)


def seed_option(text: str, **kwargs):
    """``--seed`` with help ``text``, checked at parse time (0 .. 2**64-1, what torch.Generator takes)."""
    return click.option("--seed", type=int, callback=checked("check_seed"), help=text, **kwargs)
