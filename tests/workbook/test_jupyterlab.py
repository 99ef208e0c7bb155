"""The workbook as a user meets it: JupyterLab in a real browser.

Starts JupyterLab from the project's venv (free localhost port, no token) on a fresh **workbook copy** in a
temporary folder (its own ``.molre-root``, ``notebooks/`` = copies of the shipped notebooks), and drives Debian's
Chromium headless with Playwright (``executable_path``; Playwright never downloads a browser). Like a person,
it opens each notebook from the file browser, checks it is not marked modified, runs all cells from the Run
menu and waits for the kernel. JupyterLab cannot inject parameters, so the copies differ from the shipped
notebooks only in their parameters cells: tiny sizes (00: 36 scans of 8 x 48 x 48; 01: reduced phantom_vit,
one epoch, LoRA and MoLRE) and fewer bootstrap replicates; every *path* keeps its shipped relative default
("runs/demo/...", "figures/demo/..."). With the kernel in ``notebooks/``, those defaults must resolve against
the workbook root, which is what a user gets after ``make demo``.

Checks per notebook: no traceback in any output, every cell that saves a figure shows a rendered image, and
nothing was written under ``notebooks/``. In 04 the viewer widget renders (not "Error displaying widget" /
"Loading widget...") and every control — slice slider, window, finding, CAM opacity, routing toggle, lesion
outline, mouse wheel — changes the displayed image. Screenshots of each notebook's end state and of the viewer
after each control go to ``runs/test-artifacts/jupyterlab/`` (printed at the end).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "runs" / "test-artifacts" / "jupyterlab"
CHROMIUM = os.environ.get("MOLRE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage"]

# notebook copy -> (shipped notebook, parameter overrides); paths are never overridden
TINY_TRAIN = dict(RANK=2, EPOCHS=1, BATCH_SIZE=8, PRETRAINED=False, REDUCED=True, EVAL_BOOTSTRAP=10, DEVICE="cpu")
PLAN = [
    ("00_data.ipynb", "00_data", dict(N_SCANS=36, SHAPE=[8, 48, 48], PREVALENCE_SCALE=2.5)),
    ("01_train_lora.ipynb", "01_train", dict(TINY_TRAIN, ADAPTER="lora", N_EXPERTS=1,
                                             RUN_DIR="runs/demo/phantom_vit_lora_seed0",
                                             FIGURES_DIR="figures/demo/phantom_vit_lora_seed0/01_train")),
    ("01_train.ipynb", "01_train", dict(TINY_TRAIN, ADAPTER="molre", N_EXPERTS=3)),
    ("02_routing.ipynb", "02_routing", dict(MAX_SCANS=6, TOKEN_SCANS=4, PERMUTATIONS=20, DEVICE="cpu")),
    ("03_per_finding_auc.ipynb", "03_per_finding_auc", dict(BOOTSTRAP=20)),
    ("04_gradcam.ipynb", "04_gradcam", dict(FINDINGS=["intracranial_hemorrhage", "cerebral_atrophy"], N_EXAMPLES=1,
                                            MAX_SCANS=3, METHODS=["gradcam"], BOOTSTRAP=20, DEVICE="cpu")),
    ("05_summary.ipynb", "05_summary", dict(BOOTSTRAP=20)),
]
RUN_TIMEOUT_S = 900  # per notebook; a quiet 2-core machine needs well under a minute for each


def _set_parameters(nb: dict, overrides: dict) -> None:
    """Replace the values of ``overrides`` in the parameters cell (names the cell lacks are skipped), keeping
    each line's comment, so the copy is the shipped notebook with other literals."""
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    lines = "".join(cell["source"]).splitlines(keepends=True)
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Z][A-Z0-9_]*)(\s*=\s*)(.*?)(\s+#.*)?(\n?)$", line)
        if m and m.group(1) in overrides:
            value = overrides[m.group(1)]
            lines[i] = f"{m.group(1)}{m.group(2)}{value!r}{m.group(4) or ''}{m.group(5)}"
    cell["source"] = lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workbook(tmp_path_factory) -> Path:
    book = tmp_path_factory.mktemp("workbook")
    (book / ".molre-root").write_text("")
    (book / "notebooks").mkdir()
    for copy, shipped, overrides in PLAN:
        nb = json.loads((NOTEBOOKS / f"{shipped}.ipynb").read_text())
        _set_parameters(nb, overrides)
        (book / "notebooks" / copy).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return book


@pytest.fixture(scope="module")
def lab(workbook, tmp_path_factory):
    """JupyterLab on the workbook copy: yields its URL; settings and workspaces in a temporary folder."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`; .ci/run does it) "
                    "or point MOLRE_CHROMIUM at a Chromium binary")
    from jupyter_client.kernelspec import KernelSpecManager

    if "molre" not in KernelSpecManager().find_kernel_specs():
        pytest.fail("Jupyter kernel 'molre' is not installed: run `make install` (it registers it)")
    state = tmp_path_factory.mktemp("lab-state")
    port = _free_port()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"), "MOLRE_CACHE_DIR": str(state / "cache"),
           "JUPYTER_RUNTIME_DIR": str(state / "runtime")}
    env.pop("MOLRE_ROOT", None)
    # render every cell (JupyterLab 4 virtualises off-screen cells by default), so outputs can be read
    tracker = state / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    news = state / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True}))  # no toasts
    log = open(state / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={workbook}",
         f"--LabApp.workspaces_dir={state / 'workspaces'}", "--ServerApp.open_browser=False", "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=workbook, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: see {state / 'jupyterlab.log'}:\n"
                                       + (state / "jupyterlab.log").read_text()[-2000:])
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{lab}/lab?reset")
        page.wait_for_selector(".jp-DirListing-content", timeout=60_000)
        no = page.locator(".jp-Notification-Toast button:text-is('No')")
        if no.count():
            no.first.click()  # the "official Jupyter news?" question, if settings did not silence it
        yield page
        context.close()
        browser.close()


def _open_from_file_browser(page, name: str) -> None:
    """Double-click a folder / file in the left file browser, as a person does."""
    text = page.locator(".jp-DirListing-itemText > span", has_text=re.compile(f"^{re.escape(name)}$"))
    item = page.locator(".jp-DirListing-item", has=text).first
    item.wait_for(timeout=60_000)
    item.dblclick()


def _active_notebook(page):
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").last


def _wait_kernel_idle(page, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        busy = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt:has-text('[*]')").count()
        status = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator")
        idle = status.count() == 0 or (status.first.get_attribute("data-status") or "idle") == "idle"
        if busy == 0 and idle:
            return
        time.sleep(1.0)
    raise AssertionError(f"kernel still busy after {timeout_s:.0f} s")


def _run_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel:text-is('Run')").click()
    page.locator(".lm-Menu-itemLabel:text-is('Run All Cells')").click()


def _kernel_ready(page, timeout_s: float = 90) -> None:
    """Wait until the notebook's kernel is started and idle (the toolbar's kernel status)."""
    page.wait_for_function(
        """() => { const p = [...document.querySelectorAll('.jp-NotebookPanel')].filter(
                        e => !e.classList.contains('lm-mod-hidden')).pop();
                   if (!p) return false;
                   const s = p.querySelector('.jp-Notebook-ExecutionIndicator');
                   const name = p.querySelector('.jp-KernelName, .jp-Toolbar-kernelName');
                   return s && s.getAttribute('data-status') === 'idle' && name && !/No Kernel/.test(name.textContent); }""",
        timeout=timeout_s * 1000)


def _shut_down_kernels(lab: str) -> None:
    sessions = json.loads(urllib.request.urlopen(f"{lab}/api/sessions").read())
    for s in sessions:
        req = urllib.request.Request(f"{lab}/api/sessions/{s['id']}", method="DELETE")
        urllib.request.urlopen(req).read()


def _image_src(viewer) -> str:
    return viewer.locator("img").first.get_attribute("src") or ""


def _changes_image(page, viewer, action, what: str) -> None:
    before = _image_src(viewer)
    action()
    deadline = time.time() + 20
    while time.time() < deadline:
        if _image_src(viewer) != before:
            return
        time.sleep(0.25)
    raise AssertionError(f"viewer: {what} did not change the image")


def _check_viewer(page, shots: Path) -> list[str]:
    viewer = page.locator(".widget-hbox", has=page.locator("img")).last
    viewer.scroll_into_view_if_needed()
    text = viewer.inner_text()
    assert "Error displaying widget" not in text and "Loading widget" not in text, text[:300]
    img = viewer.locator("img").first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    size = img.bounding_box()
    sliders = viewer.locator(".widget-slider")
    selects = viewer.locator("select")
    checked = []

    def press(slider, key):
        def act():
            handle = slider.locator(".noUi-handle").first
            handle.focus()
            handle.press(key)
        return act

    steps = [
        ("slice slider", press(sliders.nth(0), "ArrowRight")),
        ("window", lambda: selects.nth(0).select_option(index=2)),
        ("finding", lambda: selects.nth(1).select_option(index=2)),
        ("CAM opacity", press(sliders.nth(1), "ArrowLeft")),
        ("mouse wheel", lambda: (img.hover(), page.mouse.wheel(0, 120))),
    ]
    toggle = viewer.locator("button.widget-toggle-button")
    if toggle.count() and toggle.first.is_enabled():
        steps.append(("routing toggle", lambda: toggle.first.click()))
    outline = viewer.locator(".widget-checkbox input")
    if outline.count() and outline.first.is_enabled():
        steps.append(("lesion outline", lambda: outline.first.click()))
    for i, (what, action) in enumerate(steps):
        _changes_image(page, viewer, action, what)
        viewer.screenshot(path=str(shots / f"04_viewer_{i}_{what.replace(' ', '_')}.png"))
        box = viewer.locator("img").first.bounding_box()
        assert (round(box["width"]), round(box["height"])) == (round(size["width"]), round(size["height"])), \
            f"viewer image changed size after {what}"
        checked.append(what)
    if toggle.count() and toggle.first.is_enabled():
        assert "ON" in toggle.first.inner_text()
    return checked


@pytest.mark.slow
def test_notebooks_run_in_jupyterlab(workbook, lab, page) -> None:
    start = time.time()
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    report = {}
    _open_from_file_browser(page, "notebooks")
    for copy, shipped, _ in PLAN:
        try:
            report[copy] = _run_notebook_in_lab(page, workbook, copy, shipped)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"{Path(copy).stem}_FAILED.png"))
            raise
        _shut_down_kernels(page.url.split("/lab")[0])
    assert (workbook / "runs" / "demo" / "phantom_vit_molre_seed0" / "metrics.json").is_file()
    report["total_seconds"] = round(time.time() - start, 1)
    (ARTIFACTS / "report.json").write_text(json.dumps(report, indent=1))
    print(f"\nJupyterLab test: screenshots and report.json in {ARTIFACTS} ({report['total_seconds']} s)")


def _run_notebook_in_lab(page, workbook: Path, copy: str, shipped: str) -> dict:
    """Open ``copy`` from the file browser, check it is clean, Run All, check outputs; returns timings."""
    t0 = time.time()
    _open_from_file_browser(page, copy)
    page.wait_for_selector(f".lm-TabBar-tab.lm-mod-current:has-text('{copy}')")
    _kernel_ready(page)
    tab = page.locator(f".lm-TabBar-tab.lm-mod-current:has-text('{copy}')").first
    time.sleep(2.0)  # JupyterLab marks a notebook dirty, if at all, right after the kernel connects
    assert "jp-mod-dirty" not in (tab.get_attribute("class") or ""), f"{copy} is marked modified on open"
    _run_all(page)
    time.sleep(1.0)
    _wait_kernel_idle(page, RUN_TIMEOUT_S)
    panel = _active_notebook(page)
    outputs = panel.locator(".jp-OutputArea-output")
    texts = outputs.all_text_contents()
    page.screenshot(path=str(ARTIFACTS / f"{Path(copy).stem}.png"))
    errors = [t for t in texts if "Traceback" in t or re.search(r"^\w+Error\b", t, re.M)]
    assert not errors, f"{copy}: error output:\n{errors[0][-1500:]}"
    nb = json.loads((workbook / "notebooks" / copy).read_text())
    code_sources = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    cells = panel.locator(".jp-CodeCell")
    assert cells.count() == len(code_sources)
    for i, src in enumerate(code_sources):
        prompt = cells.nth(i).locator(".jp-InputPrompt").first.text_content() or ""
        assert re.search(r"\[\d+\]", prompt), f"{copy}: code cell {i} did not run ({prompt!r})"
        if "save_figure" in src:
            imgs = cells.nth(i).locator(".jp-OutputArea-output img")
            said = " ".join(cells.nth(i).locator(".jp-OutputArea-output").all_text_contents())
            # a figure, or a line saying why there is none (05's tuning figures on an untuned sweep)
            assert imgs.count() >= 1 or re.search(r"\bno [\w ]*figures\b", said), \
                f"{copy}: code cell {i} saves a figure but shows none and does not say why"
            for k in range(imgs.count()):
                ok = imgs.nth(k).evaluate("img => img.complete && img.naturalWidth > 0")
                assert ok, f"{copy}: figure {k} of code cell {i} did not render"
    checked = _check_viewer(page, ARTIFACTS) if shipped == "04_gradcam" else []
    panel.locator(".jp-Cell").last.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"{Path(copy).stem}.png"))
    assert [p.name for p in (workbook / "notebooks").iterdir() if p.suffix != ".ipynb"
            and p.name != ".ipynb_checkpoints"] == [], f"{copy} wrote under notebooks/"
    return {"seconds": round(time.time() - t0, 1), "viewer_controls": checked}
