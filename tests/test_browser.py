"""Real-browser test of the prompt probe: JupyterLab on localhost, Debian's Chromium driven by Playwright.

Opens nbs/experiments/probe_prompts.ipynb (a temp copy with tiny parameters), runs all cells, types a new
prompt into the widget's text area and checks that the displayed score table changes; saves a screenshot.
Skipped (with the reason) where /usr/bin/chromium or the playwright package is absent; `tools/install_browser.sh`
installs Chromium in CI. Set OVSTAD_SCREENSHOT_DIR to also keep the screenshot there (e.g. reports/figures).
"""
import json, os, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM = Path('/usr/bin/chromium')
NB = ROOT/'nbs'/'experiments'/'probe_prompts.ipynb'
CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update', '--disable-sync']

pytestmark = pytest.mark.browser

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _wait_http(url, proc, timeout=90):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f'jupyter lab exited with {proc.returncode}')
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200: return
        except OSError: time.sleep(0.5)
    raise TimeoutError(f'{url} did not answer in {timeout}s')

@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server (token off, root = a temp folder with a parameterized copy of the probe notebook)."
    if not CHROMIUM.exists(): pytest.skip(f'{CHROMIUM} is absent (tools/install_browser.sh installs Debian chromium)')
    pytest.importorskip('playwright.sync_api', reason="the playwright package is absent (pip install -e '.[browser]')")
    import nbformat
    from ovstad.explore import _toy_video
    work = tmp_path/'lab'; work.mkdir()
    video = _toy_video(work/'walk.mp4', n=24)
    nb = nbformat.read(NB, as_version=4)
    params = dict(checkpoint='smoke', clip=str(video), box_source='detector',
                  prompts='a person walking\na person waving', out_dir=str(tmp_path/'figs'))
    k = next(i for i, c in enumerate(nb.cells) if 'parameters' in c.get('metadata', {}).get('tags', []))
    nb.cells.insert(k + 1, nbformat.v4.new_code_cell('\n'.join(f'{n} = {v!r}' for n, v in params.items())))
    nbformat.write(nb, work/'probe_prompts.ipynb')
    settings = tmp_path/'user-settings'/'@jupyterlab'/'apputils-extension'
    settings.mkdir(parents=True)
    (settings/'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}
    env.update(HF_HUB_OFFLINE='1', JUPYTER_RUNTIME_DIR=str(tmp_path/'runtime'), JUPYTER_PLATFORM_DIRS='1',
               PATH=f"{BIN}:{env.get('PATH', '')}")
    cmd = [str(BIN/'jupyter'), 'lab', '--no-browser', f'--port={port}', '--ip=127.0.0.1',
           '--IdentityProvider.token=', '--ServerApp.password=', '--ServerApp.disable_check_xsrf=True',
           '--ServerApp.terminals_enabled=False', '--LabApp.extension_manager=readonly',
           f'--ServerApp.root_dir={work}', f'--LabApp.user_settings_dir={tmp_path/"user-settings"}',
           f'--LabApp.workspaces_dir={tmp_path/"workspaces"}'] + (['--allow-root'] if os.geteuid() == 0 else [])
    log = open(tmp_path/'lab.log', 'w')
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    try:
        _wait_http(f'http://127.0.0.1:{port}/api/status', proc)
        yield dict(url=f'http://127.0.0.1:{port}', tmp=tmp_path, log=tmp_path/'lab.log')
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()

def test_probe_widget_in_chromium(lab):
    from playwright.sync_api import sync_playwright
    shot = lab['tmp']/'probe_widget.png'
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(lab['tmp']/'chrome-profile'), executable_path=str(CHROMIUM),
                                                   headless=True, args=CHROME_ARGS, viewport={'width': 1400, 'height': 1000})
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{lab['url']}/lab/tree/probe_prompts.ipynb")
            page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=90_000)
            try:  # JupyterLab may ask which kernel to start: accept its (the notebook's) choice
                page.locator('.jp-Dialog .jp-mod-accept').first.click(timeout=15_000)
            except Exception: pass
            page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', state='attached', timeout=90_000)
            page.locator('.lm-MenuBar-itemLabel', has_text='Run').first.click()
            page.locator('.lm-Menu-itemLabel', has_text='Run All Cells').first.click()
            table = page.locator('.jp-OutputArea table.ovstad-scores').first
            table.wait_for(state='visible', timeout=240_000)
            before = table.inner_text()
            assert 'a person waving' in before
            box = page.locator('.jp-OutputArea .widget-textarea textarea').first
            box.scroll_into_view_if_needed()
            box.fill('a person walking\na person clapping both hands')
            box.blur()
            page.wait_for_function("(old) => { const t = document.querySelector('.jp-OutputArea table.ovstad-scores');"
                                   " return t && t.innerText !== old && t.innerText.includes('clapping'); }", arg=before, timeout=60_000)
            after = table.inner_text()
            assert after != before and 'a person clapping both hands' in after and 'a person waving' not in after
            status = page.locator('.jp-OutputArea .ovstad-status').first.inner_text()
            assert not status.startswith(('error', 'unexpected')), status
            page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', state='attached', timeout=60_000)
            table.scroll_into_view_if_needed()
            page.screenshot(path=str(shot), full_page=False)
        except Exception:
            page.screenshot(path=str(lab['tmp']/'failure.png'))
            print(Path(lab['log']).read_text()[-3000:])
            raise
        finally:
            ctx.close()
    assert shot.stat().st_size > 10_000
    keep = os.environ.get('OVSTAD_SCREENSHOT_DIR')
    if keep: Path(keep).mkdir(parents=True, exist_ok=True); shutil.copy(shot, Path(keep)/'probe_widget_browser.png')
