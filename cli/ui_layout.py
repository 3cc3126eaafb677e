"""The layout of ``date-edit ui``: gradio components wired to the handlers of :class:`.ui_app.App`.

gradio is imported inside :func:`build` and :func:`launch` only, so importing this module (and starting the CLI)
costs nothing; the handlers hold the logic and are tested without a browser.
"""

from __future__ import annotations

import html
import os
import random

from .running import EXIT_USAGE, CliError, printable, say
from .ui_app import FORM, MASK_MODES, MAX_LAYER_PIXELS, RADIUS_KINDS, SWEEP_COLUMNS, SWEEP_FORM, App, public, \
    saved_traceback

INTRO = ("Upload a photo (or pick a sample), describe it (source prompt) and say what it should become (target "
         "prompt), then **Edit**. The first edit of a photo inverts it; a new target prompt, CFG, skip, mask or DATE "
         "setting reuses that inversion. The **Sweep** tab edits over a grid of skip x CFG (x DATE) to show the "
         "trade-off between following the prompt and keeping the photo.")


# small model outputs (the toy model's 64 px) fill their box, pixels kept sharp
CSS = ("#result img, #reconstruction img, #sweep-grid img {width: 100%; height: 100%; object-fit: contain; "
       "image-rendering: pixelated;}")


def _bar(progress):
    """A pipeline ``progress(phase, i, n)`` driving gradio's progress bar."""
    return lambda phase, i, n: progress((i + 1, n), desc=phase, unit="steps")


def _frame(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=["step", "objective"], dtype=float)


def _size_checked(gr, convert):
    """An ImageEditor's image reader (``convert(file, flatten_on_white)``) that reads each image's header first: an
    image over :data:`.ui_app.MAX_LAYER_PIXELS` is passed on as opened, never decoded (the handler refuses a painted
    layer so large in one line; the photo and composite the editor sends are not used), one that is not an image
    is refused in one line."""
    from io import BytesIO

    from PIL import Image

    def checked(file, flatten_on_white: bool = False):
        if file is None:
            return None
        try:
            im = Image.open(BytesIO(bytes(file)) if isinstance(file, (bytes, bytearray, memoryview)) else file.path)
        except Image.DecompressionBombError:
            raise gr.Error(f"error: an image the editor sent is over the limit of {MAX_LAYER_PIXELS:,} pixels; "
                           "reload the photo and paint again", print_exception=False) from None
        except Exception:  # noqa: BLE001 - whatever the file holds, one line
            raise gr.Error("error: an image the editor sent (the photo or the painted mask) is not an image the "
                           "app can read; reload the photo and paint again", print_exception=False) from None
        if im.width * im.height > MAX_LAYER_PIXELS:
            return im
        im.close()
        return convert(file, flatten_on_white)

    return checked


def _one_line(text: str, limit: int = 300) -> str:
    text = printable((str(text).strip().splitlines() or [""])[0])
    return text if len(text) <= limit else text[:limit - 3] + "..."


def guard_requests(gr, demo) -> None:
    """Make every request gradio itself refuses (a value a component cannot take, a file that is not an image) one
    line in the server's log (``date-edit: request refused: ...``) and one line in the browser, never a traceback
    and never a server path; the handlers' own refusals are their status lines (:meth:`.ui_app.App._guarded`)."""
    process_api = demo.process_api

    async def guarded(*args, **kwargs):
        try:
            return await process_api(*args, **kwargs)
        except gr.Error as exc:
            text = public(_one_line(exc.message))
            say(f"request refused: {text}")
            raise gr.Error(html.escape(text, quote=False), duration=exc.duration, visible=exc.visible,
                           title=exc.title, print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - one line, the traceback to a file
            say(f"request refused: {type(exc).__name__}: {_one_line(exc)} ({saved_traceback(exc)})")
            raise gr.Error("error: the app could not take this request's values; reload the page and try again",
                           print_exception=False) from None

    demo.process_api = guarded


def _controls(gr, app: App) -> dict:
    """The Edit form's controls, named as :data:`.ui_app.FORM`."""
    c = {}
    with gr.Accordion("Controls", open=True):
        with gr.Row():
            c["steps"] = gr.Number(FORM["steps"], label="Steps", precision=0, minimum=1, elem_id="steps")
            c["skip"] = gr.Textbox(FORM["skip"], label="Skip (count or %)", elem_id="skip")
            c["cfg_source"] = gr.Number(FORM["cfg_source"], label="CFG source", elem_id="cfg-source")
            c["cfg_target"] = gr.Number(FORM["cfg_target"], label="CFG target (7.5 with P2P or a mask, 15 without)",
                                        elem_id="cfg-target")
            c["seed"] = gr.Number(FORM["seed"], label="Seed", precision=0, minimum=0, elem_id="seed")
            c["randomise"] = gr.Button("Random seed", size="sm", elem_id="random-seed")
        with gr.Row():
            c["edit_method"] = gr.Dropdown(app.methods(), value=FORM["edit_method"], label="Edit method",
                                           elem_id="edit-method")
            c["date"] = gr.Checkbox(FORM["date"], label="DATE (adapt the text embedding)", elem_id="date")
            c["radius"] = gr.Radio(list(RADIUS_KINDS), value=FORM["radius"], label="Radius as", elem_id="radius")
            c["rho"] = gr.Number(FORM["rho"], label="Radius", minimum=0, elem_id="rho")
            c["update_steps"] = gr.Textbox(FORM["update_steps"], label="Update steps", elem_id="update-steps")
            c["scorer"] = gr.Textbox(FORM["scorer"], label="DATE scorer", elem_id="scorer")
        with gr.Row():
            c["mask"] = gr.Radio(list(MASK_MODES), value=FORM["mask"], elem_id="mask",
                                 label="Mask (painted: paint on the photo)")
            c["p2p"] = gr.Checkbox(FORM["p2p"], label="Prompt-to-Prompt", elem_id="p2p")
            c["cross_replace"] = gr.Slider(0, 1, FORM["cross_replace"], step=0.05, label="P2P cross replace")
            c["self_replace"] = gr.Slider(0, 1, FORM["self_replace"], step=0.05, label="P2P self replace")
    return c


def _edit_tab(gr) -> dict:
    out = {}
    with gr.Row():
        out["result"] = gr.Image(label="Result", format="png", interactive=False, elem_id="result", height=320)
        out["reconstruction"] = gr.Image(label="Reconstruction (on request)", format="png", interactive=False,
                                         elem_id="reconstruction", height=320)
    out["download"] = gr.File(label="Download: the PNG with its record", interactive=False, elem_id="download")
    out["plot"] = gr.LinePlot(_frame([]), x="step", y="objective", label="DATE objective per update",
                              elem_id="plot", height=220)
    out["command"] = gr.Textbox(label="The same edit on the command line", interactive=False, elem_id="command")
    out["record"] = gr.JSON(label="Record", elem_id="record", open=False)
    return out


def _sweep_tab(gr, app: App) -> dict:
    from date_edit.sweep import default_evaluator

    s = {}
    with gr.Row():
        s["skips"] = gr.Textbox(SWEEP_FORM["skips"], label="Skips", elem_id="sweep-skips")
        s["cfgs"] = gr.Textbox(SWEEP_FORM["cfgs"], label="CFG targets", elem_id="sweep-cfgs")
        s["date_mode"] = gr.Radio(["both", "off", "on"], value=SWEEP_FORM["date_mode"], label="DATE",
                                  elem_id="sweep-date")
        s["evaluator"] = gr.Textbox(default_evaluator(app.model), label="Evaluator (held out)",
                                    elem_id="sweep-evaluator")
    s["run"] = gr.Button("Sweep", variant="primary", elem_id="sweep-button")
    s["grid"] = gr.Image(label="Grid", format="png", interactive=False, elem_id="sweep-grid")
    s["rows"] = gr.Dataframe(headers=SWEEP_COLUMNS, interactive=False, elem_id="sweep-table")
    s["download"] = gr.File(label="Download: the grid with its record", interactive=False)
    s["record"] = gr.JSON(label="Sweep record", open=False)
    return s


def build(app: App):
    """The gradio Blocks of the app (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    with gr.Blocks(title=f"date-edit: {app.model}", analytics_enabled=False) as demo:
        gr.Markdown(f"### date-edit: text-guided photo editing with DATE (model: `{app.model}`)\n{INTRO}")
        start = app.load_sample(app.default_sample())  # the toy model opens on its red circle
        photo = gr.State(start.get("photo"))
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Photo (any image file)", file_types=["image"], type="filepath",
                                 elem_id="photo-file", height=120)
                sample = gr.Dropdown(app.samples(), value=app.default_sample() if start.get("photo") else None,
                                     label="or a sample", elem_id="sample")
                editor = gr.ImageEditor(start.get("editor"), type="pil",
                                        label="Source (paint the mask here when Mask is 'painted')",
                                        sources=(), transforms=(), layers=False, elem_id="editor", height=320,
                                        brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed"))
                editor.convert_and_format_image = _size_checked(gr, editor.convert_and_format_image)
                source_prompt = gr.Textbox(label="Source prompt (what the photo shows)", elem_id="source-prompt")
                prompt = gr.Textbox(label="Target prompt (what it should become)", elem_id="target-prompt")
                with gr.Row():
                    edit_btn = gr.Button("Edit", variant="primary", elem_id="edit-button")
                    recon_btn = gr.Button("Reconstruct", elem_id="reconstruct-button")
                status = gr.Textbox(label="Status", interactive=False, elem_id="status", lines=2)
            with gr.Column(scale=1):
                with gr.Tab("Edit"):
                    out = _edit_tab(gr)
                with gr.Tab("Sweep"):
                    sweep = _sweep_tab(gr, app)
        controls = _controls(gr, app)
        form = {"source_prompt": source_prompt, "prompt": prompt,
                **{k: controls[k] for k in FORM if k in controls}}
        _wire(gr, demo, app, photo, upload, sample, editor, status, form, controls, out, sweep,
              edit_btn, recon_btn)
    guard_requests(gr, demo)
    return demo


def _wire(gr, demo, app, photo, upload, sample, editor, status, form, controls, out, sweep, edit_btn, recon_btn):
    """Connect the events to the handlers; every event that runs the model shares one queue slot."""
    model_slot = {"concurrency_limit": 1, "concurrency_id": "model"}
    loaded = {"photo": photo, "editor": editor, "status": status, "source_prompt": form["source_prompt"]}

    def pick(result: dict, components: dict) -> dict:
        return {components[k]: v for k, v in result.items() if k in components}

    def on_photo(path):  # the upload box is emptied again, ready for the next photo (the editor shows this one)
        return {**pick(app.load_photo(path), loaded), upload: None}

    def on_sample(name):
        return pick(app.load_sample(name), loaded)

    def on_edit(values, progress=gr.Progress()):
        result = app.edit(values[photo], values[editor], {k: values[c] for k, c in form.items()},
                          progress=_bar(progress))
        if "plot" in result:
            result["plot"] = _frame(result["plot"])
        return pick(result, {**out, "status": status})

    def on_reconstruct(values, progress=gr.Progress()):
        result = app.reconstruct(values[photo], {k: values[c] for k, c in form.items()}, progress=_bar(progress))
        return pick(result, {"reconstruction": out["reconstruction"], "status": status})

    def on_sweep(values, progress=gr.Progress()):
        grid = {k: values[sweep[k]] for k in SWEEP_FORM}
        result = app.sweep(values[photo], values[editor], {k: values[c] for k, c in form.items()}, grid,
                           progress=_bar(progress))
        return pick(result, {**{k: sweep[k] for k in ("grid", "rows", "download", "record")}, "status": status})

    inputs = {photo, editor, *form.values()}
    upload.upload(on_photo, upload, [*loaded.values(), upload])
    sample.change(on_sample, sample, list(loaded.values()))
    edit_btn.click(on_edit, inputs, [*out.values(), status], **model_slot)
    recon_btn.click(on_reconstruct, inputs, [out["reconstruction"], status], **model_slot)
    sweep["run"].click(on_sweep, inputs | {sweep[k] for k in SWEEP_FORM},
                       [sweep["grid"], sweep["rows"], sweep["download"], sweep["record"], status], **model_slot)
    controls["randomise"].click(lambda: random.randrange(2 ** 32), None, controls["seed"])
    for trigger in (controls["p2p"], controls["mask"]):
        trigger.change(app.default_cfg_target, [controls["p2p"], controls["mask"]], controls["cfg_target"])

    def on_method(method):
        return pick(app.method_defaults(method), controls)

    controls["edit_method"].change(on_method, controls["edit_method"],
                                   [controls[k] for k in ("steps", "skip", "cfg_source", "cfg_target")])


def launch(demo, app: App, host: str, port: int, share: bool, **kwargs) -> None:
    """Serve the app on ``host`` (an IPv6 address too, bracketed for gradio) and ``port``, one model request at a
    time (gradio's queue), until interrupted; a port taken meanwhile is one line (exit 2)."""
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(server_name=f"[{host}]" if ":" in host else host, server_port=port, share=share,
                    allowed_paths=[str(app.out_dir)], quiet=True, ssr_mode=False, show_error=False,
                    footer_links=["gradio"], css=CSS, **kwargs)
    except OSError as exc:
        raise CliError(f"cannot serve on {printable(host)} port {port} ({_one_line(exc, 80)}); choose another "
                       "--port", EXIT_USAGE) from None
