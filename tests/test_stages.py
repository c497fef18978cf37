"""The stages on the smoke world: kill + resume of a finetune, 2-process DDP vs 1 process, the whole chain in < 3 min."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from ovstad.cli import main as ovstad_main
from ovstad.core import OvstadError
from ovstad.data import read_captions
from ovstad.stages import (AlignConfig, FinetuneConfig, get_recipe, plan_chain, run_chain)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'MPLBACKEND': 'agg'}

@pytest.fixture(scope='module')
def world():
    from ovstad.synth import ensure_world
    return ensure_world('smoke', progress=False)

@pytest.fixture(scope='module')
def init_ckpt(tmp_path_factory):
    "A randomly initialised smoke ViCLIP: finetuning from it needs no pretraining."
    p = tmp_path_factory.mktemp('init')/'smoke.pth'
    subprocess.run([str(BIN/'ovstad'), 'model', 'init', '--config', 'smoke', '--out', str(p)], check=True, env=ENV,
                   capture_output=True, timeout=120)
    return p

def _finetune_args(world, init, runs, *sets):
    a = ['train', 'finetune', '--profile', 'smoke', '--data-root', str(world), '--init', str(init), '--runs-dir', str(runs),
         '--device', 'cpu', '--set', 'progress=false']
    for s in sets: a += ['--set', s]
    return a

def _only_run(runs, stage='finetune'):
    rs = sorted(Path(runs).glob(f'{stage}-*'))
    assert len(rs) == 1, rs
    return rs[0]

def _model(run):
    return torch.load(run/'viclip.pt', map_location='cpu', weights_only=False)['model']

def test_sigkill_smoke_finetune_resumes_to_the_same_weights(world, init_ckpt, tmp_path):
    args = lambda runs: _finetune_args(world, init_ckpt, runs, 'steps=12', 'ckpt_every=4', 'batch_size=4', 'log_every=2')
    subprocess.run([str(BIN/'ovstad'), *args(tmp_path/'a')], check=True, env=ENV, timeout=300, capture_output=True)
    p = subprocess.Popen([str(BIN/'ovstad'), *args(tmp_path/'b')], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((tmp_path/'b').glob('finetune-*/checkpoints/ckpt-00000004.pt')):
        assert p.poll() is None, 'the run ended before it could be killed'
        assert time.time() < deadline; time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    b = _only_run(tmp_path/'b')
    assert not (b/'DONE.json').exists(), 'killed too late to test resuming'
    r = subprocess.run([str(BIN/'ovstad'), *args(tmp_path/'b'), '--resume'], env=ENV, timeout=300, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a = _only_run(tmp_path/'a')
    assert a.name == b.name
    done_a, done_b = (json.loads((x/'DONE.json').read_text())['metrics'] for x in (a, b))
    assert done_b['resumed_from'] == 4 and done_a['resumed_from'] == 0
    assert done_a['final_loss'] == done_b['final_loss']
    ma, mb = _model(a), _model(b)
    for k in ma: assert torch.equal(ma[k], mb[k]), k
    la = [json.loads(l)['loss'] for l in (a/'metrics.jsonl').read_text().splitlines()]
    lb = [json.loads(l)['loss'] for l in (b/'metrics.jsonl').read_text().splitlines()]
    assert la == lb and len(la) == 6

def test_torchrun_two_processes_match_one_on_smoke(world, init_ckpt, tmp_path):
    args = lambda runs: _finetune_args(world, init_ckpt, runs, 'steps=3', 'batch_size=8', 'ckpt_every=3')
    subprocess.run([str(BIN/'ovstad'), *args(tmp_path/'one')], check=True, env=ENV, timeout=300, capture_output=True)
    r = subprocess.run([str(BIN/'torchrun'), '--standalone', '--nproc_per_node', '2', str(BIN/'ovstad'), *args(tmp_path/'two')],
                       env=ENV, timeout=600, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = _only_run(tmp_path/'one'), _only_run(tmp_path/'two')
    assert one.name == two.name   # the process count is not part of the run's identity
    m2 = json.loads((two/'DONE.json').read_text())['metrics']
    assert m2['world_size'] == 2
    a, b = _model(one), _model(two)
    changed = 0
    init = torch.load(init_ckpt, map_location='cpu', weights_only=False)['model']
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-5)
        changed += not torch.equal(a[k], init[k])
    assert changed > 10   # training moved the weights, in both runs alike

def test_smoke_chain_in_under_three_minutes(world, tmp_path):
    nt = torch.get_num_threads(); torch.set_num_threads(1)   # one thread is faster on a shared 2-core machine
    t0 = time.time()
    r = run_chain('ucf_jhmdb', 'smoke', align={}, finetune={'beta': 0.3}, runs_dir=tmp_path, device='cpu', data_root=world)
    wall = time.time() - t0
    assert [x.stage for x in r.runs] == ['pretrain', 'align', 'finetune', 'detect', 'evaluate']
    assert all(0 <= v <= 1 for v in (r.base, r.novel, r.all))
    assert not r.from_cache and r.detections_path.exists()
    assert wall < 180, f"the smoke chain took {wall:.0f} s"
    again = run_chain('ucf_jhmdb', 'smoke', align={}, finetune={'beta': 0.3}, runs_dir=tmp_path, device='cpu', data_root=world)
    assert again.from_cache and (again.base, again.novel) == (r.base, r.novel) and again.wall_s < 30
    # a zero-shot chain reuses the pretrain run
    zs = plan_chain('ucf_jhmdb', 'smoke', runs_dir=tmp_path, data_root=world)
    assert zs[0].complete and zs[0].run.id == r.runs[0].id and not zs[1].complete
    assert zs[1].config.beta == 0.0 and plan_chain('ucf_jhmdb', 'smoke', eval_beta=1.0, runs_dir=tmp_path, data_root=world)[1].config.beta == 1.0
    torch.set_num_threads(nt)

def test_recipes_follow_the_paper():
    a = get_recipe('align', profile='full')
    assert (a.batch_size, a.steps, a.lr, a.momentum, a.weight_decay, a.optimizer) == (16, 60_000, 1e-5, 0.9, 1e-7, 'sgd')
    u, v = get_recipe('finetune', 'ucf_jhmdb', 'full'), get_recipe('finetune', 'ov_ava', 'full')
    assert (u.batch_size, u.steps, u.lr, u.stride, u.num_frames) == (32, 70_000, 5e-5, 1, 8)
    assert (v.batch_size, v.steps, v.lr, v.stride, v.num_frames) == (8, 140_000, 1e-4, 8, 8)
    assert get_recipe('finetune', profile='mini', beta=1.0).beta == 1.0
    with pytest.raises(OvstadError, match='no field'): get_recipe('align', profile='mini', betta=0.3)

def test_cli_help_and_errors(capsys, tmp_path):
    for cmd in (['train', 'pretrain'], ['train', 'align'], ['train', 'finetune'], ['train', 'chain'], ['detect-run'], ['evaluate']):
        with pytest.raises(SystemExit): ovstad_main([*cmd, '--help'])
        out = capsys.readouterr().out
        assert 'example' in out and '--profile' in out, cmd
    assert ovstad_main(['train', 'finetune', '--profile', 'smoke', '--set', 'beta=0.5', '--show-config']) == 0
    out = capsys.readouterr().out
    assert 'beta = 0.5' in out and 'fusion ratio' in out
    assert ovstad_main(['train', 'align', '--profile', 'smoke', '--set', 'gama=1', '--show-config']) == 2
    assert "did you mean gamma" in capsys.readouterr().err
    assert ovstad_main(['evaluate', str(tmp_path), '--profile', 'smoke']) == 2
    assert 'not a run folder' in capsys.readouterr().err

def test_plan_commands_run_a_stage_alone(world, tmp_path, capsys):
    assert ovstad_main(['train', 'chain', '--profile', 'smoke', '--data-root', str(world), '--runs-dir', str(tmp_path),
                        '--finetune', '{"beta": 1.0}', '--plan']) == 0
    out = capsys.readouterr().out
    assert 'ovstad train pretrain' in out and 'ovstad train finetune' in out and 'beta=1.0' in out and 'ovstad evaluate' in out

def test_read_captions_of_the_smoke_world(world):
    pairs = read_captions(world/'pretrain')
    assert len(pairs) >= 16 and all(isinstance(c, str) and c for _, c in pairs)

def test_ov_ava_through_the_cli(world, init_ckpt, tmp_path, capsys):
    common = ['--profile', 'smoke', '--data-root', str(world), '--runs-dir', str(tmp_path), '--device', 'cpu', '--set', 'progress=false']
    assert ovstad_main(['train', 'finetune', '--benchmark', 'ov_ava', '--init', str(init_ckpt), *common, '--set', 'steps=2']) == 0
    ft = _only_run(tmp_path, 'finetune')
    assert ovstad_main(['detect-run', '--benchmark', 'ov_ava', '--init', str(ft), *common, '--set', 'beta=0.3']) == 0
    dr = _only_run(tmp_path, 'detect')
    rows = (dr/'detections.csv').read_text().splitlines()
    assert rows and len(rows[0].split(',')) == 8          # the official AVA layout, no header
    assert ovstad_main(['evaluate', str(dr), '--profile', 'smoke', '--data-root', str(world), '--runs-dir', str(tmp_path)]) == 0
    m = json.loads((_only_run(tmp_path, 'evaluate')/'metrics.json').read_text())
    assert m['benchmark'] == 'ov_ava' and m['protocol'].startswith('AVA') and all(0 <= m[k] <= 1 for k in ('base', 'novel', 'all'))
    assert m['classes']['base'] + m['classes']['novel'] == m['classes']['all']
    capsys.readouterr()
    assert ovstad_main(['train', 'finetune', '--benchmark', 'ov_ava', '--init', str(init_ckpt), *common, '--set', 'steps=2']) == 0
    assert 'reused' in capsys.readouterr().out


@pytest.mark.parametrize('benchmark', ['ucf_jhmdb', 'ov_ava'])
def test_gt_box_top1_benchmark_reads_both_parts(world, benchmark):
    "benchmarks/gt_box_top1.py scores GT boxes of both parts (UCF/JHMDB test videos, or AVA val keyframes) and prints one row per part."
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'gt_box_top1.py'), 'smoke', '--profile', 'smoke', '--benchmark', benchmark,
                        '--data-root', str(world), '--max-videos', '3', '--threads', '1'],
                       capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {l.split()[0]: l.split() for l in r.stdout.splitlines() if l.split() and l.split()[0] in ('base', 'novel')}
    assert set(rows) == {'base', 'novel'}, r.stdout
    for part, cols in rows.items():
        assert int(cols[1]) > 0, f"{part}: no GT boxes scored\n{r.stdout}"
        for v in cols[3:6]: assert 0.0 <= float(v.rstrip('%')) <= 100.0
    if benchmark == 'ov_ava':   # several people per keyframe: actor pairs are read
        assert int(rows['base'][7]) > 0 and 0.0 <= float(rows['base'][8].rstrip('%')) <= 100.0, r.stdout


def _load_script(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, ROOT/'benchmarks'/f'{name}.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_gt_box_top1_counts_actor_pairs_by_hand(monkeypatch):
    "Two people, A = 'wave', B = 'jump, wave': only B does 'jump', so one pair (B over A for 'jump'); 'wave' is no pair."
    import numpy as np
    from types import SimpleNamespace as NS
    g = _load_script('gt_box_top1')
    names = ['jump', 'wave', 'sit']
    scores = np.array([[0.9, 0.8, 0.1],     # box A: jump highest (wrong: A does not jump), wave second
                       [0.2, 0.7, 0.1]])    # box B: wave highest (right)
    heat = np.array([[0.1, 0.5], [0.3, 0.2], [0.0, 0.0]])  # (P, K): jump hotter on B (right), wave hotter on A
    class Session:
        det = NS(prompt_embeddings=lambda ps: torch.eye(len(ps)))
        def set_prompts(self, p): self.prompts = p
        def set_clip(self, *a, **k): pass
        def set_box_source(self, s): pass
        def boxes(self): return NS(labels=['wave', 'jump, wave'], boxes=np.zeros((2, 4)))
        def scores(self): return NS(scores=scores)
        def similarity(self): return None
    monkeypatch.setattr(g, 'box_heat', lambda sm, b: heat)
    r = g.score_part(Session(), names, [('v.mp4', 0)], 'test')
    assert (r['n'], r['hits'], r['heat_hits']) == (2, 1, 2)       # A: jump/wave picks; B: wave/jump picks
    assert (r['pairs'], r['pair_hits'], r['pair_heat_hits']) == (1, 0, 1)
    assert r['chance'] == [1 / 3, 2 / 3] and r['cos'] == 0.0


def test_region_learnability_benchmark_runs(world):
    "benchmarks/region_learnability.py trains the smoke tower for a second with each readout and prints held-out top-1."
    for readout in ('region', 'crop'):
        r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'region_learnability.py'), '--model', 'smoke', '--profile', 'smoke',
                            '--data-root', str(world), '--seconds', '1', '--readout', readout, '--threads', '1'],
                           capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
        assert r.returncode == 0, r.stderr[-2000:]
        assert 'held-out top-1' in r.stdout and f'readout {readout}' in r.stdout, r.stdout


@pytest.mark.parametrize('stage', ['finetune', 'align'])
def test_training_recipes_start_scores_at_the_prior(world, init_ckpt, stage):
    """The mini and smoke recipes start every region-prompt score near the prior `prior_prob` (a learned logit bias,
    focal-loss initialisation), not at Eq. 3's saturated sigmoid(cos / tau): undo the fix and this fails."""
    from ovstad.data import collate_detection, data_roots
    from ovstad.models import prior_bias
    from ovstad.stages import _trainee, load_benchmark
    from ovstad.trainer import override
    for profile in ('mini', 'smoke'):
        assert get_recipe(stage, profile=profile).prior_prob > 0, f"the {profile} {stage} recipe lost its prior"
    assert get_recipe(stage, profile='full').prior_prob == 0, "the full profile trains Eq. 3 / Eq. 5 as published"
    bench = load_benchmark('ucf_jhmdb', 'smoke', world)
    cfg = get_recipe(stage, profile='smoke', device='cpu')
    def negatives(c):
        det, T, tf = _trainee(init_ckpt, c, [data_roots('smoke', world)['ucf101_24']], template=bench.template)
        ds = bench.train_dataset(num_frames=T, stride=1, transform=tf, seed=0)
        batch = collate_detection([ds[i] for i in range(6)])
        with torch.no_grad(): p = det(batch['video'], batch['rois'], prompts=bench.prompts(bench.base_classes)).sigmoid()
        return det, p[batch['labels'] == 0]
    det, neg = negatives(cfg)
    assert abs(float(det.logit_bias.detach()) - prior_bias(cfg.prior_prob)) < 1e-6
    assert float(neg.median()) < 3 * cfg.prior_prob, float(neg.median())
    _, neg0 = negatives(override(cfg, prior_prob=0.0))   # the paper's start: cos / tau alone, near 0.5 for this random tower
    assert float(neg0.median()) > 0.3, float(neg0.median())


def test_finetune_loss_ignores_a_shift_shared_by_every_prompt(world, init_ckpt):
    """The mini and smoke finetune recipes train on logits centred over the prompts: a feature move that raises a box's
    logits for every prompt at once (the prompts' shared direction) leaves the loss unchanged. Undo it and this fails."""
    from ovstad.data import collate_detection, data_roots
    from ovstad.stages import FinetuneTask, _trainee, load_benchmark
    from ovstad.trainer import override
    for profile in ('mini', 'smoke'):
        assert get_recipe('finetune', profile=profile).center_logits and get_recipe('align', profile=profile).center_logits
    assert not get_recipe('finetune', profile='full').center_logits and not get_recipe('align', profile='full').center_logits
    bench = load_benchmark('ucf_jhmdb', 'smoke', world)
    def losses(cfg):
        det, T, tf = _trainee(init_ckpt, cfg, [data_roots('smoke', world)['ucf101_24']], template=bench.template)
        task = FinetuneTask(det, bench.prompts(bench.base_classes), cfg.gamma, cfg.tau_lr_scale, cfg.center_logits)
        batch = collate_detection([bench.train_dataset(num_frames=T, stride=1, transform=tf, seed=0)[i] for i in range(4)])
        with torch.no_grad():
            l0 = float(task(batch)[0])
            orig = det.forward; det.forward = lambda *a, **k: orig(*a, **k) + 3.0
            return l0, float(task(batch)[0])
    cfg = get_recipe('finetune', profile='smoke', device='cpu')
    a, b = losses(cfg)
    assert abs(a - b) < 1e-4 * max(1.0, abs(a)), (a, b)
    a, b = losses(override(cfg, center_logits=False))   # Eq. 4 as published: the shared shift changes the loss
    assert abs(a - b) > 0.1, (a, b)
