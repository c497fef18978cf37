"""`--executor slurm` on a real one-node Slurm cluster (tests/slurm_cluster.py) started and stopped by a fixture.

Skips, with the reason, where Debian's slurm-wlm / munge are not installed (`.ci/run` installs them)."""
import json, os, subprocess, sys
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, missing_programs

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    from ovstad.synth import ensure_world
    out = tmp_path_factory.mktemp('slurm-world')/'world'
    ensure_world('smoke', out=out, progress=False)
    return out


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    miss = missing_programs()
    if miss: pytest.skip(f"Slurm is not installed (missing {', '.join(miss)}; apt-get install slurm-wlm munge)")
    c = SlurmCluster(tmp_path_factory.mktemp('slurm')).start()
    yield c
    c.stop()


def _reproduce(tmp, world, env, *extra):
    cmd = [str(BIN/'ovstad'), 'reproduce', '--profile', 'smoke', '--device', 'cpu', '--tables', '3', '--runs-dir', str(tmp/'runs'),
           '--reports-dir', str(tmp/'reports'), '--data-root', str(world), *extra]
    return subprocess.run(cmd, cwd=ROOT, env={**env, 'HF_HUB_OFFLINE': '1', 'MPLBACKEND': 'agg'}, capture_output=True,
                          text=True, timeout=1200)


def _values(reports):
    return [r['values'] for r in json.loads((reports/'table3.json').read_text())['rows']]


def test_dry_run_prints_the_job_graph_and_submits_nothing(world, tmp_path):
    r = _reproduce(tmp_path, world, os.environ, '--executor', 'slurm', '--dry-run')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'runs: 0 in the run cache' in r.stdout and 'to submit as Slurm jobs' in r.stdout
    assert 'needs: pretrain-' in r.stdout and 'ovstad train finetune' in r.stdout
    assert not (tmp_path/'runs'/'slurm').exists() and not (tmp_path/'reports').exists()


def test_slurm_tables_equal_local_and_a_second_call_submits_nothing(cluster, world, tmp_path):
    s = _reproduce(tmp_path/'slurm', world, cluster.env, '--executor', 'slurm', '--cpus-per-task', '1')
    assert s.returncode == 0, s.stdout[-3000:] + s.stderr[-3000:]
    jobs = sorted((tmp_path/'slurm'/'runs'/'slurm').glob('*/job.json'))
    assert len(jobs) > 10 and 'submitted' in s.stdout
    loc = _reproduce(tmp_path/'local', world, os.environ)
    assert loc.returncode == 0, loc.stderr[-3000:]
    assert _values(tmp_path/'slurm'/'reports') == _values(tmp_path/'local'/'reports')
    before = {p: p.read_text() for p in jobs}
    again = _reproduce(tmp_path/'slurm', world, cluster.env, '--executor', 'slurm')
    assert again.returncode == 0, again.stderr[-3000:]
    assert ' 0 submitted' in again.stdout
    assert {p: p.read_text() for p in jobs} == before


def test_a_failing_job_leaves_its_dependents_unrun_and_the_sweep_fails(cluster, world, tmp_path):
    import shutil
    broken = tmp_path/'world'; shutil.copytree(world, broken)
    for f in (broken/'ucf101-24').iterdir():   # annotations gone; world.json (the run identity) unchanged
        if f.suffix == '.pkl': f.unlink()
    r = _reproduce(tmp_path, broken, cluster.env, '--executor', 'slurm', '--cpus-per-task', '1')
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert ': failed (job ' in r.stdout and 'not run (needs ' in r.stdout
    assert 'Slurm run(s) failed or not run' in r.stdout
    page = (tmp_path/'reports'/'table3.md').read_text()
    assert 'FAILED row' in page and '_log.out' in page
    assert not any(p.name == 'DONE.json' for p in (tmp_path/'runs').glob('evaluate-*/*'))
