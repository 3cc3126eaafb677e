"""``date-edit ui``: the web app (gradio) over the Python API, the model loaded once and kept warm.

Thin: check the address, load the model, build the app (:mod:`.ui_app` handlers, :mod:`.ui_layout` layout) and
serve it. gradio is imported only when the command runs, so the CLI's start-up does not grow.
"""

from __future__ import annotations

import errno
import socket

import click

from date_edit.errors import excerpt

from . import request
from .options import model_options
from .running import EXIT_USAGE, CliError, printable, run_command, say

MAX_HOST_CHARS = 253  # the longest DNS name


def bare_host(host: str) -> str:
    """``host`` without the brackets of an IPv6 address written as in a URL (``[::1]`` -> ``::1``)."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def check_address(host: str, port: int) -> None:
    """Refuse, in one line (a :class:`CliError`, exit 2), a ``--host`` that is not an address of this machine or a
    ``--port`` that cannot be served on it (in use, or privileged): the host is resolved and the port bound as the
    server binds it (an IPv6 socket for an address with a colon), then released, before the model loads."""
    name = bare_host(host)
    if not name or len(name) > MAX_HOST_CHARS or any(c.isspace() or not c.isprintable() for c in name):
        raise CliError(f"--host {excerpt(host)} is not a host name or an address; use 127.0.0.1 (this machine only) "
                       "or 0.0.0.0 (every interface)", EXIT_USAGE)
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    try:
        socket.getaddrinfo(name, port, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a valid name"
        raise CliError(f"--host {excerpt(host)} is not an address of this machine ({reason}); use 127.0.0.1 (this "
                       "machine only), 0.0.0.0 (every interface) or one of this machine's addresses",
                       EXIT_USAGE) from None
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            probe.bind((name, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            problem = f"--port {port} is in use on {printable(name)} (another server is listening there); " \
                      "choose another --port or stop that server"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            problem = f"--port {port} needs privileges to serve on; use a port from 1024 up"
        elif exc.errno == errno.EADDRNOTAVAIL:
            problem = f"--host {excerpt(host)} is not an address of this machine; use 127.0.0.1 or 0.0.0.0"
        else:
            problem = f"cannot serve on --host {excerpt(host)} --port {port} ({exc.strerror or exc})"
        raise CliError(problem, EXIT_USAGE) from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on (IPv6 too: :: or ::1). The default serves this machine only; another "
                   "(0.0.0.0 or ::: every interface) lets anyone who reaches the port run edits here.")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True,
              help="Port to serve on; checked free before the model loads.")
@click.option("--share", is_flag=True,
              help="Also open a temporary public link through Gradio's share servers (needs the internet).")
@model_options(exclude=("seed", "out", "overwrite", "as_json", "quiet"))
def ui(host: str, port: int, share: bool, **opts) -> None:
    """Serve the web app: upload a photo, edit it by eye (controls, mask, DATE), sweep skip x CFG; the model loads
    once and an inversion is reused while only the target or the edit's settings change."""

    def body():
        import importlib.util

        check_address(host, port)
        if importlib.util.find_spec("gradio") is None:
            raise CliError("the web app needs gradio: pip install 'gradio>=6' (make install does)")
        from .ui_app import App, is_local
        from .ui_layout import build, launch

        name = bare_host(host)
        if not is_local(name):
            say(f"warning: --host {printable(host)} serves other machines too: anyone who reaches port {port} can "
                "run edits here and read what they upload")
        backbone = request.ModelChoice.from_options(opts).load()
        app = App(backbone, opts["model"])
        demo = build(app)
        say(f"serving {opts['model']} on http://{'[' + name + ']' if ':' in name else name}:{port} "
            f"(Ctrl+C stops)" + ("; a public share link follows" if share else ""))
        launch(demo, app, name, port, share)

    run_command(body)
