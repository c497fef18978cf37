"""How fast does a mini ViCLIP trained from scratch learn the mini world's actions?

Renders a pretraining corpus in memory (no mp4 round trip), trains the `mini` ViCLIP for a fixed time budget
with InfoNCE (Eq. 1) on the captions (the pretrain stage's `PretrainTask`; `--text-uniformity` adds its caption
uniformity term), or with cross-entropy on the action label (`--supervised`, a linear head on
the global embedding), and every 100 steps classifies whole frames of held-out UCF-JHMDB-analog clips zero-shot
against the prompts `a person <action>` (23 base classes, 9 novel; 8 clips each, frames 8-15 of 24). It prints
top-1 accuracy per split next to chance, and the mean cosine between the prompt embeddings (near 1: the text
tower cannot tell the actions apart).

The corpus knobs move between the world's pretraining corpus (defaults: 1-3 people, 0.5-0.78 of the frame high,
textured scenes, 45% of captions about an action) and an easy one (one large person, plain background, every
caption `a person <action>`):

    .venv/bin/python benchmarks/pretrain_zero_shot.py --seconds 300                 # the world's corpus
    .venv/bin/python benchmarks/pretrain_zero_shot.py --single-p 1 --hmin 0.7 --hmax 0.92 --plain-p 1 \\
        --stand-p 0 --action-p 1 --canon-p 1 --res 64 --seconds 1200                 # the easiest contrastive case
    .venv/bin/python benchmarks/pretrain_zero_shot.py --supervised --single-p 1 --hmin 0.7 --hmax 0.92 \\
        --plain-p 1 --stand-p 0 --res 64                                             # labels instead of captions
"""
import argparse, json, math, time

import numpy as np
import torch
import torch.nn.functional as F

from ovstad import synth
from ovstad.benchmarks import make_prompts
from ovstad.data import IMAGENET_MEAN, IMAGENET_STD
from ovstad.models import ViCLIP
from ovstad.stages import PretrainTask
from ovstad.synth import (JHMDB_NOVEL, NFRAMES, UCF_BASE, _SOLO, _ch, _people, caption_pretrain, plan_ucf,
                          random_scene, render_clip)

S, T = 112, NFRAMES['pretrain']
MEAN, STD = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split('\n\n', 2)[2])
    ap.add_argument('--n', type=int, default=3000, help='pretraining clips rendered (8 frames, 112 px)')
    ap.add_argument('--seconds', type=float, default=300, help='training time budget')
    ap.add_argument('--single-p', type=float, default=0.33, help='share of clips with one person (else 2-3)')
    ap.add_argument('--hmin', type=float, default=0.5, help='smallest body height, as a share of the frame')
    ap.add_argument('--hmax', type=float, default=0.78, help='largest body height, as a share of the frame')
    ap.add_argument('--plain-p', type=float, default=0.0, help='share of clips on a plain background without objects')
    ap.add_argument('--stand-p', type=float, default=0.1, help='share of people who only stand')
    ap.add_argument('--action-p', type=float, default=0.45, help='share of captions about an action (the world uses 0.45)')
    ap.add_argument('--canon-p', type=float, default=0.0, help="share of captions replaced by 'a person <action>'")
    ap.add_argument('--supervised', action='store_true', help='cross-entropy on the first person\'s action instead of InfoNCE')
    ap.add_argument('--res', type=int, default=112, help='input side the clips are resized to (64 is ~3x faster)')
    ap.add_argument('--lr', type=float, default=1e-3); ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--temp', type=float, default=0.07, help='initial InfoNCE temperature')
    ap.add_argument('--text-uniformity', type=float, default=0.0,
                    help="weight of the caption uniformity term (the mini recipe's text_uniformity is 1.0; 0: InfoNCE alone)")
    ap.add_argument('--threads', type=int, default=2)
    return ap.parse_args(argv)


def main(argv=None):
    a = parse(argv)
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    synth._CAPTION_ACTION_P = a.action_p

    def norm(fr):  # (T, H, W, 3) uint8 -> (T, 3, res, res) normalized
        x = (torch.from_numpy(fr).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
        return x if a.res == S else F.interpolate(x, size=(a.res, a.res), mode='bilinear', antialias=True, align_corners=False)

    t0 = time.time(); X = np.zeros((a.n, T, S, S, 3), np.uint8); caps, labs = [], []
    for i in range(a.n):
        rng = np.random.default_rng([7, 1, i])
        plain = rng.random() < a.plain_p
        scene = random_scene(rng, S, n_objects=(0, 0) if plain else (1, 3), occluder_p=0.0)
        if plain: scene['canvas'][:] = scene['canvas'].reshape(-1, 3).mean(0).astype(np.uint8)
        n = 1 if rng.random() < a.single_p else int(rng.integers(2, 4))
        acts = [str(_ch(rng, _SOLO)) if rng.random() > a.stand_p else 'stand' for _ in range(n)]
        ps = _people(rng, S, n, a.hmin, a.hmax, acts, T, 0.2)
        X[i] = render_clip(scene, ps, T)[0]
        cap = caption_pretrain(rng, scene, ps)
        if acts[0] != 'stand' and rng.random() < a.canon_p: cap = 'a person ' + acts[0]
        caps.append(cap); labs.append(_SOLO.index(acts[0]) if acts[0] in _SOLO else -100)
    print(f'rendered {a.n} clips in {time.time() - t0:.0f} s; captions e.g. {caps[:3]}', flush=True)

    def eval_set(names, seed, per=8):
        xs, ys = [], []
        for c, name in enumerate(names):
            for i in range(per):
                rng = np.random.default_rng([seed, c, i]); scene = random_scene(rng, S, occluder_p=0.15)
                p = plan_ucf(rng, S, name); xs.append(norm(render_clip(scene, p['persons'], p['T'])[0][8:16])); ys.append(c)
        return torch.stack(xs), torch.tensor(ys)
    sets = {'base': (*eval_set(UCF_BASE, 11), UCF_BASE), 'novel': (*eval_set(JHMDB_NOVEL, 12), JHMDB_NOVEL)}

    m = ViCLIP.from_config('mini', temp_init=a.temp); head = torch.nn.Linear(m.config.embed_dim, len(_SOLO))
    task = PretrainTask(m, temp_trainable=True, text_uniformity=a.text_uniformity)  # the pretrain stage's loss
    opt = torch.optim.AdamW(list(m.parameters()) + list(head.parameters()), lr=a.lr, weight_decay=0.05)

    @torch.no_grad()
    def evaluate():
        m.eval(); out = {}
        for k, (E, y, names) in sets.items():
            t = head.weight[[_SOLO.index(n) for n in names]] if a.supervised else m.encode_text(make_prompts(names))
            t = F.normalize(t, dim=-1)
            v = F.normalize(torch.cat([m.encode_video(E[i:i + 64]) for i in range(0, len(E), 64)]), dim=-1)
            out[k] = round(((v @ t.T).argmax(1) == y).float().mean().item() * 100, 1)
            out[f'{k}_prompt_cos'] = round(((t @ t.T).sum() - len(t)).item() / (len(t) * (len(t) - 1)), 3)
        m.train(); return out

    step, t1 = 0, time.time()
    while time.time() - t1 < a.seconds:
        idx = np.random.default_rng([3, step]).choice(a.n, a.bs, replace=False)
        x = torch.stack([norm(X[j]) for j in idx])
        frac = min(1.0, (time.time() - t1) / a.seconds)
        for g in opt.param_groups: g['lr'] = a.lr * min(1, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * frac))
        if a.supervised: loss = F.cross_entropy(head(m.encode_video(x)), torch.tensor([labs[j] for j in idx]))
        else: loss = task({'video': x, 'captions': [caps[j] for j in idx]})[0]
        opt.zero_grad(); loss.backward(); opt.step(); step += 1
        if step % 50 == 0:
            print(f'step {step} loss {loss.item():.3f} {step * a.bs / (time.time() - t1):.1f} clips/s',
                  evaluate() if step % 100 == 0 else '', flush=True)
    res = dict(steps=step, **evaluate(), chance_base=round(100 / len(UCF_BASE), 1), chance_novel=round(100 / len(JHMDB_NOVEL), 1),
               args=vars(a))
    print('RESULT', json.dumps(res), flush=True)
    return res


if __name__ == '__main__':
    main()
