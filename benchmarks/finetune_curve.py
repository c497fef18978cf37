"""The fast inner loop of the training stages: held-out Frame mAP while a finetune (or an alignment) trains.

Starts from a ViCLIP checkpoint (default: the profile's own start, the shipped mini ViCLIP on mini), trains the stage's
recipe (`ovstad.stages.get_recipe`, with `--set KEY=VALUE` overrides) for `--steps` steps and, every `--every` steps,
scores the benchmark's held-out eval sets the way `ovstad detect` does (the detect recipe's clip reading, the
trained fusion ratio beta) and prints Frame mAP@0.5 on base and novel classes, beside the zero-shot model (step 0)
and the chance level (the same detections with random scores). The training is the stage's own code (`train`, the
stage's task and dataset), resumed segment by segment, so step k here is step k of `ovstad train finetune`.

    .venv/bin/python benchmarks/finetune_curve.py [--stage finetune|align] [--benchmark ucf_jhmdb|ov_ava]
        [--profile mini] [--checkpoint PATH] [--steps 160] [--every 40] [--max-videos 0] [--set lr=1e-4 ...]
        [--train-videos N] [--json OUT] [--threads 2]
    .venv/bin/python benchmarks/finetune_curve.py --plot curves.png A.json B.json ...   # draw saved curves side by side

`--train-videos N` also scores the first N training videos per class (UCF-JHMDB only), so that a finetune that does
not even fit its own training videos shows at once. About 5 minutes on 2 cores for 160 steps on mini.
"""
import argparse, json, os, sys, tempfile, time
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np, torch

from ovstad.core import OvstadError
from ovstad.stages import (AlignTask, FinetuneTask, _Seeded, _trainee, base_viclip, get_recipe, load_benchmark,
                           score_dataset, _artefact, region_text_pairs, PairsConfig)
from ovstad.data import collate_detection, data_roots
from ovstad.trainer import override, train


def eval_sets(bench, name, dcfg, T, short, max_videos, train_videos):
    "{part: (dataset, prompts, labels)} of the held-out sets (and, with train_videos, the first training videos of each class)."
    kw = dict(keyframe_step=dcfg.keyframe_step, max_videos=max_videos or None) if name == 'ucf_jhmdb' else dict(max_keyframes=max_videos or None)
    sets = bench.eval_datasets(num_frames=T, stride=dcfg.stride, short_side=short, **kw)
    out = {}
    for part, ds in sets.items():
        classes = {'base': bench.base_classes, 'novel': bench.novel_classes}.get(part, bench.all_classes)
        out[part] = (ds, bench.prompts(classes), [bench.all_classes.index_of(i) for i in classes.ids])
    if train_videos and name == 'ucf_jhmdb':
        from ovstad.data import ActDetectionDataset
        gt, per = bench.ucf_gt, {}
        for v in gt['train_videos'][0]:
            lab = next(iter(gt['gttubes'][v]))
            per.setdefault(lab, []).append(v)
        vids = [v for vs in per.values() for v in vs[:train_videos]]
        ds = ActDetectionDataset(gt, bench.ucf_root, vids, 'eval', T, dcfg.stride, dcfg.keyframe_step,
                                 proposals=bench._proposals('base', bench.eval_threshold), transform=sets['base'].transform)
        out['train'] = (ds, out['base'][1], out['base'][2])
    return out


def frame_map(bench, name, det, sets, beta, dcfg, chance_seeds=0):
    """{part: Frame mAP %} of the detector on each set; with `chance_seeds` > 0 also the chance level {part: %} (the same
    detections with uniformly random scores, mean over that many draws)."""
    from ovstad.stages import evaluate_detections, _to_ava
    det.beta = beta
    dfs = {p: score_dataset(det, ds, pr, lab, 8, 'cpu', 0, False) for p, (ds, pr, lab) in sets.items()}
    def ev(dfs):
        if name == 'ucf_jhmdb':
            gts = {'base': bench.ucf_gt, 'train': bench.ucf_gt, 'novel': bench.jhmdb_gt}
            split = {'base': 1, 'train': 1, 'novel': bench.jhmdb_split}
            res = {p: _act_map(gts[p], split[p], bench.split_detections(d)['novel' if p == 'novel' else 'base'], sets[p][0], dcfg)
                   for p, d in dfs.items()}
        else:
            r = evaluate_detections(bench, _to_ava(dfs['val'], bench.all_classes), dcfg)
            res = {'base': r['base'].map, 'novel': r['novel'].map}
        return {k: 100 * float(v) for k, v in res.items()}
    if not chance_seeds: return ev(dfs)
    draws = [ev({p: d.assign(score=np.random.default_rng(s).random(len(d))) for p, d in dfs.items()}) for s in range(chance_seeds)]
    return ev(dfs), {k: float(np.mean([d[k] for d in draws])) for k in draws[0]}


def _act_map(gt, split, df, ds, dcfg):
    "ACT frameAP of `df` against the GT of the videos `ds` scores (the split's test list restricted to them), every keyframe_step-th frame."
    from ovstad.benchmarks import _restrict_gt
    from ovstad.eval import act_frame_map
    vids = sorted({kf.video for kf in ds.keyframes})
    g = _restrict_gt(gt, None, dcfg.keyframe_step)
    g = {**g, 'test_videos': [vids] * len(gt['test_videos'])}
    return act_frame_map(g, df, split=split).map


def plot_curves(paths, out):
    "Draw saved curves (`--json` files): held-out base and novel Frame mAP against steps, zero-shot at step 0, chance dotted."
    import matplotlib; matplotlib.use('agg'); import matplotlib.pyplot as plt
    curves = [json.loads(Path(p).read_text()) for p in paths]
    fig, axs = plt.subplots(1, 2, figsize=(11, 3.8), layout='constrained')
    for k, (ax, part) in enumerate(zip(axs, ('base', 'novel'))):
        for i, c in enumerate(curves):
            rows = [r for r in c['rows'] if r['step'] != 'chance']
            label = c.get('label') or ' '.join(c.get('set') or []) or 'recipe'
            ax.plot([r['step'] for r in rows], [r[part] for r in rows], marker='o', ms=3, color=f'C{i}', label=label)
        ch = [r[part] for c in curves for r in c['rows'] if r['step'] == 'chance']
        if ch: ax.axhline(float(np.mean(ch)), ls=':', color='gray', label='chance')
        ax.set_xlabel('training step (0: zero-shot)'); ax.set_ylabel(f'{part} Frame mAP@0.5 (%)')
        ax.set_title(f"{curves[0]['stage']} on {curves[0]['benchmark']} ({curves[0]['profile']}): {part}", fontsize=9)
    axs[1].legend(fontsize=7, loc='best')
    fig.savefig(out, dpi=90); print(f"wrote {out}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    ap.add_argument('--stage', default='finetune', choices=('finetune', 'align'))
    ap.add_argument('--benchmark', default='ucf_jhmdb', choices=('ucf_jhmdb', 'ov_ava'))
    ap.add_argument('--profile', default='mini', choices=('smoke', 'mini'))
    ap.add_argument('--checkpoint', default=None, help='ViCLIP checkpoint to start from (default: the profile\'s ViCLIP)')
    ap.add_argument('--steps', type=int, default=160)
    ap.add_argument('--every', type=int, default=40)
    ap.add_argument('--max-videos', type=int, default=0, help='eval videos (UCF-JHMDB) or keyframes (OV-AVA) per set; 0: all')
    ap.add_argument('--train-videos', type=int, default=0, help='also score the first N training videos of each base class')
    ap.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='recipe overrides (FinetuneConfig / AlignConfig)')
    ap.add_argument('--json', default=None, help='write the curve here')
    ap.add_argument('--label', default=None, help='name of this curve in --plot (default: its --set overrides)')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--plot', default=None, metavar='PNG', help='draw the curves of the JSON files given as arguments and exit')
    ap.add_argument('curves', nargs='*', help='with --plot: curve files written by --json')
    a = ap.parse_args(argv)
    if a.plot: return plot_curves(a.curves, a.plot)
    torch.set_num_threads(a.threads)
    if a.steps % a.every: raise SystemExit(f"--steps {a.steps} must be a multiple of --every {a.every}")
    ckpt = Path(a.checkpoint) if a.checkpoint else _artefact(base_viclip(a.profile))[0]
    cfg = get_recipe(a.stage, benchmark=a.benchmark, profile=a.profile) if a.stage == 'finetune' else get_recipe('align', profile=a.profile)
    cfg = override(cfg, [*a.set, f'steps={a.steps}', f'ckpt_every={a.every}', 'progress=false', 'device=cpu'])
    dcfg = get_recipe('detect', a.benchmark, a.profile)
    bench = load_benchmark(a.benchmark, a.profile)
    roots = data_roots(a.profile)
    if a.stage == 'finetune':
        det, T, tf = _trainee(ckpt, cfg, [roots['ucf101_24'] if a.benchmark == 'ucf_jhmdb' else roots['ava']], template=bench.template)
        kw = dict(keyframe_step=cfg.keyframe_step) if a.benchmark == 'ucf_jhmdb' else {}
        ds = _Seeded(bench.train_dataset(num_frames=T, stride=cfg.stride, transform=tf, seed=cfg.seed, **kw))
        task = FinetuneTask(det, bench.prompts(bench.base_classes), cfg.gamma, cfg.tau_lr_scale, cfg.center_logits)
    else:
        from ovstad.benchmarks import RegionTextDataset
        pairs = region_text_pairs(PairsConfig(tuple(cfg.sources), cfg.fraction, cfg.seed), 'runs', a.profile)
        det, T, tf = _trainee(ckpt, cfg, [roots[s] for s in cfg.sources], template=bench.template)
        ds = _Seeded(RegionTextDataset(pairs.path, num_frames=T, stride=cfg.stride, transform=tf, seed=cfg.seed), cfg.max_boxes)
        task = AlignTask(det, cfg.gamma, cfg.tau_lr_scale, cfg.center_logits)
    short = dcfg.short_side or det.viclip.image_size
    sets = eval_sets(bench, a.benchmark, dcfg, T, short, a.max_videos, a.train_videos)
    beta = cfg.beta
    print(f"{a.stage} {a.benchmark} on {a.profile} from {ckpt}: {cfg}", file=sys.stderr)
    print(f"eval sets: " + ', '.join(f"{p} {len(s[0])} keyframes" for p, s in sets.items()) + f"; fusion beta {beta}", file=sys.stderr)
    t0 = time.time()
    zero, chance = frame_map(bench, a.benchmark, det, sets, beta, dcfg, chance_seeds=3)
    rows = [{'step': 'chance', **chance}, {'step': 0, **zero, 'tau': float(det.tau.detach()), 'bias': float(det.logit_bias.detach()), 'train_s': 0.0}]
    parts = [k for k in rows[0] if k != 'step']
    print(f"{'step':>7} " + ' '.join(f"{p:>8}" for p in parts) + f" {'tau':>7} {'bias':>6} {'loss':>7} {'s':>6}")
    def show(r):
        print(f"{r['step']:>7} " + ' '.join(f"{r[p]:8.2f}" for p in parts) + (f" {r.get('tau', float('nan')):7.4f} {r.get('bias', float('nan')):6.2f} {r.get('loss', float('nan')):7.3f} {r.get('train_s', 0):6.0f}" if r['step'] != 'chance' else ''), flush=True)
    for r in rows: show(r)
    with tempfile.TemporaryDirectory() as run_dir:
        for s in range(a.every, a.steps + 1, a.every):
            res = train(task, ds, cfg, run_dir, collate_detection, resume=True, desc='curve', stop_after=s)
            loss = float(np.mean([h[1] for h in res.history[-a.every:]])) if res.history else float('nan')
            r = {'step': s, **frame_map(bench, a.benchmark, det, sets, beta, dcfg), 'tau': float(det.tau.detach()), 'bias': float(det.logit_bias.detach()), 'loss': loss,
                 'train_s': time.time() - t0}
            rows.append(r); show(r)
    zs = rows[1]
    best = max(rows[2:], key=lambda r: r['base']) if len(rows) > 2 else zs
    print(f"best base at step {best['step']}: {best['base']:.2f} = {best['base'] / max(zs['base'], 1e-9):.2f}x zero-shot "
          f"{zs['base']:.2f} ({best['base'] / max(rows[0]['base'], 1e-9):.1f}x chance {rows[0]['base']:.2f}); "
          f"novel {best['novel']:.2f} (zero-shot {zs['novel']:.2f}, chance {rows[0]['novel']:.2f}); {time.time() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({'stage': a.stage, 'benchmark': a.benchmark, 'profile': a.profile, 'set': a.set, 'label': a.label,
                                            'checkpoint': str(ckpt), 'rows': rows}, indent=1))


if __name__ == '__main__':
    try: main()
    except OvstadError as e: raise SystemExit(f"error: {e}")
