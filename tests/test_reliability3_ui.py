"""Issue 36, "Reliability, round three": the web app (``date-edit ui``), items 7, 9 and 16.

7: a painted layer is size-checked before it is decoded, nothing is saved for a refused one, and no message shows a
server path. 9: a bad ``--host`` or a busy ``--port`` is one line and exit 2 before the model loads; an IPv6
address serves. 16: a request the app refuses is one line in the server's log, never a traceback. The handlers
in-process on the toy model; two real ``date-edit ui`` processes for item 9; one in-process server on loopback,
driven by gradio's client, whose stderr is the log for item 16.
"""

import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RED_CIRCLE = ROOT / "samples" / "toy" / "red_circle.png"
FORM = {"source_prompt": "a red circle", "prompt": "a blue circle", "steps": 8, "date": False}
BIG = 12000  # the layer: 12000x12000 = 144 megapixels


def header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width`` x ``height`` but whose pixel data is a few bytes: reading its size is
    instant, decoding it fails (so a size check that decodes first shows)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def one_line(status: str) -> str:
    assert status.startswith("error: ") and "\n" not in status and "Traceback" not in status, status
    return status


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]




# --------------------------------------------------------------------- item 7: the painted layer's size; paths


def test_a_painted_layer_over_the_pixel_budget_is_refused_unread_and_nothing_is_saved(app, tmp_path, capsys):
    """A 12000x12000 layer was decoded (1.28 -> 3.55 GB), saved to the app's folder, then refused naming the
    server's temporary path. Its size is read from the header now: refused at once (this PNG cannot even be
    decoded), by its role, nothing written."""
    photo = app.load_photo(str(RED_CIRCLE))["photo"]
    big = header_only_png(tmp_path / "layer.png", BIG, BIG)
    for run in (lambda layer: app.edit(photo, {"layers": [layer]}, {**FORM, "mask": "painted"}),
                lambda layer: app.sweep(photo, {"layers": [layer]}, {**FORM, "mask": "painted"}, {})):
        with Image.open(big) as layer:
            status = one_line(run(layer)["status"])
        assert status == (f"error: the painted mask is {BIG}x{BIG} = 144,000,000 pixels, over the limit of "
                          "40,000,000 (the photo's); paint on the photo as the app shows it"), status
    assert not any(app.out_dir.iterdir()) and app.inversions == {}
    log = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": ", 2)[:2] for line in log] == [["date-edit", "edit"], ["date-edit", "sweep"]], log


def test_messages_name_uploads_by_name_or_role_never_by_server_path(app, tmp_path, capsys, monkeypatch):
    from date_edit_cli import ui_app
    from date_edit_cli.ui_app import App, command_line, public

    photo = app.load_photo(str(RED_CIRCLE))["photo"]
    painted = {"layers": [Image.fromarray(np.full((4, 4, 4), 255, np.uint8), "RGBA")]}  # saved, then refused
    small = one_line(app.edit(photo, painted, {**FORM, "mask": "painted"})["status"])
    assert small.startswith("error: the painted mask is too small (4x4 px)"), small
    assert not list(app.out_dir.glob("painted_mask*"))  # the app's folder keeps no mask (removed after each edit)
    mask = str(app.out_dir / "painted_mask_1.png")
    command = command_line("edit", [photo, "a b", "--mask", mask], photo, mask)
    assert command == "date-edit edit red_circle.png 'a b' --mask painted-mask.png", command

    def boom(self, *args):
        raise RuntimeError(f"cannot open {self.out_dir / 'x.bin'} or {Path(photo).parent / 'y.bin'}")

    monkeypatch.setattr(App, "_load", boom)
    bug = one_line(app.edit(photo, None, FORM)["status"])
    assert "This is a bug" in bug and "x.bin" in bug and "/" not in bug.replace("/rho", ""), bug
    shown = [small, bug, command]
    for server_path in (str(app.out_dir), str(tmp_path), ui_app.tempfile.gettempdir() + "/", str(ROOT)):
        assert not any(server_path in text for text in shown), (server_path, shown)
    log = capsys.readouterr().err.strip().splitlines()
    assert len(log) == 2 and log[1].startswith("date-edit: edit: error: unexpected RuntimeError") and \
        "the traceback is in /" in log[1], log  # the operator's log says where; the browser does not
    assert public("see /tmpfoo/a and /tmp/gradio/abc/photo.png", prefixes=["/tmp"]) == "see /tmpfoo/a and photo.png"


# --------------------------------------------------------------------- item 9: --host and --port, before the model


def ui_process(checkout_env, cwd, *args):
    code = "import sys; from date_edit_cli.main import run; sys.argv[0] = 'date-edit'; run()"
    return subprocess.run([sys.executable, "-c", code, "ui", "--model", "tiny", *map(str, args)], cwd=cwd,
                          env=checkout_env, capture_output=True, text=True, timeout=120)


def test_a_busy_port_or_a_bad_host_is_one_line_and_exit_2_before_the_model_loads(checkout_env, tmp_path):
    """Both said "This is a bug" (exit 1) after the model had loaded; the model's note ("--model tiny has random
    weights") now never appears."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = ui_process(checkout_env, tmp_path, "--port", port)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (f"date-edit: error: --port {port} is in use on 127.0.0.1 (another server is "
                                  "listening there); choose another --port or stop that server"), out.stderr
    out = ui_process(checkout_env, tmp_path, "--host", "local host")
    assert out.returncode == 2 and out.stderr.strip() == (
        "date-edit: error: --host 'local host' is not a host name or an address; use 127.0.0.1 (this machine "
        "only) or 0.0.0.0 (every interface)"), out.stderr


def test_host_and_port_checks_in_process():
    from date_edit_cli.running import CliError
    from date_edit_cli.ui_cmd import check_address

    for host in ("999.1.1.1", "no-such-host.invalid", "a" * 300, "", "x\x00y", "[::1", "192.0.2.1"):
        with pytest.raises(CliError) as info:
            check_address(host, free_port())
        assert info.value.code == 2 and "--host" in str(info.value) and "\n" not in str(info.value), host
    check_address("localhost", free_port())
    if socket.has_ipv6:
        try:
            port = free_port("::1")
        except OSError:
            return  # no IPv6 on this machine
        check_address("::1", port)
        check_address("[::1]", port)


# --------------------------------------------------------------------- item 16: the server's log


@pytest.mark.slow
def test_rejected_requests_are_one_line_each_in_the_server_log(app, tmp_path, capfd):
    """21 requests refused as bad input left 21 gradio tracebacks in the log. A real server (in this process, on
    loopback, IPv6 where the machine has it: ``--host ::1`` serves) gets five bad requests through gradio's client:
    a sample that is not one, a step count under the minimum, a layer too large, a layer that is not an image, a
    photo that is not one. Each is one ``date-edit:`` line in the log and nothing else."""
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    from date_edit_cli.ui_layout import build, launch

    host = "::1" if socket.has_ipv6 else "127.0.0.1"
    try:
        port = free_port(host)
    except OSError:
        host, port = "127.0.0.1", free_port()
    demo = build(app)
    launch(demo, app, host, port, False, prevent_thread_lock=True)
    try:
        client = Client(f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/", verbose=False)
        capfd.readouterr()
        inputs = next(fn for fn in demo.fns.values() if fn.name == "on_edit").inputs
        big = header_only_png(tmp_path / "big.png", BIG, BIG)
        text = tmp_path / "layer.png"
        text.write_text("not an image\n")

        def edit(layer, **form):
            values = {"editor": {"background": handle_file(RED_CIRCLE), "layers": [handle_file(layer)],
                                 "composite": handle_file(RED_CIRCLE)},
                      "source-prompt": FORM["source_prompt"], "target-prompt": FORM["prompt"], "steps": 8,
                      "mask": "painted", **form}
            data = [values.get(c.elem_id, c.value) for c in inputs if not c.stateful]
            return client.predict(*data, api_name="/on_edit")

        refused = []
        for request in (lambda: client.predict("../../etc/passwd", api_name="/on_sample"),
                        lambda: edit(RED_CIRCLE, steps=-5), lambda: edit(big), lambda: edit(text),
                        lambda: client.predict(handle_file(text), api_name="/on_photo")):
            try:
                refused.append(str(request()))
            except Exception as exc:  # noqa: BLE001 - gradio's client raises what the page would show
                refused.append(f"{type(exc).__name__}: {exc}")
        log = capfd.readouterr().err
    finally:
        demo.close()
    lines = log.strip().splitlines()
    assert "Traceback" not in log and len(lines) == 5 and all(x.startswith("date-edit: ") for x in lines), log
    assert "is not in the list of choices" in lines[0] and "less than minimum value 1" in lines[1], lines
    assert lines[2] == (f"date-edit: edit: error: the painted mask is {BIG}x{BIG} = 144,000,000 pixels, over the "
                        "limit of 40,000,000 (the photo's); paint on the photo as the app shows it"), lines
    assert "is not an image the app can read" in lines[3] and "cannot be decoded" in lines[4], lines
    assert not any(str(tmp_path) in r or str(app.out_dir) in r for r in refused), refused
    assert not list(app.out_dir.glob("painted_mask*"))
