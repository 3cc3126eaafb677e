"""``date-edit ui --model toy`` in a real browser: headless Chromium (the distribution's ``chromium`` and
``chromium-driver``, which ``make browser`` installs) driven by selenium against the app served by a real
``date-edit ui`` process of this checkout.

One photo, two edits, a reconstruction, a sweep and a bad upload: the toy red circle turns blue in place (the toy
judge reads the result image the page shows), a second edit with only the target prompt changed reuses the
inversion (the status line says ``inversion: cached``) and takes less time, the Sweep tab reuses it too, and a text
file named bad.png shows the CLI's one-line error.
Settings are the app's defaults (the CLI's with a source prompt: Prompt-to-Prompt, an automatic mask, CFG 7.5,
DATE every 10 steps) except Steps, set to 30 in the page to keep the test short. Set ``DATE_EDIT_UI_SCREENSHOT``
to a path to save the page there (docs/ui.png was made so).
"""

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver")
                                               else None)
try:
    import gradio  # noqa: F401
    import selenium  # noqa: F401
except ImportError as exc:
    pytest.skip(f"the browser test needs gradio and selenium ({exc.name} is missing: pip install -e '.[test]')",
                allow_module_level=True)
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("the browser test needs chromium and chromedriver (make browser installs them: apt-get install "
                "chromium chromium-driver)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RED_CIRCLE = ROOT / "samples" / "toy" / "red_circle.png"
START_TIMEOUT, EDIT_TIMEOUT = 90, 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"date-edit ui exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"date-edit ui did not serve {url} within {START_TIMEOUT} s")


@pytest.fixture(scope="module")
def server(checkout_env, tmp_path_factory):
    """A ``date-edit ui --model toy`` process of this checkout on a free port; its URL."""
    port = _free_port()
    code = "import sys; from date_edit_cli.main import run; sys.argv[0] = 'date-edit'; run()"
    # one thread: the app shares the machine's cores with the browser and this test
    env = dict(checkout_env, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "-c", code, "ui", "--model", "toy", "--port", str(port)],
                            cwd=tmp_path_factory.mktemp("ui"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(proc, url)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1700"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _status(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "#status textarea").get_attribute("value") or ""


def _wait_status(driver, text: str, timeout: float = EDIT_TIMEOUT) -> str:
    WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: text in _status(d))
    return _status(driver)


def _type(driver, css: str, text: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, css)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE, text, Keys.TAB)


def _upload(driver, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, "#photo-file input[type=file]").send_keys(str(path))


def _result_image(driver, previous: str = "") -> tuple[np.ndarray, str]:
    """The result image the page shows (fetched from its URL), once its address differs from ``previous``."""
    from PIL import Image

    def src(d):
        found = d.find_elements(By.CSS_SELECTOR, "#result img")
        value = found[0].get_attribute("src") if found else ""
        return value if value and value != previous else False

    url = WebDriverWait(driver, EDIT_TIMEOUT, poll_frequency=0.2).until(src)
    with urllib.request.urlopen(url, timeout=10) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB")), url


def _total_seconds(status: str) -> float:
    return float(re.search(r"total ([0-9.]+) s", status).group(1))


def test_edit_then_a_cached_edit_a_reconstruction_a_sweep_and_a_bad_upload_in_the_browser(server, browser, tmp_path):
    from PIL import Image

    from date_edit.toy.judge import box_iou, evaluate, judge

    browser.get(server)
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo-file input[type=file]"))
    _upload(browser, RED_CIRCLE)
    _wait_status(browser, "photo red_circle.png: 64x64", timeout=30)
    _type(browser, "#source-prompt textarea", "a red circle")
    _type(browser, "#target-prompt textarea", "a blue circle")
    _type(browser, "#steps input", "30")
    browser.find_element(By.ID, "edit-button").click()
    first = _wait_status(browser, "edit 'a blue circle'")
    assert "inversion: computed" in first, first
    image, url = _result_image(browser)
    verdict = evaluate(image, "a blue circle")
    source_box = judge(np.asarray(Image.open(RED_CIRCLE).convert("RGB")))[0].box
    assert verdict["correct"], verdict
    assert max(box_iou(source_box, d.box) for d in verdict["objects"]) >= 0.5  # in place

    _type(browser, "#target-prompt textarea", "a green circle")
    browser.find_element(By.ID, "edit-button").click()
    second = _wait_status(browser, "edit 'a green circle'")
    assert "inversion: cached" in second, second  # no second inversion ran
    assert _total_seconds(second) < _total_seconds(first), (first, second)
    green, _ = _result_image(browser, previous=url)
    assert evaluate(green, "a green circle")["objects"], "the second edit shows an image"
    screenshot = os.environ.get("DATE_EDIT_UI_SCREENSHOT") or str(tmp_path / "ui.png")
    Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(screenshot)

    browser.find_element(By.ID, "reconstruct-button").click()
    _wait_status(browser, "reconstruction: PSNR")
    browser.find_element(By.XPATH, "//button[@role='tab' and normalize-space()='Sweep']").click()
    _type(browser, "#sweep-skips textarea", "0,50%")
    _type(browser, "#sweep-cfgs textarea", "7.5")
    browser.find_element(By.ID, "sweep-button").click()
    swept = _wait_status(browser, "sweep of 4 edits")
    assert "inversion: cached" in swept, swept  # the edits' inversion serves the grid too
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#sweep-grid img"))

    bad = tmp_path / "bad.png"
    bad.write_text("this is a text file, not a PNG\n")
    _upload(browser, bad)
    error = _wait_status(browser, "error:", timeout=30)
    assert error == ("error: bad.png cannot be decoded as an image (not a format Pillow knows); check the file is "
                     "a complete image"), error
    page = browser.find_element(By.TAG_NAME, "body").text
    assert "Traceback" not in page and str(tmp_path) not in page
