"""The head explorer notebook in a real browser: JupyterLab on localhost, headless Chromium via Playwright.

What it does: copies notebooks/09_head_explorer.ipynb into a temporary folder (so that JupyterLab's
autosave never writes outputs into the repository), starts ``jupyter lab --no-browser`` on a free port of
127.0.0.1 with a random token and ``VH_FAST=1``, opens the notebook in Debian's Chromium driven by
Playwright, runs Run > Run All Cells, waits for the explorer's attention map (an ``<img>`` inside
``.vh-head-explorer``), clicks one top-head button and checks that the attention map's ``src`` and the
"current head" label change. A screenshot is written to ``$VH_FIGURES/09_browser.png``.

How CI runs it: ``.ci/run`` -> ``scripts/test.sh``, which installs Chromium when ``chromium`` is missing
(``apt-get install -y chromium``; Debian's package, no browser download by Playwright) and the ``dev``
extra (which holds the ``playwright`` Python package: its bundled driver, no ``playwright install``),
then runs pytest, which collects this file. ``VH_CHROMIUM`` overrides the browser path (default
``/usr/bin/chromium``, else ``chromium`` on PATH). The kernel is the ``python3`` kernel of the test's
Python; ``PYTHONPATH`` is set to the repository so the kernel imports this checkout's ``helpers``.

Slow (90 s measured on the shared 2-core machine under load: JupyterLab and Chromium start, the notebook loads the
CPU default organism, reads its score map from the extraction cache or computes it, and runs the shown samples):
the one browser test of the suite.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "09_head_explorer.ipynb"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    path = os.environ.get("VH_CHROMIUM") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                             else shutil.which("chromium"))
    if not path:
        pytest.fail("Chromium not found: install Debian's package (apt-get install -y chromium; scripts/test.sh "
                    "does this) or set VH_CHROMIUM to a Chromium binary")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SETTINGS = {  # no kernel dialog, no news pop-up
    "@jupyterlab/notebook-extension/tracker": '{"autoStartDefaultKernel": true}',
    "@jupyterlab/apputils-extension/notification": '{"fetchNews": "false", "checkForUpdates": false}',
}


def start_lab(folder: Path, port: int, token: str, log: Path) -> subprocess.Popen:
    for name, text in SETTINGS.items():
        path = folder / "settings" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = dict(os.environ, VH_FAST="1", VH_FIGURES=str(folder / "figures"), PYTHONPATH=str(ROOT),
               HF_HUB_OFFLINE="1", JUPYTER_CONFIG_DIR=str(folder / "config"), JUPYTER_RUNTIME_DIR=str(folder / "rt"),
               TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={folder}", "--ServerApp.allow_root=True",
           "--ServerApp.port_retries=0", f"--LabApp.workspaces_dir={folder / 'workspaces'}",
           f"--LabApp.user_settings_dir={folder / 'settings'}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    return subprocess.Popen(cmd, cwd=folder, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for_server(proc: subprocess.Popen, url: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer {url} within {timeout} s:\n{log.read_text()[-3000:]}")


def test_explorer_notebook_renders_and_reacts_in_jupyterlab(tmp_path):
    """Slow (about 90 s): JupyterLab + headless Chromium + the notebook's model runs; see the module docstring."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    port, token = free_port(), secrets.token_hex(16)
    log = tmp_path / "lab.log"
    lab = start_lab(tmp_path, port, token, log)
    shots = Path(os.environ.get("VH_FIGURES", tmp_path / "figures"))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        wait_for_server(lab, f"http://127.0.0.1:{port}/api/status?token={token}", log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                page.goto(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?token={token}", timeout=60_000)
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
                # wait until the kernel is connected (status "Idle" in the notebook toolbar), then Run All
                page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
                page.wait_for_selector(".jp-StatusBar-TextItem:has-text('Idle')", timeout=60_000)
                page.wait_for_timeout(1500)  # let the session settle (kernel info, comm targets)
                if page.locator(".jp-Dialog").count():  # a kernel dialog despite the settings: accept it
                    page.click(".jp-Dialog .jp-mod-accept")
                page.click(".lm-MenuBar-item:has-text('Run')")
                page.click("[data-command='runmenu:run-all']")
                image = page.locator(".vh-head-explorer img.vh-attention-map")
                image.wait_for(state="visible", timeout=120_000)
                info = page.locator(".vh-head-explorer .vh-info")
                # the last cell selects the top heads and masks them: wait for its result in the widget
                page.wait_for_selector(".vh-mask-result:has-text('masked (')", timeout=120_000)
                src, label = image.get_attribute("src"), info.inner_text()
                assert src and src.startswith(("blob:", "data:image/png"))
                assert "query row" in label and "gold answer" in label
                page.screenshot(path=str(shots / "09_browser_before.png"))
                button = page.locator(".vh-head-explorer .vh-top-head").last
                head = button.inner_text().split(":")[0]  # e.g. "L1 H3"
                button.click()
                page.wait_for_function(
                    "([sel, old]) => { const e = document.querySelector(sel); return e && e.src !== old; }",
                    arg=[".vh-head-explorer img.vh-attention-map", src], timeout=30_000)
                page.wait_for_selector(f".vh-head-explorer .vh-info:has-text('current {head}')", timeout=30_000)
                assert f"current {head}" in info.inner_text() and f"current {head}" not in label
                page.screenshot(path=str(shots / "09_browser.png"))
            except Exception:
                page.screenshot(path=str(shots / "09_browser_failed.png"))
                print(f"screenshot: {shots / '09_browser_failed.png'}\njupyter lab log:\n{log.read_text()[-4000:]}")
                raise
            finally:
                browser.close()
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
            lab.wait()
