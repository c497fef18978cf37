"""Does a checkpoint tell the classes apart on ground-truth boxes? Top-1 accuracy of the GT box among its part's prompts.

For every test video of the UCF-JHMDB benchmark (base part: the UCF101-24 test list against the base prompts; novel
part: the JHMDB test split against the novel prompts), one keyframe (the middle annotated frame of the video's first
GT tube) is scored the way the probe widget scores it: its GT box against every prompt of its part, with the fused
region feature (beta). Two readings per part, each against chance (1 / number of prompts):

* **scores**: the prompt with the highest score `sigmoid(cos / tau)` is the box's class;
* **box heat**: the prompt whose similarity map (`ovstad.explore.similarity_map`) is warmest inside the box, on
  average, is the box's class. This reads where the heat lies rather than the box score.

It also prints the mean pairwise cosine of each part's prompt embeddings: near 1, the text tower cannot tell the
prompts apart and no region feature can either.

Frame mAP mixes this with ranking across videos and proposals; this isolates "does the region feature point at the
right prompt". Needs a built world (`ovstad mini build`) or the real datasets under --data-root.

    .venv/bin/python benchmarks/gt_box_top1.py CHECKPOINT [--profile mini] [--beta 0.3] [--max-videos 0] [--threads 2]
"""
import argparse, os, sys, time
from collections import Counter
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np, torch
from tqdm.auto import tqdm

from ovstad.benchmarks import make_prompts
from ovstad.core import OvstadError
from ovstad.data import ClipReader
from ovstad.explore import ProbeSession, box_heat
from ovstad.stages import load_benchmark, world_root


def part_videos(gt: dict, videos, root: Path, limit: int):
    "(video file, keyframe 1-based, label index) of each test video's first tube, middle frame (videos stored as frames: skipped)."
    reader, out = ClipReader(root), []
    for v in videos:
        tubes = gt['gttubes'].get(v, {})
        if not tubes: continue
        label = sorted(tubes)[0]
        tube = tubes[label][0]
        try: path = reader.locate(v)
        except OvstadError: continue
        if path.is_file(): out.append((path, int(tube[len(tube) // 2, 0]), label))
    return out[:limit] if limit else out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__[__doc__.index('\n'):])
    ap.add_argument('checkpoint', help='a ViCLIP-layout checkpoint (e.g. runs/finetune-<hash>/viclip.pt)')
    ap.add_argument('--profile', default='mini', choices=['smoke', 'mini', 'full'])
    ap.add_argument('--data-root', default=None, help='folder of the world (default: data/<profile>)')
    ap.add_argument('--beta', type=float, default=0.3, help='fusion weight of the region feature (default 0.3)')
    ap.add_argument('--max-videos', type=int, default=0, help='at most this many test videos per part (0: all)')
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    root = a.data_root or (world_root(a.profile) if a.profile != 'full' else None)
    b = load_benchmark('ucf_jhmdb', a.profile, root)
    session = ProbeSession(a.checkpoint, beta=a.beta)
    t0, rows = time.time(), []
    parts = (('base', b.ucf_gt, b.ucf_root, b.ucf_gt['test_videos'][0], b.base_classes),
             ('novel', b.jhmdb_gt, b.jhmdb_root, b.jhmdb_gt['test_videos'][b.jhmdb_split - 1], b.novel_classes))
    for part, gt, vroot, vids, classes in parts:
        names = list(classes.names)
        # GT labels index the dataset's own label list; map them to this part's prompts by name
        to_part = {i: names.index(n) for i, n in enumerate(gt['labels']) if n in names}
        session.set_prompts(make_prompts(names))
        with torch.no_grad():                         # are the prompts themselves apart? (mean pairwise cosine)
            e = torch.nn.functional.normalize(session.det.prompt_embeddings(list(session.prompts)).float(), dim=-1)
            cos = float((e @ e.T)[~torch.eye(len(e), dtype=torch.bool)].mean())
        hits = heat_hits = n = 0; picks, heat_picks = [], []
        for path, frame, label in tqdm(part_videos(gt, vids, Path(vroot), a.max_videos), desc=part, mininterval=1.0):
            if label not in to_part: continue
            session.set_clip(path, keyframe=frame - 1); session.set_box_source('gt')
            boxes = session.boxes()
            if boxes.labels == ['whole frame']: continue          # no GT box on that frame
            name = gt['labels'][label]
            k = next((i for i, l in enumerate(boxes.labels) if name in l.split(', ')), 0)  # the box of this tube's class
            res, sm = session.scores(), session.similarity()
            heat = box_heat(sm, boxes.boxes)           # (P, K)
            pick, heat_pick = int(np.argmax(res.scores[k])), int(np.argmax(heat[:, k]))
            hits += int(pick == to_part[label]); heat_hits += int(heat_pick == to_part[label]); n += 1
            picks.append(pick); heat_picks.append(heat_pick)
        def top(xs):  # the most frequent pick and its share
            if not xs: return '-', 0.0
            k, c = Counter(xs).most_common(1)[0]; return names[k], c / len(xs)
        rows.append((part, n, len(names), hits / max(n, 1), heat_hits / max(n, 1), cos, top(picks), top(heat_picks)))
    print(f"GT-box top-1 of {a.checkpoint} (beta {a.beta}; {time.time() - t0:.0f} s)")
    print(f"{'part':6} {'boxes':>5} {'prompts':>7} {'scores':>7} {'box heat':>8} {'chance':>7} {'prompt cos':>10}")
    for part, n, p, s, h, c, *_ in rows: print(f"{part:6} {n:5d} {p:7d} {100 * s:6.1f}% {100 * h:7.1f}% {100 / p:6.1f}% {c:10.3f}")
    print("most frequent best prompt (a model that gives every box one class sits at chance by construction):")
    for part, *_, (ps, fs), (ph, fh) in rows: print(f"  {part}: by score {ps} ({100 * fs:.0f}% of boxes), by heat {ph} ({100 * fh:.0f}%)")


if __name__ == '__main__':
    sys.exit(main())
