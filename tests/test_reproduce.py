"""`ovstad reproduce --profile smoke` end to end, on the real stages and the generated smoke world.

One ordered flow, sharing a run cache in a temporary folder:
1. `--tables 2` is killed (SIGKILL, whole process group) once some finetune runs are complete, then run
   again: the runs that were complete are not redone (their DONE.json is untouched) and the table is whole;
2. all six tables: every table file exists with a measured number in every measured cell;
3. a second invocation of all six: every row comes from the run cache and no run is redone.
"""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'MPLBACKEND': 'agg'}

pytestmark = pytest.mark.slow

try:
    import ovstad.stages  # noqa: F401
    HAVE_STAGES = True
except ImportError as e:  # the stages module is part of the project; without it nothing can be measured
    HAVE_STAGES, WHY = False, str(e)


def _cmd(tmp, *extra):
    return [str(BIN/'ovstad'), 'reproduce', '--profile', 'smoke', '--device', 'cpu',
            '--runs-dir', str(tmp/'runs'), '--reports-dir', str(tmp/'reports'), '--data-root', str(tmp/'world'), *extra]


def _done(runs: Path) -> dict:
    "Every complete run folder -> the mtime of its DONE.json."
    return {str(p.parent.relative_to(runs)): p.stat().st_mtime_ns for p in runs.rglob('DONE.json')}


def _run(cmd, timeout=1500):
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.fixture(scope='module')
def flow(tmp_path_factory):
    if not HAVE_STAGES: pytest.skip(f'ovstad.stages is not importable: {WHY}')
    tmp = tmp_path_factory.mktemp('reproduce')
    state = {'tmp': tmp}
    from ovstad.synth import ensure_world
    ensure_world('smoke', out=tmp/'world', progress=False)   # a private world, built before the kill so that it lands in the stage runs
    # 1. kill midway, then resume
    p = subprocess.Popen(_cmd(tmp, '--tables', '2'), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline, runs = time.time() + 1200, tmp/'runs'
    try:
        while time.time() < deadline and p.poll() is None:
            fin = [k for k in _done(runs) if 'finetune' in k] if runs.exists() else []
            if len(fin) >= 2: break
            time.sleep(0.5)
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    state['killed_rc'] = p.returncode
    state['before_kill'] = _done(runs) if runs.exists() else {}
    _run(_cmd(tmp, '--tables', '2'))
    state['after_resume'] = _done(runs)
    state['table2_after_resume'] = json.loads((tmp/'reports'/'table2.json').read_text())
    # 2. all tables
    t0 = time.time(); _run(_cmd(tmp)); state['first_s'] = time.time() - t0
    state['after_first'] = _done(runs)
    state['sidecars_first'] = {n: json.loads((tmp/'reports'/f'table{n}.json').read_text()) for n in range(1, 7)}
    # 3. again
    t0 = time.time(); _run(_cmd(tmp)); state['second_s'] = time.time() - t0
    state['after_second'] = _done(runs)
    state['sidecars_second'] = {n: json.loads((tmp/'reports'/f'table{n}.json').read_text()) for n in range(1, 7)}
    return state


def test_killed_run_resumes_without_redoing_finished_runs(flow):
    before, after = flow['before_kill'], flow['after_resume']
    assert flow['killed_rc'] == -signal.SIGKILL, 'the reproduction finished before it could be killed: nothing was tested'
    assert sum('finetune' in k for k in before) >= 2
    for k, mtime in before.items():
        assert after.get(k) == mtime, f'{k} was redone after the resume'
    t2 = flow['table2_after_resume']
    assert t2['missing'] == [] and len(t2['rows']) == 7


def test_every_table_file_has_every_measured_cell(flow):
    rep = flow['tmp']/'reports'
    for n in range(1, 7):
        for ext in ('md', 'csv', 'html', 'json', 'png'):
            assert (rep/f'table{n}.{ext}').exists(), f'table{n}.{ext} missing'
        side = flow['sidecars_first'][n]
        assert side['missing'] == [], f'Table {n}: cells without a number {side["missing"]}'
        for row in side['rows']:
            if row['quoted']: continue
            for c in side['columns']:
                v = row['values'][c]
                assert isinstance(v, (int, float)) and v == v, f'Table {n} row {row["key"]} column {c}: {v!r}'
                if n > 1: assert 0 <= v <= 100
        assert list((rep/'executed').glob(f'table{n}_*.ipynb'))
        if n > 1:  # the chance level of the table's benchmark: the same detections with random scores
            md = (rep/f'table{n}.md').read_text()
            assert 'Chance level (' in md and 'not computed' not in md, f'Table {n}: no chance level'
    readme = (rep/'README.md').read_text()
    for s in ('Table 1', 'Table 6', 'git_commit', 'torch', 'Class lists', 'Data provenance', 'rows from cache'):
        assert s in readme, s
    from ovstad.tables import _rel   # the world as the writer records it (relative to the project, wherever the clone lives)
    assert _rel(flow['tmp']/'world') in readme or str(flow['tmp']/'world') in readme, _rel(flow['tmp']/'world')
    assert (rep/'README.html').exists()


def test_second_invocation_comes_from_cache(flow):
    for n in range(1, 7):
        side = flow['sidecars_second'][n]
        assert side['n_rows_cached'] == side['n_rows_measured'], f'Table {n}: {side["n_rows_cached"]} of {side["n_rows_measured"]} rows cached'
        assert all(r['cached'] for r in side['rows'] if not r['quoted'])
        # same numbers as the first invocation
        assert [r['values'] for r in side['rows']] == [r['values'] for r in flow['sidecars_first'][n]['rows']]
    assert flow['after_second'] == flow['after_first'], 'a run was redone or added by the second invocation'
    print(f"smoke reproduce: first {flow['first_s']:.0f} s, second {flow['second_s']:.0f} s (2 shared CPU cores)")
