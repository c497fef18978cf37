"""Run every library notebook in nbs/ with nbdev-test (one pytest test per notebook).

nbdev-test honours `#|` directives (export, hide, eval: false, tst_flags) that nbmake/nbval ignore.
Set OVSTAD_NB_FLAGS (e.g. "slow") to also run cells carrying those tst_flags.
"""
import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith(('_', '.')))
BIN = Path(sys.executable).parent

@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    cmd = [str(BIN/'nbdev-test'), str(nb), '--n-workers', '1', '--do-print']
    flags = os.environ.get('OVSTAD_NB_FLAGS')
    if flags: cmd += ['--flags', flags]
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'MPLBACKEND': 'agg'}
    r = subprocess.run(cmd, cwd=ROOT/'nbs', capture_output=True, text=True, env=env, timeout=1200)
    assert r.returncode == 0, f"nbdev-test failed for {nb.name}:\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}"
