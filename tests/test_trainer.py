"""The trainer on its toy problem: a SIGKILLed run resumes to the same weights, 2-process DDP matches 1 process."""
import os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from ovstad.core import OvstadError
from ovstad.trainer import TrainConfig, latest_checkpoint, override, read_metrics

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'MPLBACKEND': 'agg'}

def _toy_script(tmp_path, **kw):
    s = tmp_path/'toy.py'
    s.write_text("import sys, torch\ntorch.set_num_threads(1)\nfrom ovstad.trainer import train_toy\n"
                 f"train_toy(sys.argv[1], **{kw!r})\n")
    return s

def _weights(run_dir):
    return torch.load(latest_checkpoint(run_dir), map_location='cpu', weights_only=True)['model']

def test_sigkill_and_resume_matches_uninterrupted(tmp_path):
    script = _toy_script(tmp_path, steps=40, ckpt_every=10, step_sleep=0.01)
    subprocess.run([sys.executable, str(script), str(tmp_path/'full')], check=True, env=ENV, timeout=120)
    killed = tmp_path/'killed'
    p = subprocess.Popen([sys.executable, str(script), str(killed)], env=ENV)
    deadline = time.time() + 120
    while not (killed/'checkpoints'/'ckpt-00000020.pt').exists():
        assert p.poll() is None, 'the run ended before it could be killed'
        assert time.time() < deadline; time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not (killed/'checkpoints'/'ckpt-00000040.pt').exists(), 'killed too late to test resuming'
    subprocess.run([sys.executable, str(script), str(killed)], check=True, env=ENV, timeout=120)
    a, b = _weights(tmp_path/'full'), _weights(killed)
    for k in a: assert torch.equal(a[k], b[k]), k
    assert [r['loss'] for r in read_metrics(tmp_path/'full')] == [r['loss'] for r in read_metrics(killed)]
    assert (killed/'loss.png').exists()

@pytest.mark.parametrize('accum', [1, 2])
def test_torchrun_two_processes_match_one(tmp_path, accum):
    script = _toy_script(tmp_path, steps=12, batch_size=8, accum=accum, dropout=0.0, noise=0.0, ckpt_every=6)
    subprocess.run([sys.executable, str(script), str(tmp_path/'one')], check=True, env=ENV, timeout=120)
    r = subprocess.run([str(BIN/'torchrun'), '--standalone', '--nproc_per_node', '2', str(script), str(tmp_path/'two')],
                       env=ENV, timeout=300, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _weights(tmp_path/'one'), _weights(tmp_path/'two')
    for k in a: torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    ck = torch.load(latest_checkpoint(tmp_path/'two'), weights_only=True)  # trainer checkpoints hold no code
    assert ck['world_size'] == 2 and ck['step'] == 12
    assert (tmp_path/'two'/'checkpoints'/'ckpt-00000012.rank1.pt').exists()

def test_override_errors_are_clear():
    with pytest.raises(OvstadError, match='did you mean batch_size'): override(TrainConfig(), ['batchsize=4'])
    with pytest.raises(OvstadError, match='expected a boolean'): override(TrainConfig(), ['progress=maybe'])
