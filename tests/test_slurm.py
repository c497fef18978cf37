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


# --- training jobs: scancel + resume, and 2 tasks (DDP over gloo) -------------------------------------------------
ENV1 = {'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'MPLBACKEND': 'agg'}


@pytest.fixture(scope='module')
def init_ckpt(tmp_path_factory):
    "A randomly initialised smoke ViCLIP: finetuning from it needs no pretraining."
    p = tmp_path_factory.mktemp('init')/'smoke.pth'
    subprocess.run([str(BIN/'ovstad'), 'model', 'init', '--config', 'smoke', '--out', str(p)], check=True,
                   env={**os.environ, **ENV1}, capture_output=True, timeout=120)
    return p


def _train(world, init, runs, env, *extra, sets=()):
    cmd = [str(BIN/'ovstad'), 'train', 'finetune', '--profile', 'smoke', '--data-root', str(world), '--init', str(init),
           '--runs-dir', str(runs), '--device', 'cpu', '--set', 'progress=false', *extra]
    for s in sets: cmd += ['--set', s]
    return subprocess.run(cmd, cwd=ROOT, env={**env, **ENV1}, capture_output=True, text=True, timeout=900)


def _only_run(runs):
    rs = sorted(Path(runs).glob('finetune-*'))
    assert len(rs) == 1, rs
    return rs[0]


def _model(run):
    import torch
    return torch.load(run/'viclip.pt', map_location='cpu', weights_only=True)['model']


def _wait(ok, what, timeout=300):
    import time
    t0 = time.time()
    while not ok():
        assert time.time() - t0 < timeout, what
        time.sleep(0.05)


LONG = ('steps=480', 'ckpt_every=16', 'batch_size=4', 'log_every=16')   # ~12 s; Slurm kills ~4 s after scancel


@pytest.fixture(scope='module')
def uninterrupted(world, init_ckpt, tmp_path_factory):
    "The LONG finetune run on this machine, uninterrupted."
    runs = tmp_path_factory.mktemp('uninterrupted')
    r = _train(world, init_ckpt, runs, os.environ, sets=LONG)
    assert r.returncode == 0, r.stderr[-3000:]
    return _only_run(runs)


def _interrupt(cluster, world, init_ckpt, runs, *scancel):
    "Queue the LONG run as a job, `scancel *scancel JOB` it once it has a checkpoint; (run folder, job id)."
    q = _train(world, init_ckpt, runs, cluster.env, '--executor', 'slurm', '--cpus-per-task', '1', '--no-wait', sets=LONG)
    assert q.returncode == 0 and 'submitted job ' in q.stdout, q.stdout[-3000:] + q.stderr[-3000:]
    _wait(lambda: list(Path(runs).glob('finetune-*/checkpoints/ckpt-*.pt')), 'the job wrote no checkpoint')
    b = _only_run(runs)
    job = json.loads((Path(runs)/'slurm'/b.name/'job.json').read_text())['job_id']
    cluster.run('scancel', *scancel, job)
    return b, job


def _same_result(a, b):
    import torch
    assert a.name == b.name
    done_a, done_b = (json.loads((x/'DONE.json').read_text())['metrics'] for x in (a, b))
    assert done_b['resumed_from'] >= 16 and done_a['resumed_from'] == 0
    assert done_a['final_loss'] == done_b['final_loss']
    ma, mb = _model(a), _model(b)
    assert ma.keys() == mb.keys()
    for k in ma: assert torch.equal(ma[k], mb[k]), k


def test_a_scancelled_training_job_resumes_to_the_uninterrupted_weights(cluster, world, init_ckpt, uninterrupted, tmp_path):
    b, job = _interrupt(cluster, world, init_ckpt, tmp_path)
    _wait(lambda: cluster.run('squeue', '-h', '-j', job, '-o', '%T').stdout.strip() not in ('RUNNING', 'COMPLETING', 'PENDING'),
          f'job {job} still active after scancel', 60)
    assert not (b/'DONE.json').exists(), 'cancelled too late to test resuming'
    r = _train(world, init_ckpt, tmp_path, cluster.env, '--executor', 'slurm', '--cpus-per-task', '1', sets=LONG)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]   # the same command again: resubmitted, resumed
    assert _only_run(tmp_path) == b
    _same_result(uninterrupted, b)
    rec = json.loads((tmp_path/'slurm'/b.name/'job.json').read_text())
    assert rec['job_id'] != job and [h['job_id'] for h in rec['history']] == [job]   # the cancelled job stays on record


def test_a_preempted_training_job_requeues_itself_and_resumes(cluster, world, init_ckpt, uninterrupted, tmp_path):
    # Slurm warns a job with SIGUSR2 before its time limit or a preemption; submitit checkpoints and requeues it.
    b, job = _interrupt(cluster, world, init_ckpt, tmp_path, '--signal=USR2')
    # Slurm holds a requeued job back for about two minutes (BeginTime); release it early to keep the test short
    state = lambda: cluster.run('squeue', '-h', '-j', job, '-o', '%T|%r').stdout.strip()
    _wait(lambda: state() == 'PENDING|BeginTime' or (b/'DONE.json').exists(), f'job {job} was not requeued', 120)
    assert not (b/'DONE.json').exists(), 'signalled too late to test requeueing'
    cluster.run('scontrol', 'update', f'JobId={job}', 'StartTime=now')
    r = _train(world, init_ckpt, tmp_path, cluster.env, '--executor', 'slurm', '--cpus-per-task', '1', sets=LONG)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]   # finds the job queued, waits for it
    assert 'already queued or running' in r.stdout
    _same_result(uninterrupted, b)
    rec = json.loads((tmp_path/'slurm'/b.name/'job.json').read_text())
    assert rec['job_id'] == job and rec['history'] == []   # requeued under its own id, not resubmitted
    assert 'requeu' in Path(rec['log']).read_text().lower()


def test_a_two_task_job_trains_like_one_process(cluster, world, init_ckpt, tmp_path):
    import torch
    sets = ('steps=3', 'batch_size=8', 'ckpt_every=3')
    one = _train(world, init_ckpt, tmp_path/'one', os.environ, sets=sets)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _train(world, init_ckpt, tmp_path/'two', cluster.env, '--executor', 'slurm', '--tasks-per-node', '2',
                 '--cpus-per-task', '1', sets=sets)
    b = _only_run(tmp_path/'two')
    log = json.loads((tmp_path/'two'/'slurm'/b.name/'job.json').read_text())['log']
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:] + Path(log).read_text()[-3000:]
    a = _only_run(tmp_path/'one')
    assert a.name == b.name   # the process count is not part of the run's identity
    assert json.loads((b/'DONE.json').read_text())['metrics']['world_size'] == 2
    ma, mb = _model(a), _model(b)
    init = torch.load(init_ckpt, map_location='cpu', weights_only=True)['model']
    changed = 0
    for k in ma:
        torch.testing.assert_close(ma[k], mb[k], rtol=1e-3, atol=1e-5)
        changed += not torch.equal(ma[k], init[k])
    assert changed > 10   # training moved the weights, in both runs alike
