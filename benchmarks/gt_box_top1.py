"""Does a checkpoint tell the classes apart on ground-truth boxes, and is a prompt's heat on the person who does it?

Every keyframe is scored the way the probe widget scores it (`ovstad.explore.ProbeSession`: GT boxes, the fused region
feature with fusion weight beta, the clip read at the benchmark's stride). Parts and their prompts:

* `--benchmark ucf_jhmdb`: base = the UCF101-24 test list against the base prompts, novel = the JHMDB test split
  against the novel prompts; one keyframe per video (the middle annotated frame of its first GT tube);
* `--benchmark ov_ava`: base / novel = the AVA val keyframes against the base / novel prompts (every annotated
  keyframe; a box's labels are the part's classes among its actions, boxes with none are not scored).

Readings per part, each against its chance level:

* **scores** / **box heat** (top-1): the prompt with the highest score `sigmoid(cos / tau)` (resp. whose similarity map
  `ovstad.explore.similarity_map` is warmest inside the box, on average) is one of the box's classes. Chance: the mean
  share of the part's prompts that are a box's classes.
* **actor pairs** (AVA, several people per keyframe): for every prompt and every two people of one keyframe of whom
  only the first does the prompted action, is the first person's score (resp. box heat) the higher? This is "does
  the map put the prompted action on the person who does it, rather than on the others". Chance 50%.

It also prints the mean pairwise cosine of each part's prompt embeddings: near 1, the text tower cannot tell the
prompts apart and no region feature can either; and each part's most frequent best prompt (a model that gives every
box one class reaches the share of boxes of that class, not more).

The counting lives in `ovstad.explore` (`gt_box_readings`, `actor_pairs`, `pair_hits`), which the similarity-map page
of `ovstad reproduce` (reports/maps.md, from nbs/experiments/explore_similarity_maps.ipynb) uses too.

Frame mAP mixes this with ranking across videos and proposals; this isolates "does the region feature point at the
right prompt". Needs a built world (`ovstad mini build`) or the real datasets under --data-root.

    .venv/bin/python benchmarks/gt_box_top1.py [CHECKPOINT] [--benchmark ucf_jhmdb|ov_ava] [--profile mini] [--beta 0.3]
                                              [--max-videos 0] [--stride auto] [--threads 2]
"""
import argparse, os, sys, time
from collections import Counter
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np, torch

from ovstad.benchmarks import make_prompts
from ovstad.core import OvstadError
from ovstad.data import ClipReader
from ovstad.explore import ProbeSession, ava_val_keyframes, box_heat, gt_box_readings, stage_checkpoints
from ovstad.data import world_root
from ovstad.stages import load_benchmark


def act_keyframes(gt: dict, videos, root: Path, limit: int):
    "(video file, keyframe 0-based) of each test video's first tube, middle frame (videos stored as frames: skipped)."
    reader, out = ClipReader(root), []
    for v in videos:
        tubes = gt['gttubes'].get(v, {})
        if not tubes: continue
        tube = tubes[sorted(tubes)[0]][0]
        try: path = reader.locate(v)
        except OvstadError: continue
        if path.is_file(): out.append((path, int(tube[len(tube) // 2, 0]) - 1))
    return out[:limit] if limit else out


def ava_keyframes(bench, limit: int):
    "(video file, keyframe 0-based) of every annotated val keyframe (the first `limit` videos when limit > 0): `ovstad.explore.ava_val_keyframes`."
    return ava_val_keyframes(bench, limit)


def auto_checkpoint(benchmark: str):
    "The newest complete finetune run's checkpoint for `benchmark`, else the newest align / pretrain one, else None."
    import json
    found = stage_checkpoints()
    for ck in found:
        cfg = ck.parent/'config.json'
        if ck.parent.name.startswith('finetune-') and cfg.exists() and \
                json.loads(cfg.read_text()).get('config', {}).get('benchmark') == benchmark: return str(ck)
    rest = [ck for ck in found if not ck.parent.name.startswith('finetune-')]
    return str(rest[0]) if rest else None


def score_part(session, names, keyframes, desc):
    """Top-1 hits, actor-pair hits (by score and by heat) and picks over `keyframes` against the prompts of `names`:
    `ovstad.explore.gt_box_readings` (the actor pairs are `ovstad.explore.actor_pairs`, as the maps page reads them)."""
    return gt_box_readings(session, names, make_prompts(names), keyframes, desc, heat_fn=box_heat)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__[__doc__.index('\n'):])
    ap.add_argument('checkpoint', nargs='?', default='auto',
                    help="a ViCLIP-layout checkpoint (e.g. runs/finetune-<hash>/viclip.pt); default auto: the newest complete "
                         "finetune run of --benchmark under runs/, else the newest align or pretrain run")
    ap.add_argument('--benchmark', default='ucf_jhmdb', choices=['ucf_jhmdb', 'ov_ava'])
    ap.add_argument('--profile', default='mini', choices=['smoke', 'mini', 'full'])
    ap.add_argument('--data-root', default=None, help='folder of the world (default: data/<profile>)')
    ap.add_argument('--beta', type=float, default=0.3, help='fusion weight of the region feature (default 0.3)')
    ap.add_argument('--max-videos', type=int, default=0, help='at most this many test videos per part (0: all)')
    ap.add_argument('--stride', default='auto', help="frame stride of the clips (default auto: 1 for UCF101-24/JHMDB, 8 for AVA, "
                    "as the benchmarks train)")
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.checkpoint == 'auto':
        a.checkpoint = auto_checkpoint(a.benchmark)
        if a.checkpoint is None:
            print("gt_box_top1: no complete finetune, align or pretrain run under runs/ to read; run `make reproduce` "
                  "or give a CHECKPOINT (skipped)"); return 0
    root = a.data_root or (world_root(a.profile) if a.profile != 'full' else None)   # builds the world when missing
    b = load_benchmark(a.benchmark, a.profile, root)
    session = ProbeSession(a.checkpoint, beta=a.beta, stride=a.stride if a.stride == 'auto' else int(a.stride))
    if a.benchmark == 'ucf_jhmdb':
        parts = (('base', b.base_classes, act_keyframes(b.ucf_gt, b.ucf_gt['test_videos'][0], Path(b.ucf_root), a.max_videos)),
                 ('novel', b.novel_classes, act_keyframes(b.jhmdb_gt, b.jhmdb_gt['test_videos'][b.jhmdb_split - 1],
                                                          Path(b.jhmdb_root), a.max_videos)))
    else:
        kfs = ava_keyframes(b, a.max_videos)
        parts = (('base', b.base_classes, kfs), ('novel', b.novel_classes, kfs))
    t0 = time.time()
    rows = [(part, list(classes.names), score_part(session, list(classes.names), kfs, part)) for part, classes, kfs in parts]
    pct = lambda x, n: f"{100 * x / n:6.1f}%" if n else '     - '
    print(f"GT-box readings of {a.checkpoint} on {a.benchmark} (beta {a.beta}, stride {a.stride}; {time.time() - t0:.0f} s)")
    print(f"{'part':6} {'boxes':>5} {'prompts':>7} {'scores':>7} {'box heat':>8} {'chance':>7} {'prompt cos':>10} "
          f"{'pairs':>6} {'pair score':>10} {'pair heat':>9}")
    for part, names, r in rows:
        chance = 100 * float(np.mean(r['chance'])) if r['chance'] else 100 / len(names)
        print(f"{part:6} {r['n']:5d} {len(names):7d} {pct(r['hits'], r['n'])} {pct(r['heat_hits'], r['n']):>8} {chance:6.1f}% "
              f"{r['cos']:10.3f} {r['pairs']:6d} {pct(r['pair_hits'], r['pairs']):>10} {pct(r['pair_heat_hits'], r['pairs']):>9}")
    print("actor pairs: chance 50%; '-' where no keyframe has two people of whom only one does a prompted action")
    print("most frequent best prompt (a model that gives every box one class reaches that class's share of boxes):")
    for part, names, r in rows:
        top = lambda xs: (names[Counter(xs).most_common(1)[0][0]], Counter(xs).most_common(1)[0][1] / len(xs)) if xs else ('-', 0.0)
        (ps, fs), (ph, fh) = top(r['picks']), top(r['heat_picks'])
        print(f"  {part}: by score {ps} ({100 * fs:.0f}% of boxes), by heat {ph} ({100 * fh:.0f}%)")


if __name__ == '__main__':
    sys.exit(main())
