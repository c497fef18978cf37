"""The mini world's learnability frontier: how fast a mini ViCLIP trained from scratch learns the world's actions.

Trains the `mini` ViCLIP with the pretrain stage's loss (`PretrainTask`: InfoNCE of Eq. 1 plus the caption uniformity
term) on the world's pretraining corpus, streamed as the mini recipe streams it (`synth.render_pretrain`: every
sample a fresh clip), and every `--eval-every` steps classifies held-out UCF-JHMDB-analog clips zero-shot against the
prompts `a person <action>` (23 base classes, 9 novel ones never trained as labels; whole frames, global feature).
It prints held-out top-1 per split next to chance and, at the end, the frontier: settings, steps, top-1 vs chance.

The corpus knobs move the world between its v7 calibration (the default), v6's (`--preset v6`: actions played at 1
action frame per video frame instead of 3) and v5's (`--preset v5`: thin limbs, smaller people, 45% of captions naming
an action), so the effect of each change is measured at equal steps:

    .venv/bin/python benchmarks/pretrain_zero_shot.py --steps 1200 --eval-every 200   # the world as built (v7)
    .venv/bin/python benchmarks/pretrain_zero_shot.py --steps 600 --preset v6      # v6's calibration
    .venv/bin/python benchmarks/pretrain_zero_shot.py --steps 600 --preset v5      # v5's calibration
    .venv/bin/python benchmarks/pretrain_zero_shot.py --steps 600 --action-p 0.45  # one knob at a time
    .venv/bin/python benchmarks/pretrain_zero_shot.py --steps 600 --text-uniformity 0   # InfoNCE alone

Measured on 2 cores (mini ViCLIP, 112 px / patch 16, batch 32, AdamW 1e-3, about 2 steps/s; single seed; 23 base / 9
novel classes, chance 4.3 / 11.1, "right verb" chance 10.0 / 13.6; 184 / 72 held-out clips):

| corpus | steps | base % | novel % | right verb, base % |
|---|---|---|---|---|
| v6 without lead or the scene/clothes cut (trained by `ovstad train pretrain`) | 300 / 1200 / 2400 | 6.0 / 4.3 / 3.3 | 9.7 / 13.9 / 16.7 | 8.2 (2400) |
| v6 with lead, scene and clothes words in most captions | 200 / 400 / 600 | 5.4 / 3.8 / 7.1 | 12.5 / 16.7 / 16.7 | - |
| v6 with lead, no clothes in one-person captions, scene in 20% (as built) | 200 / 400 | 3.8 / 6.0 | 15.3 / 13.9 | 7.1 / 8.2 |
| v6, one person per clip | 300 | 5.4 | 8.3 | - |
| v6 as built, 64 px / patch 8 tower (`--image-size 64 --patch 8`) | 200 / 400 | 4.3 / 5.4 | 8.3 / 8.3 | 11.4 / 9.8 |
| **v7 as built** (v6 with every clip's actions at 3 action frames per video frame) | 200 / 400 / 600 / 800 / 1000 / 1200 | 6.0 / 6.0 / 4.3 / 6.5 / 10.9 / 12.0 | 12.5 / 23.6 / 13.9 / 20.8 / 19.4 / 19.4 | 17.4 (1200) |

v7's change came from a supervised probe (a linear head on the mini tower's class token, cross-entropy on 35 solo
actions, fresh clips, batch 32): on 8 consecutive frames of a v6 clip it stayed at chance for 300 steps (three learning
rates, class token or mean token), while on 8 frames taken every third frame it left chance after about 400 steps and
reached 15.2% at 500, 27.2% at 700 and 29.9% at 950 (23 held-out classes, chance 4.3%). Eight consecutive v6 frames
hold half a cycle of the slow actions (periods of 8-18 frames) with a few pixels of motion between frames.

The 2400-step tower's clip embeddings do not group by action (nearest neighbour of the same action 3.1%, chance 3.2%):
InfoNCE is solved by scene and clothing words first. Of the settings tried, only v7's time scale leaves chance.

`--checkpoint` scores saved models instead of training: a ViCLIP file (the shipped mini ViCLIP, a pretrain run's
`viclip.pt`) or the trainer checkpoints of a pretrain run (`runs/pretrain-*/checkpoints/ckpt-*.pt`), so that a long
run's frontier is read off its checkpoints:

    .venv/bin/python benchmarks/pretrain_zero_shot.py --checkpoint runs/pretrain-*/checkpoints/ckpt-*.pt
"""
import argparse, json, math, time

import numpy as np
import torch
import torch.nn.functional as F

from ovstad import synth
from ovstad.benchmarks import make_prompts
from ovstad.data import ClipTransform
from ovstad.models import ViCLIP, get_config
from ovstad.stages import PretrainTask, collate_captions
from ovstad.synth import JHMDB_NOVEL, UCF_BASE, plan_ucf, random_scene, render_clip

PRESETS = {'v7': dict(limb_w=0.13, heights=(0.65, 0.9), people_p=(0.45, 0.45, 0.1), action_p=0.95, lead=(4, 12), scene_p=0.2,
                     time_scale=3.0),
           'v6': dict(limb_w=0.13, heights=(0.65, 0.9), people_p=(0.45, 0.45, 0.1), action_p=0.95, lead=(4, 12), scene_p=0.2,
                     time_scale=1.0),
           'v5': dict(limb_w=0.085, heights=(0.5, 0.78), people_p=(1 / 3, 1 / 3, 1 / 3), action_p=0.45, lead=(0, 1), scene_p=1.0,
                     time_scale=1.0)}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split('\n\n', 2)[2])
    ap.add_argument('--steps', type=int, default=600, help='training steps (compare settings at equal steps)')
    ap.add_argument('--eval-every', type=int, default=150, help='zero-shot evaluation every this many steps')
    ap.add_argument('--preset', choices=sorted(PRESETS), default='v7', help="the world's calibration to start from")
    ap.add_argument('--time-scale', type=float, default=None,
                    help='action frames per video frame of the pretraining and UCF-analog clips (v7 3, v6 1)')
    ap.add_argument('--limb-w', type=float, default=None, help='limb width / body height (v6 0.13, v5 0.085)')
    ap.add_argument('--hmin', type=float, default=None, help='smallest pretraining body height, share of the frame')
    ap.add_argument('--hmax', type=float, default=None, help='largest pretraining body height, share of the frame')
    ap.add_argument('--action-p', type=float, default=None, help='share of captions that name what the people do')
    ap.add_argument('--scene-p', type=float, default=None, help='share of action captions that also name the scene (v6 0.2)')
    ap.add_argument('--canonical', action='store_true',
                    help="captions name each action in the prompts' own words ('a person wave left arm'; novel ones paraphrased)")
    ap.add_argument('--no-lead', action='store_true', help='actions start on the first frame of the clip (v5), not before it')
    ap.add_argument('--one-person', action='store_true', help='only one person per pretraining clip')
    ap.add_argument('--text-uniformity', type=float, default=1.0, help="caption uniformity weight (mini recipe: 1.0)")
    ap.add_argument('--lr', type=float, default=1e-3); ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--per-class', type=int, default=8, help='held-out clips per class')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--image-size', type=int, default=None, help="the tower's input side (mini: 112); clips are resized to it")
    ap.add_argument('--patch', type=int, default=None, help="the tower's patch size (mini: 16)")
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--json', default=None, help='also write the result here')
    ap.add_argument('--checkpoint', nargs='+', default=None, help='score these saved models (ViCLIP files or trainer checkpoints) instead of training')
    return ap.parse_args(argv)


def calibrate(a) -> dict:
    "Set the world generator's knobs from the preset and the flags; returns the settings used."
    p = dict(PRESETS[a.preset])
    if a.limb_w is not None: p['limb_w'] = a.limb_w
    if a.hmin is not None or a.hmax is not None: p['heights'] = (a.hmin or p['heights'][0], a.hmax or p['heights'][1])
    if a.action_p is not None: p['action_p'] = a.action_p
    if a.one_person: p['people_p'] = (1.0, 0.0, 0.0)
    if a.no_lead: p['lead'] = (0, 1)
    if a.scene_p is not None: p['scene_p'] = a.scene_p
    if a.time_scale is not None: p['time_scale'] = a.time_scale
    synth.TIME_SCALE = {**synth.TIME_SCALE, 'pretrain': p['time_scale'], 'ucf': p['time_scale'], 'jhmdb': p['time_scale']}
    synth._LIMB_W, synth._PRETRAIN_HEIGHT = p['limb_w'], tuple(p['heights'])
    synth._PRETRAIN_PEOPLE_P, synth._CAPTION_ACTION_P = tuple(p['people_p']), p['action_p']
    synth._PRETRAIN_LEAD, synth._CAPTION_SCENE_P = tuple(p['lead']), p['scene_p']
    p['canonical'] = bool(a.canonical)
    if a.canonical:   # the label's words for base actions (never a novel name verbatim), the world's subject words
        clause = synth._clause
        def canonical(rng, person, n):
            name = person.segments[0][0]['action']
            return clause(rng, person, n) if name in synth._NOVEL_NAMES else f"{synth._subject(rng, person, n)} {name}"
        synth._clause = canonical
    return p


def main(argv=None):
    a = parse(argv)
    torch.set_num_threads(a.threads); torch.manual_seed(a.seed)
    settings = calibrate(a)
    over = {k: v for k, v in (('image_size', a.image_size), ('patch_size', a.patch)) if v}
    m = ViCLIP.from_config(get_config('mini', **over)); S = m.image_size
    tf = ClipTransform(S, train=True, crop_size=S, scale_range=(1.0, 1.25), flip_p=0.0)
    test_tf = ClipTransform(S)

    def eval_set(names, seed):
        xs, ys = [], []
        for c, name in enumerate(names):
            for i in range(a.per_class):
                rng = np.random.default_rng([seed, c, i]); scene = random_scene(rng, 112, occluder_p=0.15)
                scene['time_scale'] = synth.TIME_SCALE['ucf']
                p = plan_ucf(rng, 112, name)
                xs.append(test_tf(render_clip(scene, p['persons'], p['T'])[0][8:16])[0]); ys.append(c)
        return torch.stack(xs), torch.tensor(ys)
    sets = {'base': (*eval_set(UCF_BASE, 11), UCF_BASE), 'novel': (*eval_set(JHMDB_NOVEL, 12), JHMDB_NOVEL)}
    chance = {'base': 100 / len(UCF_BASE), 'novel': 100 / len(JHMDB_NOVEL)}
    for k, names in (('base', UCF_BASE), ('novel', JHMDB_NOVEL)):   # a uniform guess names the right verb this often
        vs = [synth.ACTIONS[n].verb for n in names]; chance[f'{k}_verb'] = 100 * sum(vs.count(v) for v in vs) / len(vs) ** 2

    task = PretrainTask(m, temp_trainable=True, text_uniformity=a.text_uniformity)
    opt = torch.optim.AdamW(m.parameters(), lr=a.lr, weight_decay=0.05)

    @torch.no_grad()
    def evaluate():
        m.eval(); out = {}
        for k, (E, y, names) in sets.items():
            t = F.normalize(m.encode_text(make_prompts(names)), dim=-1)
            v = F.normalize(torch.cat([m.encode_video(E[i:i + 64]) for i in range(0, len(E), 64)]), dim=-1)
            pred = (v @ t.T).argmax(1)
            out[k] = round((pred == y).float().mean().item() * 100, 1)
            verb = torch.tensor([hash(synth.ACTIONS[n].verb) for n in names])   # the coarse action (raise, kick, ...), sides aside
            out[f'{k}_verb'] = round((verb[pred] == verb[y]).float().mean().item() * 100, 1)
        m.train(); return out

    if a.checkpoint: return score_checkpoints(a, m, evaluate, chance)

    rows, t_render, t1 = [], 0.0, time.time()
    print(f"settings {settings}; text uniformity {a.text_uniformity}; {a.steps} steps of {a.bs}", flush=True)
    for step in range(a.steps):
        t0 = time.time(); items = []
        for j in range(a.bs):
            i = step * a.bs + j  # every sample a fresh clip, as the mini recipe's stream
            fr, cap = synth.render_pretrain(1000 + a.seed, i)
            items.append({'video': tf(fr, None, np.random.default_rng([a.seed, i]))[0], 'caption': cap})
        batch = collate_captions(items); t_render += time.time() - t0
        for g in opt.param_groups: g['lr'] = a.lr * min(1, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        loss = task(batch)[0]
        opt.zero_grad(); loss.backward(); opt.step()
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            r = dict(steps=step + 1, loss=round(loss.item(), 3), **evaluate()); rows.append(r)
            el = time.time() - t1
            print(f"step {step + 1}: loss {r['loss']}, zero-shot top-1 base {r['base']}% (chance {chance['base']:.1f}), novel "
                  f"{r['novel']}% (chance {chance['novel']:.1f}), right verb base {r['base_verb']}% (chance {chance['base_verb']:.1f}); {(step + 1) / el:.2f} steps/s, rendering {100 * t_render / el:.0f}%",
                  flush=True)
    print('\nlearnability frontier (held-out zero-shot top-1, whole frames, global feature):')
    print(f"| settings | steps | base % (x chance) | novel % (x chance) |\n|---|---|---|---|")
    desc = f"{a.preset}: time scale {settings['time_scale']}, limbs {settings['limb_w']}, heights {settings['heights']}, people {settings['people_p']}, action captions {settings['action_p']}, lead {settings['lead']}"
    for r in rows:
        print(f"| {desc} | {r['steps']} | {r['base']} ({r['base'] / chance['base']:.1f}x) | {r['novel']} ({r['novel'] / chance['novel']:.1f}x) |")
    res = dict(settings=settings, text_uniformity=a.text_uniformity, rows=rows, chance=chance)
    print('RESULT', json.dumps(res), flush=True)
    if a.json: open(a.json, 'w').write(json.dumps(res, indent=1))
    return res


def _weights(path) -> tuple:
    "(ViCLIP state dict, steps or None) of a ViCLIP file or a pretrain trainer checkpoint (weights only)."
    from ovstad.core import load_checkpoint
    sd = load_checkpoint(path, what='checkpoint')
    if 'model' in sd and isinstance(sd['model'], dict) and any(k.startswith('viclip.') for k in sd['model']):  # trainer: PretrainTask
        return {k[len('viclip.'):]: v for k, v in sd['model'].items() if k.startswith('viclip.')}, sd.get('step')
    return sd.get('model', sd), None


def score_checkpoints(a, m, evaluate, chance) -> dict:
    "Held-out zero-shot top-1 of each saved model, against chance."
    import re
    rows = []
    for p in a.checkpoint:
        sd, step = _weights(p)
        missing, unexpected = m.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
        if unexpected or [k for k in missing if 'pos' not in k]:
            raise SystemExit(f"{p}: not a mini ViCLIP (missing {missing[:3]}, unexpected {unexpected[:3]})")
        if step is None: mt = re.search(r'ckpt-(\d+)', str(p)); step = int(mt.group(1)) if mt else None
        r = dict(checkpoint=str(p), steps=step, **evaluate()); rows.append(r)
        print(f"{p}: step {step}: zero-shot top-1 base {r['base']}% ({r['base'] / chance['base']:.1f}x chance {chance['base']:.1f}), "
              f"novel {r['novel']}% ({r['novel'] / chance['novel']:.1f}x chance {chance['novel']:.1f}); right verb: base {r['base_verb']}% "
              f"(chance {chance['base_verb']:.1f}), novel {r['novel_verb']}% (chance {chance['novel_verb']:.1f})", flush=True)
    res = dict(rows=rows, chance=chance)
    print('RESULT', json.dumps(res), flush=True)
    if a.json: open(a.json, 'w').write(json.dumps(res, indent=1))
    return res


if __name__ == '__main__':
    main()
