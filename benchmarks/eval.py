"""Timing of the Frame mAP evaluators on full-size inputs.

AVA: a generated input the size of AVA v2.2 validation (57,600 keyframes, about 4 people each, 60 classes,
50 detections per keyframe = 2.88 M rows) written as the official CSVs, evaluated from the files with
`ava_frame_map` (target < 30 s on a 2-core machine). ACT: JHMDB split 1 (real GT from ../shared/data when
present, else a generated GT of the same size) with 100 detections per frame (target < 10 s).

    python benchmarks/eval.py [--quick] [--rounded]

--quick uses a tenth of the sizes; --rounded also times AVA scores rounded to 3 decimals (many ties, so many
keyframes take the exact heap-replay path).
"""
import argparse, os, pickle, sys, tempfile, time, warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ovstad.core import ClassList
from ovstad.eval import AVA_DET_COLUMNS, act_frame_map, ava_frame_map, write_ava_detections

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent/'shared'/'data'

def make_ava(rng, n_videos=64, n_ts=900, n_cls=60, per_key=50):
    "GT (normalized boxes, 1-3 labels per person from a long-tailed 60-class list) and top-`per_key` detections."
    ids = np.array(sorted(rng.choice(np.arange(1, 81), n_cls, replace=False)))
    freq = 1 / np.arange(1, n_cls + 1) ** 0.8; freq /= freq.sum()
    n_keys = n_videos * n_ts
    vid = np.repeat([f"vid{v:03d}_{'x' * 5}" for v in range(n_videos)], n_ts); ts = np.tile(np.arange(902, 902 + n_ts), n_videos)
    n_p = np.clip(rng.poisson(4, n_keys), 1, 9)                       # people per keyframe
    key_of_p = np.repeat(np.arange(n_keys), n_p)
    P = len(key_of_p)
    xy = rng.uniform(0, 0.6, (P, 2)); wh = rng.uniform(0.15, 0.4, (P, 2))
    box = np.concatenate([xy, np.minimum(xy + wh, 1)], 1)
    n_lab = rng.integers(1, 4, P)
    p_of_l = np.repeat(np.arange(P), n_lab)
    lab = ids[rng.choice(n_cls, len(p_of_l), p=freq)]
    pid = np.arange(P) - np.repeat(np.cumsum(n_p) - n_p, n_p)
    gt = pd.DataFrame({'video_id': vid[key_of_p[p_of_l]], 'timestamp': ts[key_of_p[p_of_l]],
                       'x1': box[p_of_l, 0], 'y1': box[p_of_l, 1], 'x2': box[p_of_l, 2], 'y2': box[p_of_l, 3],
                       'action_id': lab, 'person_id': pid[p_of_l]}).drop_duplicates(['video_id', 'timestamp', 'action_id', 'person_id'])
    # detections: per keyframe `per_key` (person, class) pairs; boxes jittered, scores higher for true labels
    k = np.repeat(np.arange(n_keys), per_key)
    first_p = np.cumsum(n_p) - n_p
    p = first_p[k] + (rng.uniform(size=len(k)) * n_p[k]).astype(int)
    c = ids[rng.choice(n_cls, len(k), p=freq)]
    true_lab = np.isin(p * 1000 + c, p_of_l * 1000 + lab)
    j = rng.normal(0, 0.03, (len(k), 4))
    b = box[p] + j; b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 0.01)
    score = np.where(true_lab, rng.beta(4, 2, len(k)), rng.beta(1, 4, len(k)))
    det = pd.DataFrame({'video_id': vid[k], 'timestamp': ts[k], 'x1': b[:, 0], 'y1': b[:, 1], 'x2': b[:, 2], 'y2': b[:, 3],
                        'action_id': c, 'score': score})
    lm = ClassList(tuple(int(i) for i in ids), tuple(f"action {i}" for i in ids))
    excl = [(vid[i], int(ts[i])) for i in rng.choice(n_keys, 20, replace=False)]
    return gt, det, lm, excl

def make_act(rng, per_frame=100, quick=False):
    "JHMDB split 1 GT (real when available) and `per_frame` detections on every frame of its test videos."
    p = DATA/'jhmdb'/'JHMDB-GT.pkl'
    if p.exists():
        with open(p, 'rb') as f: gt = pickle.load(f, encoding='latin1'); src = str(p)
    else:                                                               # same size: 268 test videos, ~34 frames
        labels = [f"class{i}" for i in range(21)]
        vids = [f"v{i}" for i in range(268)]; nf = {v: int(rng.integers(15, 41)) for v in vids}
        tub = {v: {i % 21: [np.c_[np.arange(1, nf[v] + 1), np.tile([20, 20, 120, 200], (nf[v], 1))].astype(np.float32)]}
               for i, v in enumerate(vids)}
        gt = {'labels': labels, 'gttubes': tub, 'nframes': nf, 'train_videos': [[]], 'test_videos': [vids],
              'resolution': {v: (240, 320) for v in vids}}; src = 'generated (JHMDB-GT.pkl not found)'
    vlist = gt['test_videos'][0][: (27 if quick else None)]
    rows_v, rows_f, boxes = [], [], []
    for v in vlist:
        tube = next(iter(gt['gttubes'][v].values()))[0]
        for r in tube:
            rows_v.append(v); rows_f.append(int(r[0])); boxes.append(r[1:5])
    n = len(rows_v)
    v = np.repeat(rows_v, per_frame); f = np.repeat(rows_f, per_frame)
    b = np.repeat(np.array(boxes, np.float64), per_frame, 0) + rng.normal(0, 15, (n * per_frame, 4))
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)
    det = pd.DataFrame({'video': v, 'frame': f, 'label': rng.integers(0, len(gt['labels']), n * per_frame),
                        'score': rng.uniform(size=n * per_frame), 'x1': b[:, 0], 'y1': b[:, 1], 'x2': b[:, 2], 'y2': b[:, 3]})
    return gt, det, src, n

def timed(fn):
    t = time.perf_counter(); out = fn(); return out, time.perf_counter() - t

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='a tenth of the sizes')
    ap.add_argument('--rounded', action='store_true', help='also time AVA scores rounded to 3 decimals')
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    warnings.simplefilter('ignore')
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (shared machine: timings include contention)")
    # ---- ACT
    gt, det, src, n_frames = make_act(rng, quick=a.quick)
    res, s = timed(lambda: act_frame_map(gt, det, split=1))
    print(f"ACT  JHMDB split 1 [{src}]: {n_frames} frames x 100 = {len(det):,} detections: "
          f"{s:.2f} s ({len(det)/s:,.0f} detections/s), frame mAP {100*res.map:.2f}%  (target < 10 s)")
    # ---- AVA
    n_ts = 90 if a.quick else 900
    gt, det, lm, excl = make_ava(rng, n_ts=n_ts)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        gt.assign(timestamp=gt['timestamp'].map('{:04d}'.format)).to_csv(d/'gt.csv', header=False, index=False)
        write_ava_detections(det, d/'det.csv')
        pd.DataFrame(excl).to_csv(d/'excl.csv', header=False, index=False)
        n_keys = det[['video_id', 'timestamp']].drop_duplicates().shape[0]
        res, s = timed(lambda: ava_frame_map(d/'gt.csv', d/'det.csv', lm, exclusions=d/'excl.csv'))
        print(f"AVA  {n_keys:,} keyframes, {len(gt):,} GT rows, {len(det):,} detections, {len(lm)} classes, from CSV files: "
              f"{s:.2f} s ({len(det)/s:,.0f} detections/s), frame mAP {100*res.map:.2f}%  (target < 30 s)")
        res2, s = timed(lambda: ava_frame_map(gt, det, lm, exclusions=excl))
        print(f"AVA  same input as DataFrames: {s:.2f} s ({len(det)/s:,.0f} detections/s), same mAP: {res2.map == res.map}")
        if a.rounded:
            det_r = det.assign(score=det['score'].round(3))
            res3, s = timed(lambda: ava_frame_map(gt, det_r, lm, exclusions=excl))
            print(f"AVA  scores rounded to 3 decimals (ties -> exact heap replay): {s:.2f} s "
                  f"({len(det)/s:,.0f} detections/s), frame mAP {100*res3.map:.2f}%")

if __name__ == '__main__':
    sys.exit(main())
