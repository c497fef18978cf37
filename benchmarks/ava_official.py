"""`ava_frame_map` against the official ActivityNet AVA algorithm on an AVA-validation-sized synthetic case.

The case has the shape of AVA v2.2 validation: 64 videos x 897 keyframes (0902..1798) = 57,408 keyframes,
about 8 GT rows per keyframe with all 80 AVA action ids (the 60-class label map drops 20 of them), and
about 41 detections per keyframe in the 80-class space, written as the official CSVs. It carries the quirks
that decide the official number on real files: boxes with 3 decimals (so IoUs of exactly 0.5 occur in exact
arithmetic and float rounding decides them), scores with 4 decimals (ties within a keyframe, inside and at
the top-50 cut, and across keyframes), exactly duplicated rows, zero-area boxes, out-of-map action ids and
excluded keyframes.

`official_ava` below follows the official code step by step (activitynet/ActivityNet `Evaluation/`:
`get_ava_performance.read_csv` with `class_whitelist` and the capacity-50 heap, `PascalDetectionEvaluator`
with its per-image, per-class loop, `per_image_evaluation`, `metrics.compute_precision_recall` and
`compute_average_precision`); it is a re-implementation for checking, in plain Python and numpy like the
original, and takes minutes on the full case.

    python benchmarks/ava_official.py [--scale 0.1] [--unannotated both|fp|ignore] [--skip-official]

Prints both mAPs per mode, their difference, the largest per-class difference and both run times.
"""
import argparse, csv, heapq, os, sys, tempfile, time, warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from ovstad.core import ClassList
from ovstad.eval import ava_frame_map

ROOT = Path(__file__).resolve().parent.parent
LABEL_MAP_60 = ROOT.parent/'shared'/'data'/'ava-sample'/'ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt'

# ---------------------------------------------------------------- the official algorithm, for checking

def _key(video_id, timestamp): return "%s,%04d" % (video_id, int(timestamp))

def official_read_csv(path, class_whitelist=None, capacity=0):
    "The official reader: per image key a min-heap of (score, action_id, y1, x1, y2, x2), finally sorted by -score."
    entries = defaultdict(list)
    boxes, labels, scores = defaultdict(list), defaultdict(list), defaultdict(list)
    with open(path) as f:
        for row in csv.reader(f):
            assert len(row) in (7, 8), row
            k = _key(row[0], row[1])
            x1, y1, x2, y2 = [float(n) for n in row[2:6]]
            action_id = int(row[6])
            if class_whitelist and action_id not in class_whitelist: continue
            score = float(row[7]) if len(row) == 8 else 1.0
            if capacity < 1 or len(entries[k]) < capacity: heapq.heappush(entries[k], (score, action_id, y1, x1, y2, x2))
            elif score > entries[k][0][0]: heapq.heapreplace(entries[k], (score, action_id, y1, x1, y2, x2))
    for k in entries:
        for score, action_id, y1, x1, y2, x2 in sorted(entries[k], key=lambda t: -t[0]):
            boxes[k].append([y1, x1, y2, x2]); labels[k].append(action_id); scores[k].append(score)
    return boxes, labels, scores

def official_read_labelmap(path):
    labelmap, ids, name = [], set(), ''
    with open(path) as f:
        for line in f:
            if line.startswith('  name:'): name = line.split('"')[1]
            elif line.startswith('  id:') or line.startswith('  label_id:'):
                i = int(line.strip().split(' ')[-1]); labelmap.append({'id': i, 'name': name}); ids.add(i)
    return labelmap, ids

def _iou(b1, b2):
    "np_box_ops.iou: pairwise IoU of [y1, x1, y2, x2] boxes."
    y_min1, x_min1, y_max1, x_max1 = np.split(b1, 4, axis=1)
    y_min2, x_min2, y_max2, x_max2 = np.split(b2, 4, axis=1)
    h = np.maximum(np.zeros((len(b1), len(b2))), np.minimum(y_max1, y_max2.T) - np.maximum(y_min1, y_min2.T))
    w = np.maximum(np.zeros((len(b1), len(b2))), np.minimum(x_max1, x_max2.T) - np.maximum(x_min1, x_min2.T))
    inter = h * w
    a1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1]); a2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    return inter / (np.expand_dims(a1, 1) + np.expand_dims(a2, 0) - inter)

def _tp_fp_single_class(det_boxes, det_scores, gt_boxes, th):
    if det_boxes.size == 0: return np.array([], dtype=float), np.array([], dtype=bool)
    iou = _iou(det_boxes, gt_boxes)
    if gt_boxes.size == 0: return det_scores, np.zeros(len(det_boxes), dtype=bool)
    tp = np.zeros(len(det_boxes), dtype=bool)
    if iou.shape[1] > 0:
        best = np.argmax(iou, axis=1); taken = np.zeros(iou.shape[1], dtype=bool)
        for i in range(len(det_boxes)):
            g = best[i]
            if iou[i, g] >= th and not taken[g]: tp[i] = True; taken[g] = True
    return det_scores, tp

def official_ava(label_map, gt_csv, det_csv, excl_csv=None, gt_key_filter=False, th=0.5):
    """mAP and per-class AP (id -> AP) as get_ava_performance.run_evaluation computes them.

    gt_key_filter: only detections on keyframes present in the GT are handed to the evaluator (the variant used
    by spatio-temporal detection codebases); False is the plain script."""
    categories, whitelist = official_read_labelmap(label_map)
    excluded = set()
    if excl_csv:
        with open(excl_csv) as f: excluded = {_key(r[0], r[1]) for r in csv.reader(f)}
    num_class = max(c['id'] for c in categories)
    gt_boxes, gt_labels = {}, {}
    n_gt = np.zeros(num_class, dtype=int)
    boxes, labels, _ = official_read_csv(gt_csv, whitelist, 0)
    for k in boxes:
        if k in excluded: continue
        gt_boxes[k] = np.array(boxes[k], dtype=float); gt_labels[k] = np.array(labels[k], dtype=int) - 1
        for c in range(num_class): n_gt[c] += np.sum(gt_labels[k] == c)
    scores_pc = [[] for _ in range(num_class)]; tp_pc = [[] for _ in range(num_class)]
    boxes, labels, scores = official_read_csv(det_csv, whitelist, 50)
    for k in boxes:
        if k in excluded or (gt_key_filter and k not in gt_boxes): continue
        db = np.array(boxes[k], dtype=float); dl = np.array(labels[k], dtype=int) - 1; ds = np.array(scores[k], dtype=float)
        ok = np.logical_and(db[:, 0] < db[:, 2], db[:, 1] < db[:, 3])      # _remove_invalid_boxes
        db, dl, ds = db[ok], dl[ok], ds[ok]
        gb = gt_boxes.get(k, np.empty((0, 4), dtype=float)); gl = gt_labels.get(k, np.array([], dtype=int))
        for c in range(num_class):
            s, t = _tp_fp_single_class(db[dl == c], ds[dl == c], gb[gl == c], th)
            if s.shape[0] > 0: scores_pc[c].append(s); tp_pc[c].append(t)
    ap = np.full(num_class, np.nan)
    for c in range(num_class):
        if n_gt[c] == 0: continue
        s = np.concatenate(scores_pc[c]) if scores_pc[c] else np.array([], dtype=float)
        t = np.concatenate(tp_pc[c]) if tp_pc[c] else np.array([], dtype=bool)
        o = np.argsort(s)[::-1]                                         # metrics.compute_precision_recall
        tpl = t.astype(int)[o]; ctp = np.cumsum(tpl); cfp = np.cumsum(1 - tpl)
        p = ctp.astype(float) / (ctp + cfp); r = ctp.astype(float) / n_gt[c]
        if p.size == 0: ap[c] = 0.0; continue                           # metrics.compute_average_precision
        r = np.concatenate([[0], r, [1]]); p = np.concatenate([[0], p, [0]])
        for i in range(len(p) - 2, -1, -1): p[i] = np.maximum(p[i], p[i + 1])
        i = np.where(r[1:] != r[:-1])[0] + 1
        ap[c] = np.sum((r[i] - r[i - 1]) * p[i])
    return float(np.nanmean(ap)), {c + 1: float(ap[c]) for c in range(num_class) if not np.isnan(ap[c])}

# ---------------------------------------------------------------- the synthetic case

def _label_map_60(tmp: Path) -> Path:
    "The official 60-class map when ../shared/data has it, else 60 of the 80 ids in the same pbtxt layout."
    if LABEL_MAP_60.exists(): return LABEL_MAP_60
    ids = sorted(np.random.default_rng(60).choice(np.arange(1, 81), 60, replace=False).tolist())
    p = tmp/'label_map_60.pbtxt'
    p.write_text(''.join(f'item {{\n  name: "action {i}"\n  id: {i}\n}}\n' for i in ids))
    return p

def make_ava_val(rng, n_videos=64, n_ts=897):
    "GT and detection DataFrames (official column order) of an AVA-validation-sized case; see the module docstring."
    n_keys = n_videos * n_ts
    vids = np.array([f"v{v:03d}{'abcdefgh'[v % 8]}x_Y-z" for v in range(n_videos)])       # 11 characters, like YouTube ids
    kv = np.repeat(np.arange(n_videos), n_ts); kt = np.tile(np.arange(902, 902 + n_ts), n_videos)
    n_p = np.clip(rng.poisson(3.4, n_keys), 1, 9)
    P = int(n_p.sum()); pk = np.repeat(np.arange(n_keys), n_p)
    pid = np.arange(P) - np.repeat(np.cumsum(n_p) - n_p, n_p)
    xy = rng.uniform(0, 0.6, (P, 2)); wh = rng.uniform(0.12, 0.4, (P, 2))
    box = np.round(np.concatenate([xy, np.minimum(xy + wh, 1)], 1), 3)
    # labels: one pose (ids 1..14) and 0..4 others from 15..80, long-tailed
    tail = 1 / np.arange(1, 67) ** 0.9; tail /= tail.sum()
    n_other = rng.choice(5, P, p=[0.25, 0.35, 0.22, 0.12, 0.06])
    lab_p = [np.repeat(np.arange(P), 1), np.repeat(np.arange(P), n_other)]
    lab = [rng.integers(1, 15, P), 15 + rng.choice(66, int(n_other.sum()), p=tail)]
    gp = np.concatenate(lab_p); gl = np.concatenate(lab)
    gt = pd.DataFrame({'video_id': vids[kv[pk[gp]]], 'timestamp': kt[pk[gp]], 'x1': box[gp, 0], 'y1': box[gp, 1],
                       'x2': box[gp, 2], 'y2': box[gp, 3], 'action_id': gl, 'person_id': pid[gp]})
    gt = gt.drop_duplicates(['video_id', 'timestamp', 'action_id', 'person_id']).sort_values(
        ['video_id', 'timestamp', 'person_id'], kind='stable').reset_index(drop=True)
    # proposals: each person (3-decimal jitter; one in 40 cut to exactly half its width: IoU 0.5 in exact
    # arithmetic), plus 0..2 spurious boxes per keyframe
    j = np.round(rng.normal(0, 0.02, (P, 4)), 3)
    pb = np.round(box + j, 3); pb[:, 2:] = np.maximum(pb[:, 2:], pb[:, :2])
    half = rng.uniform(size=P) < 1 / 40
    pb[half] = box[half]; pb[half, 2] = np.round((box[half, 0] + box[half, 2]) / 2, 4)
    n_sp = rng.integers(0, 3, n_keys); S = int(n_sp.sum()); sk = np.repeat(np.arange(n_keys), n_sp)
    sxy = rng.uniform(0, 0.7, (S, 2)); sb = np.round(np.concatenate([sxy, sxy + rng.uniform(0.05, 0.3, (S, 2))], 1), 3)
    prop_k = np.concatenate([pk, sk]); prop_b = np.concatenate([pb, sb]); prop_p = np.concatenate([np.arange(P), -np.ones(S, int)])
    # per proposal 8..17 classes of the 80: its true labels (high scores) and random ones (low scores)
    n_c = rng.integers(6, 15, len(prop_k)); R = int(n_c.sum()); rp = np.repeat(np.arange(len(prop_k)), n_c)
    c = rng.integers(1, 81, R)
    truth = set(zip(gp.tolist(), gl.tolist()))
    true_lab = np.array([(int(p), int(a)) in truth for p, a in zip(prop_p[rp].tolist(), c.tolist())])
    first = np.r_[True, rp[1:] != rp[:-1]]
    tp_first = first & (prop_p[rp] >= 0)                                 # a person's first row: its pose label
    c[tp_first] = gl[:P][prop_p[rp][tp_first]]; true_lab[tp_first] = True
    score = np.round(np.where(true_lab, rng.beta(4, 2, R), rng.beta(1, 5, R)), 4)
    det = pd.DataFrame({'video_id': vids[kv[prop_k[rp]]], 'timestamp': kt[prop_k[rp]], 'x1': prop_b[rp, 0], 'y1': prop_b[rp, 1],
                        'x2': prop_b[rp, 2], 'y2': prop_b[rp, 3], 'action_id': c, 'score': score})
    dup = rng.uniform(size=R) < 0.005                                    # exact duplicate rows
    zero = rng.uniform(size=R) < 0.001                                   # zero-width boxes
    det.loc[zero, 'x2'] = det.loc[zero, 'x1']
    det = pd.concat([det, det[dup]]).sort_index(kind='stable').reset_index(drop=True)
    excl = pd.DataFrame({'video_id': vids[kv[::997]], 'timestamp': kt[::997]})
    return gt, det, excl

def write_case(d: Path, gt, det, excl):
    fmt = lambda df: df.assign(timestamp=df['timestamp'].map('{:04d}'.format))
    fmt(gt).to_csv(d/'gt.csv', header=False, index=False)
    fmt(det).to_csv(d/'det.csv', header=False, index=False)
    fmt(excl).to_csv(d/'excl.csv', header=False, index=False)
    return d/'gt.csv', d/'det.csv', d/'excl.csv'

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--scale', type=float, default=1.0, help='fraction of the 64 videos to generate (default 1: the full size)')
    ap.add_argument('--unannotated', choices=['both', 'fp', 'ignore'], default='both')
    ap.add_argument('--skip-official', action='store_true', help='only generate and time ava_frame_map')
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args(argv)
    warnings.simplefilter('ignore')
    rng = np.random.default_rng(a.seed)
    gt, det, excl = make_ava_val(rng, n_videos=max(1, round(64 * a.scale)))
    modes = ['fp', 'ignore'] if a.unannotated == 'both' else [a.unannotated]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        g, dt, ex = write_case(d, gt, det, excl)
        lm = _label_map_60(d)
        n_keys = det[['video_id', 'timestamp']].drop_duplicates().shape[0]
        print(f"case: {n_keys:,} keyframes, {len(gt):,} GT rows, {len(det):,} detections (80 ids), label map {lm.name}; "
              f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
        worst = 0.0
        for mode in modes:
            t = time.perf_counter(); res = ava_frame_map(g, dt, lm, exclusions=ex, unannotated=mode); s_ours = time.perf_counter() - t
            line = f"unannotated={mode}: ovstad mAP {res.map:.12f} ({s_ours:.2f} s; dropped out of map: {res.n_dropped_out_of_map:,})"
            if not a.skip_official:
                t = time.perf_counter(); m_off, ap_off = official_ava(lm, g, dt, ex, gt_key_filter=(mode == 'ignore')); s_off = time.perf_counter() - t
                ours = {cid: res.per_class[n] for cid, n in res.classes}
                dc = max(abs(ours[c] - v) for c, v in ap_off.items())
                worst = max(worst, abs(res.map - m_off))
                line += (f"; official algorithm {m_off:.12f} ({s_off:.1f} s); difference {res.map - m_off:+.3e}, "
                         f"largest per-class {dc:.3e}; {s_off / s_ours:.0f}x")
            print(line, flush=True)
    return 0 if worst <= 1e-9 else 1

if __name__ == '__main__':
    sys.exit(main())
