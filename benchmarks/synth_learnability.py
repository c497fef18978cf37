"""Learnability of the mini world: can a small video classifier tell its actions apart from the pixels?

Renders fresh clips of every detection class of the UCF-JHMDB analog (23 base + 9 novel; a seed the world
builder does not use), crops each clip around its actor's ground-truth boxes (the union over the clip,
squared, 10% margin), trains a small 3D CNN on random 8-frame windows of the training clips for a fixed time
budget, and reports top-1 accuracy on held-out clips (centre window) against chance (1/32).

    .venv/bin/python benchmarks/synth_learnability.py [--train-per-class 40] [--test-per-class 10] [--seconds 150]
"""
import argparse, json, sys, time

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ovstad import synth

CROP, WIN = 48, 8


def make_set(names, per_class, seed, size=112):
    xs, ys = [], []
    for c, name in enumerate(names):
        for i in range(per_class):
            rng = np.random.default_rng([seed, c, i])
            scene = synth.random_scene(rng, size, occluder_p=0.15)
            plan = synth.plan_ucf(rng, size, name)
            frames, boxes = synth.render_clip(scene, plan['persons'], plan['T'])
            b = boxes[0]; x1, y1 = b[:, 0].min(), b[:, 1].min(); x2, y2 = b[:, 2].max(), b[:, 3].max()
            cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 1.1
            M = np.float32([[CROP / s, 0, CROP / 2 - cx * CROP / s], [0, CROP / s, CROP / 2 - cy * CROP / s]])
            xs.append(np.stack([cv2.warpAffine(f, M, (CROP, CROP), borderMode=cv2.BORDER_REPLICATE) for f in frames]))
            ys.append(c)
    return np.stack(xs), np.array(ys)


class Net(nn.Module):
    "A per-frame 2D conv stem (cheap on CPU) followed by one space-time conv and a linear classifier."
    def __init__(self, n):
        super().__init__()
        blk = lambda a, b, k, s: nn.Sequential(nn.Conv2d(a, b, k, s, k // 2, bias=False), nn.BatchNorm2d(b), nn.ReLU())
        self.stem = nn.Sequential(blk(3, 32, 5, 2), blk(32, 64, 3, 2), blk(64, 96, 3, 2))
        self.st = nn.Sequential(nn.Conv3d(96, 128, 3, (2, 2, 2), 1, bias=False), nn.BatchNorm3d(128), nn.ReLU())
        self.fc = nn.Linear(128, n)
    def forward(self, x):  # (B, 3, T, H, W)
        B, C, T, H, W = x.shape
        f = self.stem(x.transpose(1, 2).reshape(B * T, C, H, W))
        f = f.reshape(B, T, *f.shape[1:]).transpose(1, 2)
        return self.fc(self.st(f).mean((2, 3, 4)))


def to_tensor(x):  # (B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float
    return torch.from_numpy(x).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--train-per-class', type=int, default=40); ap.add_argument('--test-per-class', type=int, default=10)
    ap.add_argument('--seconds', type=float, default=150); ap.add_argument("--threads", type=int, default=1)
    ap.add_argument('--json', default=None, help='write the numbers here')
    a = ap.parse_args(argv)
    torch.manual_seed(0); torch.set_num_threads(a.threads)
    names = synth.UCF_BASE + synth.JHMDB_NOVEL
    t0 = time.time()
    Xtr, ytr = make_set(names, a.train_per_class, 1001); Xte, yte = make_set(names, a.test_per_class, 2002)
    t_render = time.time() - t0
    net = Net(len(names)); opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    rng = np.random.default_rng(0); steps = 0; t1 = time.time()
    while time.time() - t1 < a.seconds:
        idx = rng.choice(len(Xtr), 32, replace=False); st = rng.integers(0, Xtr.shape[1] - WIN + 1, 32)
        xb = np.stack([Xtr[i, s:s + WIN] for i, s in zip(idx, st)])
        loss = F.cross_entropy(net(to_tensor(xb)), torch.from_numpy(ytr[idx]))
        opt.zero_grad(); loss.backward(); opt.step(); steps += 1
    net.eval(); c0 = (Xte.shape[1] - WIN) // 2
    with torch.no_grad():
        pred = torch.cat([net(to_tensor(Xte[i:i + 64, c0:c0 + WIN])).argmax(1) for i in range(0, len(Xte), 64)]).numpy()
    acc = float((pred == yte).mean()); nb = len(synth.UCF_BASE)
    res = dict(classes=len(names), chance=1 / len(names), train_clips=len(Xtr), test_clips=len(Xte), steps=steps,
               train_seconds=round(time.time() - t1, 1), render_seconds=round(t_render, 1), test_accuracy=round(acc, 3),
               test_accuracy_base=round(float((pred == yte)[yte < nb].mean()), 3),
               test_accuracy_novel=round(float((pred == yte)[yte >= nb].mean()), 3), final_train_loss=round(float(loss.detach()), 3))
    print(json.dumps(res, indent=1))
    if a.json:
        with open(a.json, 'w') as f: json.dump(res, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
