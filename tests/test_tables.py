"""Table specs, the runner (with an injected chain function), report writers, the full-layout check,
the parallel dispatcher and the papermill notebooks (executed with a stand-in chain module)."""
import json, os, pickle, subprocess, sys, textwrap, time
from pathlib import Path

import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('MPLBACKEND', 'agg')
from ovstad.core import OvstadError
from ovstad import tables as T

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent/'shared'
BIN = Path(sys.executable).parent

# ---------------------------------------------------------------- specs

def test_paper_numbers_are_copied_exactly():
    t1, t2, t3, t4, t5, t6 = (T.get_table(n) for n in range(1, 7))
    assert t1.row('all').paper == {'box_text_pairs': 7_066_136, 'unique_sentences': 36_778, 'avg_boxes_per_sentence': 192.1}
    assert t1.row('vidstg').paper['box_text_pairs'] == 5_182_090
    assert [t2.row(f'beta={b}').paper['novel'] for b in ('0', '0.1', '0.3', '0.5', '0.7', '0.9', '1')] == \
        [56.99, 57.01, 57.19, 56.23, 53.74, 48.79, 45.67]
    assert [r.paper['base'] for r in t3.rows] == [13.55, 70.03, 71.93, 32.47, 45.06, 71.62, 71.86, 71.63, 5.08]
    assert [r.paper['novel'] for r in t4.rows] == [57.19, 60.08, 59.30, 58.43, 60.12, 60.98, 61.41]
    assert t5.row('ours').paper == {'base': 71.6, 'novel': 61.4} and t5.row('zero-shot').paper == {'base': 13.6, 'novel': 26.0}
    assert t5.row('acrn').paper == {'base': None, 'novel': 77.9} and t5.row('acrn').quoted
    assert t6.row('zero-shot').paper == {'base': 4.3, 'novel': 5.3, 'all': 4.6}
    assert t6.row('tuber').paper['all'] == 33.4 and t6.row('tuber').quoted
    # every row says where in the paper its numbers are printed
    assert all(r.where for n in range(1, 7) for r in T.get_table(n).rows)


def test_measured_rows_and_shared_chains():
    t3 = T.get_table(3)
    assert [r.key for r in t3.measured_rows] == ['zero-shot', 'ft-local', 'ft-gl', 'align-local', 'align-gl',
                                                'align-local+ft-local', 'align-local+ft-gl', 'align-gl+ft-gl', 'zero-shot-region']
    assert t3.row('align-local').chain == {'benchmark': 'ucf_jhmdb', 'align': {'beta': 1.0}}
    assert t3.row('align-local+ft-gl').chain == {'benchmark': 'ucf_jhmdb', 'align': {'beta': 1.0}, 'finetune': {'beta': 0.3}}
    assert t3.row('zero-shot-region').chain == {'benchmark': 'ucf_jhmdb', 'eval_beta': 1.0}
    assert T.get_table(4).row('hcstvg').chain['align'] == {'beta': 0.3, 'sources': ['hcstvg']}
    assert T.get_table(4).row('25%').chain['align'] == {'beta': 0.3, 'fraction': 0.25}
    assert T.get_table(6).row('ours').chain['benchmark'] == 'ov_ava'
    # Tables 2-6 need 21 distinct chains; 35 measured rows in all
    assert len(T.all_chains(profile='smoke')) == 21
    assert sum(len(T.get_table(n).measured_rows) for n in range(2, 7)) == 7 + 9 + 7 + 3 + 2
    for p in ('smoke', 'mini', 'full'):
        assert all(c['profile'] == p for c in T.get_table(2).chains(p))


def test_knobs_and_bad_input():
    assert [r.key for r in T.get_table(2, betas=[0, 0.5]).rows] == ['beta=0', 'beta=0.5']
    assert T.get_table(3, gl_beta=0.5).row('align-gl+ft-gl').chain['finetune'] == {'beta': 0.5}
    with pytest.raises(OvstadError, match='1-6'): T.get_table(0)
    with pytest.raises(OvstadError, match='bad knob'): T.get_table(2, gl_beta=0.3)
    with pytest.raises(OvstadError, match='strictly'): T.get_table(4, fractions=[0])
    with pytest.raises(OvstadError, match='unknown source'): T.get_table(1, sources=['youtube'])
    assert T.parse_tables('3,1,3') == [1, 3] and T.parse_tables(None) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(OvstadError, match='1-6'): T.parse_tables('7')
    with pytest.raises(OvstadError, match='commas'): T.parse_tables('two')

# ---------------------------------------------------------------- runner

class Fake:
    "A chain function with run_chain's signature that records its calls and imitates a run cache in runs_dir."
    def __init__(self): self.calls = []
    def __call__(self, benchmark, profile, align=None, finetune=None, eval_beta=None, runs_dir='runs', device='auto', seed=0, data_root=None):
        kw = dict(benchmark=benchmark, profile=profile, align=align, finetune=finetune, eval_beta=eval_beta, seed=seed)
        self.calls.append(kw)
        d = Path(runs_dir)/f'fake-{T.chain_id(kw)}'; cached = (d/'DONE.json').exists()
        d.mkdir(parents=True, exist_ok=True); (d/'DONE.json').write_text('{}')
        beta = (finetune or align or {}).get('beta', eval_beta or 0.0)
        return T.FakeChainResult(0.4 + 0.2*beta, 0.1 + 0.05*beta, 0.25 if benchmark == 'ov_ava' else None,
                                 runs=[d], from_cache=cached, detections_path=d/'detections.csv')


def test_run_table_measures_every_measured_row_and_shares_runs(tmp_path):
    fake, memo = Fake(), {}
    res = {n: T.run_table(n, 'smoke', runs_dir=tmp_path, chain_fn=fake, memo=memo, progress=False, data_root=tmp_path) for n in (2, 3, 4, 5, 6)}
    assert len(fake.calls) == 21                       # each distinct chain once
    assert all(r.missing() == [] for r in res.values())
    assert res[2].rows['beta=1'].values == {'base': 60.0, 'novel': 15.0}   # fractions -> percent
    assert res[3].rows['ft-gl'].cached and res[4].rows['all'].cached and res[5].rows['ours'].cached
    assert not res[2].rows['beta=0.3'].cached
    assert res[6].rows['ours'].values['all'] == 25.0
    assert 'acrn' not in res[5].rows                   # quoted rows are never measured
    df = res[5].to_frame()
    assert list(df.columns) == ['row', 'source', 'base', 'base (paper)', 'novel', 'novel (paper)', 'cached']
    assert (df[df.source == 'quoted'].base.isna()).all()
    # a fresh process (empty memo) finds every run in the cache
    fake2 = Fake(); again = T.run_table(3, 'smoke', runs_dir=tmp_path, chain_fn=fake2, memo={}, progress=False, data_root=tmp_path)
    assert all(r.cached for r in again.rows.values()) and len(fake2.calls) == 9


def test_missing_cells_are_reported(tmp_path):
    class Half(Fake):
        def __call__(self, **kw):
            r = super().__call__(**kw); r.novel = None; return r
    res = T.run_table(2, 'smoke', runs_dir=tmp_path, chain_fn=Half(), memo={}, progress=False, betas=[0.3], data_root=tmp_path)
    assert res.missing() == [('beta=0.3', 'novel')]
    assert 'Cells without a measured number' in T.table_markdown(res)


def test_region_text_table_reads_builder_stats(tmp_path):
    def builder(out, sources, hcstvg=None, vidstg=None):
        Path(out).mkdir(parents=True, exist_ok=True)
        stats = {'hcstvg': {'box_text_pairs': 120, 'unique_sentences': 10, 'avg_boxes_per_sentence': 12.0},
                 'vidstg': {'box_text_pairs': 60, 'unique_sentences': 12, 'avg_boxes_per_sentence': 5.0},
                 'all': {'box_text_pairs': 180, 'unique_sentences': 22, 'avg_boxes_per_sentence': 180/22}}
        (Path(out)/'stats.json').write_text(json.dumps(stats))
        return None
    r1 = T.run_table(1, 'smoke', runs_dir=tmp_path, data_root=tmp_path, region_text_builder=builder, progress=False)
    assert r1.rows['all'].values['box_text_pairs'] == 180 and r1.missing() == [] and not r1.rows['all'].cached
    r2 = T.run_table(1, 'smoke', runs_dir=tmp_path, data_root=tmp_path, region_text_builder=builder, progress=False)
    assert r2.rows['all'].cached
    md = T.table_markdown(r2)
    assert '7,066,136' in md and '180' in md
    from ovstad.data import data_roots
    roots = data_roots('smoke', tmp_path); ann = Path(roots['hcstvg'])
    ann.mkdir(parents=True, exist_ok=True); (ann/'train.json').write_text('{}')  # the annotations changed (a rebuilt world)
    r3 = T.run_table(1, 'smoke', runs_dir=tmp_path, data_root=tmp_path, region_text_builder=builder, progress=False)
    assert not r3.rows['all'].cached, 'stats of other annotations must not be reused'

# ---------------------------------------------------------------- reports

def test_reports_side_by_side(tmp_path):
    res = T.run_table(5, 'smoke', runs_dir=tmp_path, chain_fn=Fake(), memo={}, progress=False, data_root=tmp_path)
    paths = T.write_table_report(res, tmp_path/'rep', fig=T.plot_table(res))
    assert {p.name for p in (tmp_path/'rep').iterdir()} == {'table5.md', 'table5.csv', 'table5.html', 'table5.json', 'table5.png'}
    md = paths['md'].read_text()
    assert 'ACT [22] (quoted)' in md and '| 71.6 |' in md and '46.00' in md   # paper 71.6 and measured 0.46 -> 46.00
    side = json.loads(paths['json'].read_text())
    ours = next(r for r in side['rows'] if r['key'] == 'ours')
    assert ours['paper'] == {'base': 71.6, 'novel': 61.4} and ours['values'] == {'base': 46.0, 'novel': 11.5} and ours['runs']
    assert 'quoted' in paths['csv'].read_text() and '<table' in paths['html'].read_text()
    assert not list((tmp_path/'rep').glob('.*.tmp'))   # atomic writes leave no temporaries
    T.write_reports_readme(tmp_path/'rep', {'profile': 'smoke', 'tables': {'5': {'ok': True, 'wall_s': 3.0}}})
    readme = (tmp_path/'rep'/'README.md').read_text()
    assert 'Table 5' in readme and 'Environment' in readme and 'torch' in readme and 'Class lists' in readme


def test_every_table_has_a_figure(tmp_path):
    memo, fake = {}, Fake()
    for n in (2, 3, 4, 5, 6):
        fig = T.plot_table(T.run_table(n, 'smoke', runs_dir=tmp_path, chain_fn=fake, memo=memo, progress=False, data_root=tmp_path))
        assert fig.axes and fig.axes[0].get_ylabel().startswith('Frame mAP')

# ---------------------------------------------------------------- full layout

@pytest.fixture(scope='module')
def world_copy(tmp_path_factory):
    "A copy of the generated smoke world (laid out like the real datasets) and a stand-in checkpoint: the `full` roots."
    import shutil, torch
    from ovstad.synth import ensure_world
    w = ensure_world('smoke', progress=False)
    root = tmp_path_factory.mktemp('full')
    for d in ('ucf101-24', 'jhmdb', 'ava', 'hcstvg', 'vidstg'): shutil.copytree(w/d, root/d)
    torch.save({'model': {}}, root/'viclip.pth')
    return {'ucf101_24_root': root/'ucf101-24', 'jhmdb_root': root/'jhmdb', 'ava_root': root/'ava', 'hcstvg_root': root/'hcstvg',
            'vidstg_root': root/'vidstg', 'viclip_checkpoint': root/'viclip.pth'}


def test_full_layout_check(world_copy):
    roots = dict(world_copy)
    assert T.check_full_layout(roots=roots, expected=None) == []
    probs = T.check_full_layout(roots=roots)   # with the real datasets' counts
    assert any('labels, expected 24' in p for p in probs) and any('classes, expected 60' in p for p in probs)
    assert any('expected 10131' in p for p in probs)
    # break one thing of each kind
    vid = next((roots['ucf101_24_root']/'videos').rglob('*.mp4')); vid.unlink()
    val = roots['ava_root']/'ava_val_v2.2.csv'; lines = val.read_text().splitlines()
    f = lines[0].split(','); f[4] = '5.0'; val.write_text('\n'.join([','.join(f)] + lines[1:]) + '\n')
    (roots['hcstvg_root']/'train.json').write_text('{broken')
    roots['viclip_checkpoint'].write_bytes(b'hello')
    (roots['jhmdb_root']/'proposals.pkl').unlink()
    probs = T.check_full_layout(roots=roots, expected=None)
    assert len(probs) == 5, probs
    with pytest.raises(OvstadError) as e: T.require_full_layout(roots=roots, expected=None)
    msg = str(e.value)
    for s in ('1 of ', 'normalized', 'not valid JSON', 'viclip_checkpoint', 'proposals.pkl', 'data/README.md'): assert s in msg, s


def test_full_layout_lists_everything_missing_at_once(tmp_path):
    with pytest.raises(OvstadError) as e: T.require_full_layout(roots={k: tmp_path/k for k in T.FULL_KEYS})
    msg = str(e.value)
    for s in ('UCF101v2-GT.pkl', 'JHMDB-GT.pkl', 'ava_val_v2.2.csv', 'train_v2.json', 'train_annotations.json', 'ViCLIP'): assert s in msg, s
    assert msg.count('does not exist') == 5


def test_full_layout_on_real_jhmdb_ground_truth(tmp_path):
    gt = SHARED/'data'/'jhmdb'/'JHMDB-GT.pkl'
    if not gt.exists(): pytest.skip(f'real-format samples not found at {gt.parent}')
    (tmp_path/'JHMDB-GT.pkl').symlink_to(gt)
    probs = []; T._check_act(tmp_path, 'jhmdb_gt', 'jhmdb', T.FULL_COUNTS['jhmdb'], probs)
    assert len(probs) == 2 and '928 of 928 videos missing' in probs[0] and 'proposals.pkl' in probs[1]
    probs = []; T._check_act(tmp_path, 'jhmdb_gt', 'ucf', T.FULL_COUNTS['ucf101_24'], probs)
    assert '21 labels, expected 24' in probs[0] and '928 videos, expected 3207 or 3194' in probs[1]


def test_reproduce_full_fails_before_any_run(tmp_path, monkeypatch):
    for k in T.FULL_KEYS: monkeypatch.setenv(f'OVSTAD_FULL_{k.upper()}', str(tmp_path/k))
    r = subprocess.run([str(BIN/'ovstad'), 'reproduce', '--profile', 'full', '--reports-dir', str(tmp_path/'rep'),
                        '--runs-dir', str(tmp_path/'runs')], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and 'data/README.md' in r.stderr and 'problem(s)' in r.stderr
    assert not (tmp_path/'runs').exists() and not (tmp_path/'rep').exists()

# ---------------------------------------------------------------- dispatch

class FakeRun:
    def __init__(self, path): self.path = Path(path)
    @property
    def complete(self): return (self.path/'DONE.json').exists()


class FakePlanned:
    "What dispatch_runs reads of ovstad.stages.PlannedRun: stage, inputs, run (.path, .complete), complete."
    def __init__(self, stage, inputs, path): self.stage, self.inputs, self.run = stage, inputs, FakeRun(path)
    @property
    def complete(self): return self.run.complete


def test_fake_planned_matches_the_stages_plan(tmp_path):
    stages = pytest.importorskip('ovstad.stages')
    p = stages.plan_chain('ucf_jhmdb', 'smoke', align={'beta': 0.3}, finetune={'beta': 0.3}, runs_dir=str(tmp_path))
    assert [x.stage for x in p] == ['pretrain', 'align', 'finetune', 'detect', 'evaluate']
    assert T._deps(p[2]) == [T._rid(p[1])] and isinstance(p[0].complete, bool)
    assert p[2].command('smoke')[:3] == ['ovstad', 'train', 'finetune']
    runs = T.planned_runs(T.get_table(3).chains('smoke'), tmp_path, plan_fn=stages.plan_chain)
    assert len({T._rid(r) for r in runs}) == len(runs)
    assert sum(r.stage == 'pretrain' for r in runs) == 1 and sum(r.stage == 'align' for r in runs) == 2
    df = T.plan_table(3, 'smoke', runs_dir=tmp_path)
    assert len(df) == 9 and df.stages.iloc[0] == 'pretrain -> detect -> evaluate'
    assert df.stages.iloc[7] == 'pretrain -> align -> finetune -> detect -> evaluate' and set(df.complete.str[0]) == {'0'}


def test_dispatch_one_process_per_gpu_inputs_first(tmp_path):
    log = tmp_path/'seen.txt'
    pre = FakePlanned('pretrain', [], tmp_path/'pretrain-x')
    aligns = [FakePlanned('align', [pre], tmp_path/f'align-{i}') for i in range(2)]
    fts = [FakePlanned('finetune', [a], tmp_path/f'finetune-{i}{j}') for i, a in enumerate(aligns) for j in range(3)]
    code = ('import os, sys, time, pathlib; d = pathlib.Path(sys.argv[2]); g = os.environ["CUDA_VISIBLE_DEVICES"]; '
            'open(sys.argv[1], "a").write(f"start {g} {time.time()} {d.name}\\n"); time.sleep(0.3); d.mkdir(); (d/"DONE.json").write_text("{}"); '
            'open(sys.argv[1], "a").write(f"end {g} {time.time()} {d.name}\\n")')
    cmd = lambda p: [sys.executable, '-c', code, str(log), str(p.run.path)]
    made = T.dispatch_runs([pre, *aligns, *fts], ['0', '1'], 'smoke', log_dir=tmp_path/'logs', cmd_fn=cmd, poll_s=0.02, log=lambda *a: None)
    assert len(made) == 9
    ev = sorted((l.split() for l in log.read_text().splitlines()), key=lambda e: (float(e[2]), e[0] == 'start'))
    busy, peak, ended = {'0': 0, '1': 0}, 0, set()
    for kind, g, t, name in ev:
        busy[g] += 1 if kind == 'start' else -1
        assert busy[g] <= 1                                  # never two processes on one GPU
        peak = max(peak, sum(busy.values()))
        if kind == 'end': ended.add(name)
        elif name.startswith('align'): assert 'pretrain-x' in ended     # inputs complete first
        elif name.startswith('finetune'): assert f'align-{name[9]}' in ended
    assert peak == 2                                         # both GPUs busy at once
    # a failing run stops the dispatch with its log named
    bad = FakePlanned('finetune', [pre], tmp_path/'finetune-bad')
    with pytest.raises(OvstadError, match='finetune-bad.log'):
        T.dispatch_runs([pre, bad], ['0'], 'smoke', log_dir=tmp_path/'logs', cmd_fn=lambda p: [sys.executable, '-c', 'raise SystemExit(3)'], poll_s=0.01, log=lambda *a: None)
    orphan = FakePlanned('finetune', [FakePlanned('align', [], tmp_path/'nowhere')], tmp_path/'finetune-orphan')
    with pytest.raises(OvstadError, match='wait on inputs'):
        T.dispatch_runs([orphan], ['0'], 'smoke', log_dir=tmp_path/'logs', cmd_fn=cmd, poll_s=0.01, log=lambda *a: None)

# ---------------------------------------------------------------- notebooks and CLI

FAKE_MODULE = textwrap.dedent('''
    from pathlib import Path
    from ovstad.tables import FakeChainResult, chain_id
    def run_chain(benchmark, profile, align=None, finetune=None, eval_beta=None, runs_dir='runs', device='auto', seed=0, data_root=None):
        kw = dict(benchmark=benchmark, profile=profile, align=align, finetune=finetune, eval_beta=eval_beta, seed=seed)
        d = Path(runs_dir)/f'fake-{chain_id(kw)}'; cached = (d/'DONE.json').exists()
        d.mkdir(parents=True, exist_ok=True); (d/'DONE.json').write_text('{}')
        beta = (finetune or align or {}).get('beta', eval_beta or 0.0)
        return FakeChainResult(0.4 + 0.2*beta, 0.1 + 0.05*beta, 0.2, runs=[d], from_cache=cached)
''')


@pytest.fixture
def fake_chain_module(tmp_path, monkeypatch):
    (tmp_path/'fakechain.py').write_text(FAKE_MODULE)
    monkeypatch.setenv('PYTHONPATH', f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return 'fakechain:run_chain'


def test_notebook_parameters_follow_the_rules():
    import papermill as pm, nbformat
    nbs = sorted((ROOT/'nbs'/'experiments').glob('table*.ipynb'))
    assert [p.name[:6] for p in nbs] == [f'table{n}' for n in range(1, 7)]
    for p in nbs:
        nb = nbformat.read(p, as_version=4)
        tagged = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
        assert len(tagged) == 1, p
        assert not any(l.lstrip().startswith('#|') for c in nb.cells for l in c.source.splitlines()), p
        params = pm.inspect_notebook(str(p))
        assert {'profile', 'device', 'runs_dir', 'reports_dir', 'seed'} <= set(params), p
        assert all(v['help'] for v in params.values()), p          # every default has a comment
        assert '| None' not in tagged[0].source
        assert T.get_table(int(p.name[5])).notebook == p.name


def test_execute_notebook_writes_the_report(tmp_path, fake_chain_module):
    params = dict(profile='smoke', runs_dir=str(tmp_path/'runs'), reports_dir=str(tmp_path/'rep'), chain_api=fake_chain_module, betas=[0.0, 1.0])
    r = T.execute_table_notebook(2, params, tmp_path/'rep', cwd=tmp_path)
    assert r['ok'], r
    side = json.loads((tmp_path/'rep'/'table2.json').read_text())
    assert [row['values'] for row in side['rows']] == [{'base': 40.0, 'novel': 10.0}, {'base': 60.0, 'novel': 15.0}]
    assert (tmp_path/'rep'/'table2.png').exists() and (tmp_path/'rep'/'executed'/'table2_fusion_ratio.ipynb').exists()
    with pytest.raises(OvstadError, match='no parameter'): T.execute_table_notebook(2, {'beta': [1]}, tmp_path/'rep', cwd=tmp_path)


def test_failed_notebook_is_kept_as_the_log(tmp_path, fake_chain_module):
    params = dict(profile='smoke', runs_dir=str(tmp_path/'runs'), reports_dir=str(tmp_path/'rep'), chain_api='nosuchmodule:run_chain')
    r = T.execute_table_notebook(3, params, tmp_path/'rep', cwd=tmp_path)
    assert not r['ok'] and 'nosuchmodule' in r['error']
    assert 'nosuchmodule' in Path(r['executed']).read_text()


def test_reproduce_twice_second_from_cache(tmp_path, fake_chain_module):
    kw = dict(profile='smoke', tables=[3, 5], device='cpu', runs_dir='runs', reports_dir='rep', cwd=tmp_path, chain_api=fake_chain_module, log=lambda *a: None)
    s1 = T.reproduce(**kw)
    assert all(r['ok'] for r in s1['tables'].values()), s1['tables']
    t5 = json.loads((tmp_path/'rep'/'table5.json').read_text())
    assert t5['n_rows_cached'] == 3 and t5['missing'] == []     # Table 5's runs were made by Table 3
    s2 = T.reproduce(**kw)
    for n in (3, 5):
        side = json.loads((tmp_path/'rep'/f'table{n}.json').read_text())
        assert side['n_rows_cached'] == side['n_rows_measured']
    readme = (tmp_path/'rep'/'README.md').read_text()
    assert 'Table 3' in readme and 'Table 5' in readme and 'git_commit' in readme and (tmp_path/'rep'/'README.html').exists()
    assert (tmp_path/'rep'/'reproduce.json').exists()


def test_cli_help_teaches():
    r = subprocess.run([str(BIN/'ovstad'), 'reproduce', '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and 'examples:' in r.stdout and '--gpus' in r.stdout and 'papermill' in r.stdout
    r = subprocess.run([str(BIN/'ovstad'), 'reproduce', '--tables', '9'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and '1-6' in r.stderr
