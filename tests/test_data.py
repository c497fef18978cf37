"Readers against the real sample files, clip reading, box-aware transforms, datasets and `ovstad data inspect`."
import json, os, pickle, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ovstad.core import OvstadError, ClassList
from ovstad.data import (read_act_gt, read_ucf24_corrected, ucf24_to_act, read_ava_csv, read_ava_proposals, read_ava_exclusions,
                         read_frame_proposals, read_hcstvg, read_vidstg, read_vidor_trajectories, VidORIndex, ClipReader,
                         ClipTransform, boxes_to_original, clip_indices, KeyframeDataset, Keyframe, collate_detection,
                         inspect_path, act_keyframes, ava_keyframes)
from ovstad.benchmarks import _write_toy_video

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent/'shared'/'data'
BIN = Path(sys.executable).parent
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason=f"real data samples not present at {SHARED}")


# ---------------------------------------------------------------- real files
@needs_shared
def test_jhmdb_gt_real():
    gt = read_act_gt(SHARED/'jhmdb/JHMDB-GT.pkl')
    assert len(gt['gttubes']) == 928 and len(gt['labels']) == 21
    assert len(gt['train_videos']) == len(gt['test_videos']) == 3
    assert [len(s) for s in gt['test_videos']] == [268, 270, 265]
    t = next(iter(next(iter(gt['gttubes'].values())).values()))[0]
    assert t.dtype == np.float32 and t.shape[1] == 5 and t[0, 0] == 1


@needs_shared
def test_ucf24_corrected_real_and_conversion(tmp_path):
    u = read_ucf24_corrected(SHARED/'ucf101-24/pyannot_with_class_names.pkl', SHARED/'ucf101-24/testlist01.txt')
    assert len(u['classes']) == 24 and len(u['db']) == 3194
    assert len(u['testvideos']) == 910 and len(u['trainvideos']) == 2284 and not set(u['testvideos']) & set(u['trainvideos'])
    gt = ucf24_to_act(u, out=tmp_path/'UCF101v2-GT.pkl')
    back = read_act_gt(tmp_path/'UCF101v2-GT.pkl')
    assert back['labels'] == u['classes'] and len(back['test_videos'][0]) == 910
    # boxes: x2 = x + w computed in float (uint8 sums would wrap at 256), frames 1-based sf+1..ef
    v = 'Basketball/v_Basketball_g01_c01'
    tube = u['db'][v]['annotations'][0]
    conv = gt['gttubes'][v][tube['label']][0]
    assert conv[0, 0] == tube['sf'] + 1 and conv[-1, 0] == tube['ef']
    b = tube['boxes'].astype(float)
    assert np.allclose(conv[:, 3], b[:, 0] + b[:, 2]) and np.allclose(conv[:, 4], b[:, 1] + b[:, 3])
    assert max(float(t[:, 3].max()) for tl in gt['gttubes'].values() for ts in tl.values() for t in ts) > 255
    # numf overflows (uint8): nframes covers every annotated frame
    assert all(gt['nframes'][v] >= max(int(t[:, 0].max()) for ts in gt['gttubes'][v].values() for t in ts) for v in gt['gttubes'])


@needs_shared
def test_vidstg_val_real():
    recs = read_vidstg(SHARED/'vidstg/val_annotations.json')
    assert len(recs) == 3996 and len({r.vid for r in recs}) == 602
    caps = [c for r in recs for c in r.captions]
    assert len(caps) == 3996 and len({c['description'] for c in caps}) == 2983
    person = [c for r in recs for c in r.person_captions()]
    assert len(person) == 2996 and len({c['description'] for c in person}) == 2127
    assert len({(r.vid, c['target_id']) for r in recs for c in r.captions}) == 1644
    assert all(r.temporal_gt[1] <= r.frame_count for r in recs)  # end_fid is exclusive and may equal frame_count


@needs_shared
def test_ava_samples_real():
    gt = read_ava_csv(SHARED/'ava-sample/ava_sample.csv')
    assert len(gt) == 8 and list(gt.columns) == ['video_id', 'timestamp', 'x1', 'y1', 'x2', 'y2', 'action_id', 'person_id']
    assert read_ava_exclusions(SHARED/'ava-sample/ava_excluded_timestamps_sample.csv') == {('0f39OWEqJ24', 903), ('_-Z6wFjXtGQ', 902)}
    all_p = read_ava_proposals(SHARED/'ava-sample/ava_proposals_sample.pkl')
    hi = read_ava_proposals(SHARED/'ava-sample/ava_proposals_sample.pkl', 0.8)
    assert sum(map(len, all_p.values())) == 5 and sum(map(len, hi.values())) == 4
    assert all((a[:, 4] >= 0.8).all() for a in hi.values())
    lm = ClassList.from_pbtxt(SHARED/'ava-sample/ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt')
    assert len(lm) == 60
    kfs = ava_keyframes(gt, lm)
    assert [int(k.labels.sum()) for k in kfs] == [3, 2, 3]
    ev = ava_keyframes(gt, proposals=hi, mode='eval', exclusions=read_ava_exclusions(SHARED/'ava-sample/ava_excluded_timestamps_sample.csv'))
    assert [(k.video, k.meta['timestamp']) for k in ev] == [('0f39OWEqJ24', 902)]


@needs_shared
@pytest.mark.parametrize('name,frames,size', [('basketball_two_players', 300, (240, 426)), ('arm_wrestling', 280, (256, 340))])
def test_real_clips_decord(name, frames, size):
    cr = ClipReader(SHARED)
    inf = cr.info(name)
    assert inf['frames'] == frames and tuple(inf['size']) == size
    import decord
    vr = decord.VideoReader(str(SHARED/'videos'/f'{name}.mp4'))
    c = cr.read(name, 100, 8, 8)
    assert c.shape == (8, *size, 3) and c.dtype == np.uint8
    assert np.array_equal(c[4], vr[100].asnumpy())  # the keyframe is the centre frame (index T // 2)
    end = cr.read(name, frames - 1, 8, 8)
    assert np.array_equal(end[4], end[7])  # edge padding repeats the last frame


# ---------------------------------------------------------------- clips and errors
def test_clip_indices_centre_and_padding():
    assert clip_indices(50, 8, 8, 100).tolist() == [18, 26, 34, 42, 50, 58, 66, 74]
    assert clip_indices(2, 8, 1, 5).tolist() == [0, 0, 0, 1, 2, 3, 4, 4]


def test_missing_and_corrupt_video_errors_name_the_file(tmp_path):
    with pytest.raises(OvstadError, match='nope'):
        ClipReader(tmp_path).read('nope', 0)
    (tmp_path/'videos').mkdir(); (tmp_path/'videos/bad.mp4').write_bytes(b'\x00' * 500)
    with pytest.raises(OvstadError, match=r'bad\.mp4'):
        ClipReader(tmp_path).read('bad', 0)


def test_dataset_skip_bad_counts(tmp_path):
    _write_toy_video(tmp_path/'videos/good.mp4', n=10)
    (tmp_path/'videos/bad.mp4').write_bytes(b'\x00' * 500)
    kf = lambda v: Keyframe(v, 3, np.array([[20, 10, 40, 40]], np.float32), np.ones((1, 2), np.float32))
    kfs = [kf('good'), kf('bad'), kf('missing'), kf('good')]
    ds = KeyframeDataset(kfs, ClipReader(tmp_path), 4, 1, ClipTransform(32))
    with pytest.raises(OvstadError, match='bad.mp4'): ds[1]
    ds = KeyframeDataset(kfs, ClipReader(tmp_path), 4, 1, ClipTransform(32), skip_bad=True)
    assert ds[1]['meta']['video'] == 'good' and ds.n_skipped == 2 and ds.skipped_videos == {'bad', 'missing'}
    assert 'skipped 2 item(s) from 2 unreadable video(s)' in ds.skip_report()
    ds2 = KeyframeDataset(kfs, ClipReader(tmp_path), 4, 1, ClipTransform(32), skip_bad=True)
    assert ds2.check_videos() == 2 and len(ds2) == 2


def test_short_videos_are_decoded_once_and_read_the_same(tmp_path):
    for v in ('a', 'b', 'c'): _write_toy_video(tmp_path/f'videos/{v}.mp4', n=12)
    plain = ClipReader(tmp_path, frame_cache_mb=0)         # no decoded-frame cache: clip by clip
    cached = ClipReader(tmp_path, frame_cache_mb=1)        # 12 x 48 x 64 x 3 = 108 KiB per video: 9 fit
    for v in ('a', 'b', 'a', 'c', 'a'):
        for centre in (0, 5, 11):
            assert np.array_equal(cached.read(v, centre, 8, 2), plain.read(v, centre, 8, 2))
    assert cached.misses == 3 and cached.hits == 12 and plain.hits == plain.misses == 0
    assert '3 videos decoded in cache' in repr(cached)
    small = ClipReader(tmp_path, frame_cache_mb=0.25)      # room for two videos: the least recently used goes
    for v in ('a', 'b', 'c', 'a'): small.read(v, 3, 4, 1)
    assert small.misses == 4 and len(small._frames) == 2

def test_frame_folder_layout(tmp_path):
    import cv2
    d = tmp_path/'rgb-images/cls/vid'; d.mkdir(parents=True)
    for i in range(1, 6): cv2.imwrite(str(d/f'{i:05d}.jpg'), np.full((16, 20, 3), i * 40, np.uint8))
    cr = ClipReader(tmp_path)
    assert cr.info('cls/vid')['frames'] == 5
    c = cr.read('cls/vid', 0, 4, 1)  # indices 0,0,0,1 -> files 00001,00001,00001,00002
    assert c.shape == (4, 16, 20, 3) and abs(int(c[0].mean()) - 40) <= 2 and abs(int(c[3].mean()) - 80) <= 2


# ---------------------------------------------------------------- transforms keep boxes on the person
def _person_clip(h=120, w=200, box=(130, 30, 175, 105)):
    clip = np.full((4, h, w, 3), 30, np.uint8)
    x1, y1, x2, y2 = box
    clip[:, y1:y2, x1:x2] = 250
    return clip, np.array([box], np.float32)


def _assert_box_on_person(x, b, person_mask_thr=0.8):
    "The transformed box covers the person's pixels and (almost) nothing else."
    img = x[0].mean(-1) if x.ndim == 4 else x
    person = img > person_mask_thr
    x1, y1, x2, y2 = b[0]
    ys, xs = np.nonzero(person)
    assert len(xs), 'the person left the clip'
    # every person pixel lies within the box (1 px of resampling slack)
    assert xs.min() >= x1 - 1.5 and xs.max() <= x2 + 0.5 and ys.min() >= y1 - 1.5 and ys.max() <= y2 + 0.5, (b, xs.min(), xs.max(), ys.min(), ys.max())
    # and the box interior is the person
    inner = img[int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1]
    assert inner.size and inner.min() > person_mask_thr


@pytest.mark.parametrize('kind', ['scale', 'flip', 'crop', 'jitter', 'all'])
def test_training_transforms_keep_box_on_person(kind):
    clip, box = _person_clip()
    kw = dict(short_side=96, train=True, scale_range=(1.0, 1.0), crop_size=None, flip_p=0.0, jitter=0.0, normalize=False)
    if kind in ('scale', 'all'): kw['scale_range'] = (0.6, 1.5)
    if kind in ('flip', 'all'): kw['flip_p'] = 1.0 if kind == 'flip' else 0.5
    if kind in ('crop', 'all'): kw['crop_size'] = 64
    if kind in ('jitter', 'all'): kw['jitter'] = 0.15
    tf = ClipTransform(**kw)
    flips = 0
    for seed in range(25):
        x, b, geom = tf(clip, box, np.random.default_rng(seed))
        flips += geom['flipped']
        thr = 0.8 if kind not in ('jitter', 'all') else 0.55
        _assert_box_on_person(x, b, thr)
        if kind in ('scale', 'flip', 'jitter'):  # no crop: mapping back is exact up to rounding
            assert np.allclose(boxes_to_original(b, geom), box, atol=1.0)
    if kind == 'flip': assert flips == 25


def test_crop_keeps_box_centre_when_person_larger_than_crop():
    clip, box = _person_clip(box=(20, 5, 190, 115))
    tf = ClipTransform(short_side=120, train=True, scale_range=(1, 1), crop_size=48, flip_p=0, jitter=0, normalize=False)
    for seed in range(10):
        x, b, geom = tf(clip, box, np.random.default_rng(seed))
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert x.shape[1:3] == (48, 48)


def test_inference_transform_and_normalization():
    clip, box = _person_clip()
    x, b, geom = ClipTransform(256)(clip, box)
    assert x.shape == (4, 3, 256, 427) and x.dtype == torch.float32
    assert np.allclose(boxes_to_original(b, geom), box, atol=1e-3)
    bg = (30 / 255 - 0.485) / 0.229
    assert abs(float(x[0, 0, 0, 0]) - bg) < 1e-4


def test_collate_contract():
    items = []
    for n, (h, w) in ((2, (32, 40)), (3, (32, 48))):
        items.append({'video': torch.zeros(4, 3, h, w), 'boxes': torch.rand(n, 4), 'labels': torch.ones(n, 5),
                      'box_scores': torch.ones(n), 'meta': {'video': f'v{n}'}})
    b = collate_detection(items)
    assert b['video'].shape == (2, 4, 3, 32, 48) and b['rois'].shape == (5, 5) and b['labels'].shape == (5, 5)
    assert b['rois'][:, 0].tolist() == [0, 0, 1, 1, 1] and len(b['meta']) == 5 and b['meta'][3]['video'] == 'v3'


# ---------------------------------------------------------------- malformed files name file, record and field
def test_malformed_act_gt(tmp_path):
    gt = {'labels': ['a'], 'gttubes': {'v1': {0: [np.array([[1, 0, 0, 5, 5], [9, 0, 0, 5, 5]], np.float32)]}},
          'nframes': {'v1': 4}, 'train_videos': [['v1']], 'test_videos': [[]], 'resolution': {'v1': (10, 10)}}
    pickle.dump(gt, open(tmp_path/'g.pkl', 'wb'))
    with pytest.raises(OvstadError, match=r"g\.pkl: video 'v1', label 0, tube 1: field 'frame' outside 1\.\.4"):
        read_act_gt(tmp_path/'g.pkl')


def test_malformed_hcstvg_vidstg_vidor(tmp_path):
    (tmp_path/'h.json').write_text(json.dumps({'x.mp4': {'img_num': 10, 'st_frame': 1, 'bbox': [[0, 0, 1, 1]]}}))
    with pytest.raises(OvstadError, match=r"record 'x\.mp4': field 'English'"):
        read_hcstvg(tmp_path/'h.json')
    rec = {'vid': '7', 'frame_count': 10, 'temporal_gt': {'begin_fid': 2, 'end_fid': 5},
           'subject/objects': [{'tid': 0, 'category': 'adult'}], 'captions': [{'description': 'x', 'type': 'person', 'target_id': 3}]}
    (tmp_path/'v.json').write_text(json.dumps([rec]))
    with pytest.raises(OvstadError, match=r"record 0 \(vid '7'\): field 'target_id' = 3"):
        read_vidstg(tmp_path/'v.json')
    (tmp_path/'o.json').write_text(json.dumps({'subject/objects': [], 'trajectories': [[{'tid': 0, 'bbox': {'xmin': 1}}]]}))
    with pytest.raises(OvstadError, match=r"frame 0: field 'bbox'"):
        read_vidor_trajectories(tmp_path/'o.json')


def test_vidor_target_tube_respects_temporal_gt(tmp_path):
    d = tmp_path/'vidor/annotation/0000'; d.mkdir(parents=True)
    traj = [[{'tid': 0, 'bbox': {'xmin': f, 'ymin': 0, 'xmax': f + 10, 'ymax': 20}}] for f in range(10)]
    (d/'77.json').write_text(json.dumps({'video_id': '77', 'frame_count': 10, 'subject/objects': [{'tid': 0, 'category': 'child'}], 'trajectories': traj}))
    rec = {'vid': '77', 'frame_count': 10, 'temporal_gt': {'begin_fid': 3, 'end_fid': 6},
           'subject/objects': [{'tid': 0, 'category': 'child'}], 'captions': [{'description': 'a child runs.', 'type': 'person', 'target_id': 0}]}
    (tmp_path/'a.json').write_text(json.dumps([rec]))
    r = read_vidstg(tmp_path/'a.json')[0]
    idx = VidORIndex(tmp_path/'vidor/annotation')
    fr, bx = idx.target_tube(r, 0)
    assert fr.tolist() == [3, 4, 5] and bx[:, 0].tolist() == [3, 4, 5]


# ---------------------------------------------------------------- ovstad data inspect
def _inspect(*args):
    "Run `ovstad data inspect` in-process (the CLI's own entry point); returns (returncode, stdout, stderr)."
    import contextlib, io, types
    from ovstad.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(['data', 'inspect', *map(str, args)])
    return types.SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


@needs_shared
@pytest.mark.parametrize('rel,fmt,expect', [
    ('jhmdb/JHMDB-GT.pkl', 'act', {'n_videos': 928, 'n_labels': 21, 'n_splits': 3}),
    ('ucf101-24/pyannot_with_class_names.pkl', 'ucf24', {'n_videos': 3194, 'n_labels': 24}),
    ('vidstg/val_annotations.json', 'vidstg', {'n_sentences': 3996, 'n_person_sentences': 2996, 'n_videos': 602}),
    ('vidstg/val_files.json', 'video-list', {'n_videos': 618}),
    ('ava-sample/ava_sample.csv', 'ava-csv', {'n_videos': 2, 'n_boxes': 3, 'n_labels': 5}),
    ('ava-sample/ava_proposals_sample.pkl', 'ava-proposals', {'n_boxes': 5, 'n_boxes_score_ge_0_8': 4}),
    ('ava-sample/ava_excluded_timestamps_sample.csv', 'ava-exclusions', {'n_keyframes': 2}),
    ('ava-sample/ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt', 'pbtxt', {'n_labels': 60}),
    ('ava-sample/ava_label_map_80.txt', 'pbtxt', {'n_labels': 60}),
    ('ava-sample/action_list.txt', 'pbtxt', {'n_labels': 4, 'duplicate_names': ['action3']}),
    ('videos/basketball_two_players.mp4', 'video', {'frames': 300, 'size': [240, 426]}),
    ('videos/arm_wrestling.mp4', 'video', {'frames': 280, 'size': [256, 340]}),
])
def test_inspect_every_real_file(rel, fmt, expect):
    r = _inspect(SHARED/rel, '--json')
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s['format'] == fmt
    for k, v in expect.items(): assert s[k] == v, (k, s[k], v)


def test_inspect_errors(tmp_path):
    (tmp_path/'bad.csv').write_text('v,0902,0.1,0.1,0.5,0.5,12,0\nv,0903,0.1,0.1,1.5,0.5,12,0\n')
    r = _inspect(tmp_path/'bad.csv')
    assert r.returncode == 2 and 'bad.csv:2' in r.stderr and 'box coordinates outside [0, 1]' in r.stderr
    (tmp_path/'p.pkl').write_bytes(pickle.dumps({'vid,00003': np.array([[5, 5, 1, 9, 0.9]])}))
    r = _inspect(tmp_path/'p.pkl')
    assert r.returncode == 2 and "key 'vid,00003': field 'x2/y2'" in r.stderr
    r = _inspect(tmp_path/'absent.pkl')
    assert r.returncode == 2 and 'does not exist' in r.stderr
    h = subprocess.run([str(BIN/'ovstad'), 'data', 'inspect', '--help'], capture_output=True, text=True)
    assert 'examples:' in h.stdout and '--format' in h.stdout


@needs_shared
def test_label_map_with_duplicate_names_names_file_and_ids():
    # mmaction2's test label map gives ids 79 and 80 the same name: names become prompts, so ClassList refuses, saying where
    with pytest.raises(OvstadError, match=r"action_list\.txt: duplicate class names \('action3': ids \[79, 80\]\); give each class its own name"):
        ClassList.from_pbtxt(SHARED/'ava-sample/action_list.txt')
