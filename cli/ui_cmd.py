"""``date-edit ui``: the web app (gradio) over the Python API, the model loaded once and kept warm.

Thin: load the model, build the app (:mod:`.ui_app` handlers, :mod:`.ui_layout` layout) and serve it. gradio is
imported only when the command runs, so the CLI's start-up does not grow.
"""

from __future__ import annotations

import click

from . import common
from .options import model_options
from .running import CliError, run_command, say


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on. The default serves this machine only; another (0.0.0.0: every interface) "
                   "lets anyone who reaches the port run edits here.")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="Port to serve on.")
@click.option("--share", is_flag=True,
              help="Also open a temporary public link through Gradio's share servers (needs the internet).")
@model_options(exclude=("seed", "out", "overwrite", "as_json", "quiet"))
def ui(host: str, port: int, share: bool, **opts) -> None:
    """Serve the web app: upload a photo, edit it by eye (controls, mask, DATE), sweep skip x CFG; the model loads
    once and an inversion is reused while only the target or the edit's settings change."""

    def body():
        import importlib.util

        if importlib.util.find_spec("gradio") is None:
            raise CliError("the web app needs gradio: pip install 'gradio>=6' (make install does)")
        from .ui_app import App, is_local
        from .ui_layout import build, launch

        if not is_local(host):
            say(f"warning: --host {host} serves other machines too: anyone who reaches port {port} can run edits "
                "here and read what they upload")
        backbone = common.load_model(opts)
        app = App(backbone, opts["model"])
        demo = build(app)
        say(f"serving {opts['model']} on http://{'[' + host + ']' if ':' in host else host}:{port} "
            f"(Ctrl+C stops)" + ("; a public share link follows" if share else ""))
        launch(demo, app, host, port, share)

    run_command(body)
