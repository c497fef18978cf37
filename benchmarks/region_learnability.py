"""Can a ViCLIP video tower learn the world's actions, read the paper's way? A supervised check with a time budget.

Trains the video tower of a ViCLIP (a config name with overrides, or a checkpoint) and a linear head with
cross-entropy on the UCF101-24 train keyframes (GT boxes, base classes), for a fixed time, then reports top-1 on the
held-out test keyframes against chance. Two readouts of a box:

* `region` (the paper's): RoIAlign of the patch-token map (`OVSTAD.region_features`, beta 1) on the whole frame;
* `crop`: the class token of the person's crop (the box squared with 10% margin, resized to the tower's input
  side), the way `synth_learnability.py` feeds its 3D CNN.

The text tower is not used: this asks whether the video tower's features can carry the actions at all. On the mini
world (2 CPU cores, 240 s) a from-scratch `mini` tower reached 20% held-out with `crop` (chance 4.3%) and stayed at chance (3.3%)
with `region`, also with 8-px patches, an 8-frame temporal kernel, or no position embedding. With
`--seconds 1500` the `region` reading memorizes the training videos (90% train) and stays at chance held-out (5.2%). Use it to try a tower
design before spending a pretraining on it (on a GPU: `--device cuda`).

    .venv/bin/python benchmarks/region_learnability.py [--model mini] [--set patch_size=8] [--readout region|crop]
                                                       [--seconds 240] [--lr 5e-4] [--threads 2]
"""
import argparse, dataclasses, os, sys, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from torchvision.ops import roi_align

from ovstad.data import ActDetectionDataset, ClipTransform, collate_detection
from ovstad.models import CONFIG_NAMES, OVSTAD, ViCLIP, get_config
from ovstad.models import OVSTAD
from ovstad.data import world_root
from ovstad.stages import load_benchmark
from ovstad.trainer import override


def crop_clips(video, rois, size):
    "(K, T, 3, size, size): each box's square crop (10% margin) from every frame of its clip."
    B, T = video.shape[:2]
    x1, y1, x2, y2 = rois[:, 1:].unbind(1)
    cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, torch.maximum(x2 - x1, y2 - y1) * 1.1
    sq = torch.stack([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], 1)
    idx = torch.cat([rois[:, :1] * T + t for t in range(T)])                   # frame index in (B*T), t-major
    c = roi_align(video.flatten(0, 1), torch.cat([idx, sq.repeat(T, 1)], 1), (size, size), 1.0, 2, True)
    return c.view(T, len(rois), *c.shape[1:]).transpose(0, 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__[__doc__.index('\n'):])
    ap.add_argument('--model', default='mini', help=f'a config name {CONFIG_NAMES} (random weights) or a ViCLIP-layout checkpoint')
    ap.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                    help='override a video-tower field of a named config (repeatable), e.g. patch_size=8, temporal_kernel=8, layers=6')
    ap.add_argument('--readout', default='region', choices=['region', 'crop'])
    ap.add_argument('--seconds', type=float, default=240.0, help='training time budget (default 240)')
    ap.add_argument('--lr', type=float, default=5e-4); ap.add_argument('--batch-size', type=int, default=16)
    ap.add_argument('--profile', default='mini', choices=['smoke', 'mini', 'full'])
    ap.add_argument('--data-root', default=None, help='folder of the world (default: data/<profile>)')
    ap.add_argument('--device', default='cpu'); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads); torch.manual_seed(a.seed)
    b = load_benchmark('ucf_jhmdb', a.profile, a.data_root or (world_root(a.profile) if a.profile != 'full' else None))
    if a.model in CONFIG_NAMES:
        cfg = get_config(a.model)
        det = OVSTAD(ViCLIP.from_config(dataclasses.replace(cfg, vision=override(cfg.vision, a.set))), beta=1.0)
    elif a.set: raise SystemExit("--set applies to a named config, not to a checkpoint")
    else: det = OVSTAD.from_checkpoint(a.model, beta=1.0, template=b.template)
    det.beta, dev, vc = 1.0, torch.device(a.device), det.viclip
    det.to(dev).train()
    S, C = vc.image_size, len(b.base_classes)
    def dataset(videos, train):
        tf = ClipTransform(S, train=train, crop_size=S if train else None, flip_p=0.0)
        return ActDetectionDataset(b.ucf_gt, b.ucf_root, list(videos), 'train', vc.num_frames, 1, 1 if train else 6, None, C,
                                   None, False, tf, False, a.seed)
    train_ds, test_ds = dataset(b.ucf_gt['train_videos'][0], True), dataset(b.ucf_gt['test_videos'][0], False)
    head = nn.Linear(vc.embed_dim, C).to(dev)
    def features(bt):
        v, r = bt['video'].to(dev), bt['rois'].to(dev)
        return det.region_features(v, r) if a.readout == 'region' else vc.encode_video(crop_clips(v, r, S))
    params = [p for n, p in det.named_parameters() if n.startswith('viclip.vision_encoder')] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.05)
    dl = torch.utils.data.DataLoader(train_ds, batch_size=a.batch_size, shuffle=True, collate_fn=collate_detection, drop_last=True)
    print(f"{a.model} {' '.join(a.set)} readout {a.readout}: {sum(p.numel() for p in params) / 1e6:.2f}M trained parameters, "
          f"{len(train_ds)} train / {len(test_ds)} test keyframes, {C} classes, {a.seconds:.0f} s on {a.device}", flush=True)
    t0, step, accs = time.time(), 0, []
    while time.time() - t0 < a.seconds:
        for bt in dl:
            logits = head(features(bt)); y = bt['labels'].to(dev).argmax(1)
            loss = F.cross_entropy(logits, y); opt.zero_grad(); loss.backward(); opt.step(); step += 1
            accs.append(float((logits.argmax(1) == y).float().mean()))
            if step % 100 == 0: print(f"  {time.time() - t0:5.0f} s  step {step}  loss {loss.item():.3f}  train acc {np.mean(accs[-50:]):.3f}", flush=True)
            if time.time() - t0 >= a.seconds: break
    wall = time.time() - t0
    det.eval(); hits = n = 0
    with torch.no_grad():
        for bt in torch.utils.data.DataLoader(test_ds, batch_size=32, collate_fn=collate_detection):
            p = head(features(bt)).argmax(1).cpu(); hits += int((p == bt['labels'].argmax(1)).sum()); n += len(p)
    print(f"steps {step} ({step / wall:.2f} steps/s, {step * a.batch_size / wall:.1f} clips/s); "
          f"train acc (last 50 steps) {100 * np.mean(accs[-50:] or [0]):.1f}%; held-out top-1 {100 * hits / max(n, 1):.1f}% "
          f"(chance {100 / C:.1f}%)")


if __name__ == '__main__':
    sys.exit(main())
