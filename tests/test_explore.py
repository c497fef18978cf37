"""ovstad.explore: prompt parsing, clip reading, boxes, similarity maps, the probe's logic, the widget, `ovstad detect`."""
import json, os, pickle, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
import torch.nn as nn, torch.nn.functional as F

from ovstad.core import OvstadError
from ovstad import explore as E

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent/'shared'/'data'
BIN = Path(sys.executable).parent
os.environ.setdefault('HF_HUB_OFFLINE', '1')

try:
    import ovstad.models as M
    HAVE_MODELS = hasattr(M, 'OVSTAD')
except ImportError:
    HAVE_MODELS = False

def _loader(checkpoint='smoke', beta=0.3, device='cpu'):
    return M.OVSTAD.from_checkpoint(checkpoint, beta=beta).to(device).eval()

class Counting:
    "Wrap a detector's encode_clip and text tower to count calls."
    def __init__(self, det):
        self.video = 0; self.text = 0
        enc, txt = det.encode_clip, det.viclip.encode_text
        def encode_clip(*a, **k): self.video += 1; return enc(*a, **k)
        def encode_text(*a, **k): self.text += 1; return txt(*a, **k)
        det.encode_clip = encode_clip; det.viclip.encode_text = encode_text

needs_models = pytest.mark.skipif(not HAVE_MODELS, reason='ovstad.models (ViCLIP, OVSTAD) is not available yet')

@pytest.fixture(scope='module')
def toyset(tmp_path_factory):
    "An ACT-layout dataset with one 24-frame toy video, GT and proposals."
    root = tmp_path_factory.mktemp('toyset')
    (root/'videos').mkdir()
    E._toy_video(root/'videos'/'walk_01.mp4')
    tube = np.array([[f, 8 + (f - 1) * 64 // 24, 20, 24 + (f - 1) * 64 // 24, 56] for f in range(1, 25)], np.float32)
    pickle.dump({'labels': ['walk', 'jump'], 'gttubes': {'walk_01': {0: [tube]}}, 'nframes': {'walk_01': 24},
                 'train_videos': [[]], 'test_videos': [['walk_01']], 'resolution': {'walk_01': (72, 96)}},
                open(root/'toy-GT.pkl', 'wb'))
    pickle.dump({'walk_01,00013': np.array([[40, 18, 58, 58, 0.9], [2, 2, 30, 60, 0.5]], np.float32)}, open(root/'proposals.pkl', 'wb'))
    return root

# ---------------------------------------------------------------- pure logic
def test_parse_prompts():
    assert E.parse_prompts("a\n b  c ;d") == ['a', 'b c', 'd']
    with pytest.raises(OvstadError, match='no prompts'): E.parse_prompts(" \n;")
    with pytest.raises(OvstadError, match='duplicate prompts'): E.parse_prompts(['wave', 'Wave '])

def test_clip_reading_and_boxes(toyset, tmp_path):
    v = toyset/'videos'/'walk_01.mp4'
    c = E.read_clip(v, 0, num_frames=4, stride=3, size=48)
    assert c.frame_ids.tolist() == [0, 0, 0, 3] and tuple(c.video.shape) == (4, 3, 48, 48)
    # frames are the decoded ones: the yellow square is where the toy video put it
    assert c.key_image[30, 10:20].mean() > 120 and c.key_image[5, 5].mean() < 60
    g = E.annotated_boxes(v, 12, 'gt'); assert g.labels == ['walk'] and len(g) == 1
    p = E.annotated_boxes(v, 12, 'proposals'); assert len(p) == 2
    assert len(E.annotated_boxes(v, 12, 'proposals', threshold=0.8)) == 1
    assert len(E.annotated_boxes(v, 3, 'proposals')) == 0   # proposals file present, none on that frame
    lone = tmp_path/'x.mp4'; E._toy_video(lone, n=6)
    with pytest.raises(OvstadError, match='not inside a dataset'): E.annotated_boxes(lone, 0, 'gt')
    with pytest.raises(OvstadError, match='outside'): E.read_clip(lone, 6)

def test_box_file_formats(tmp_path):
    (tmp_path/'a.csv').write_text("frame,x1,y1,x2,y2,score\n3,1,2,30,40,0.7\n3,5,5,9,9,0.2\n")
    d = E.read_box_file(tmp_path/'a.csv', 'v', 10, (72, 96))
    assert list(d) == [3] and d[3].shape == (2, 5) and d[3][0, 4] == pytest.approx(0.7)
    pickle.dump({'v,00004': np.array([[1, 2, 3, 4, 0.5]])}, open(tmp_path/'p.pkl', 'wb'))
    assert list(E.read_box_file(tmp_path/'p.pkl', 'v', 10, (72, 96))) == [3]
    (tmp_path/'b.csv').write_text("t,a,b\n1,2,3\n")
    with pytest.raises(OvstadError, match='needs a header'): E.read_box_file(tmp_path/'b.csv', 'v', 10, (72, 96))

def test_hog_detector_on_real_clip():
    v = SHARED/'videos'/'basketball_two_players.mp4'
    if not v.exists(): pytest.skip(f'{v} absent (real clips live in ../shared/data)')
    det = E.PersonDetector('hog', verbose=False)
    assert det.weak
    boxes = det(E.read_clip(v, 100, num_frames=1, size=32).key_image)
    # two players in a 426x240 frame: HOG finds at least one upright person of plausible size
    assert len(boxes) >= 1
    h = boxes[:, 3] - boxes[:, 1]
    assert ((h > 60) & (h < 240)).any()

def test_torchvision_detector_from_local_weights(tmp_path, monkeypatch):
    "The torchvision path loads a local weights file without any download (random weights here: only the plumbing is tested)."
    import torchvision.models.detection as D
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    assert E.find_torchvision_detector() is None
    with pytest.raises(OvstadError, match='no torchvision detector weights'): E.PersonDetector('torchvision')
    m = D.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=91)
    f = tmp_path/'checkpoints'/D.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.DEFAULT.url.rsplit('/', 1)[-1]
    f.parent.mkdir(); torch.save(m.state_dict(), f)
    det = E.PersonDetector('auto', score_threshold=0.0)
    assert det.kind == 'torchvision:fasterrcnn_mobilenet_v3_large_320_fpn' and not det.weak
    out = det(np.zeros((120, 160, 3), np.uint8)); assert out.ndim == 2 and out.shape[1] == 5

def test_keyframes_and_checkpoint_resolution(tmp_path, monkeypatch):
    assert E.keyframes_at(300, 29.97, 1)[:3] == [(0, 0.0), (30, 1.0), (60, 2.0)]
    monkeypatch.setenv('OVSTAD_FULL_VICLIP_CHECKPOINT', str(tmp_path/'missing.pth'))
    monkeypatch.setenv('OVSTAD_PATHS_RUNS', str(tmp_path/'runs'))
    monkeypatch.setenv('OVSTAD_MINI_VICLIP_CHECKPOINT', '')
    with pytest.raises(OvstadError, match='ovstad train pretrain'): E.default_checkpoint()
    run = tmp_path/'runs'/'pretrain-0123'; run.mkdir(parents=True)
    (run/'viclip.pth').write_bytes(b'x'); (run/'DONE.json').write_text('{}')
    assert E.default_checkpoint() == run/'viclip.pth'
    (tmp_path/'mini.pt').write_bytes(b'x'); monkeypatch.setenv('OVSTAD_MINI_VICLIP_CHECKPOINT', str(tmp_path/'mini.pt'))
    assert E.default_checkpoint() == tmp_path/'mini.pt'          # the shipped mini ViCLIP before a pretrain run
    for name, bench, t in (('finetune-aaaa', 'ov_ava', 1), ('finetune-bbbb', 'ucf_jhmdb', 2)):   # ucf is newer
        d = tmp_path/'runs'/name; d.mkdir(); (d/'viclip.pt').write_bytes(b'x')
        (d/'config.json').write_text(json.dumps({'config': {'benchmark': bench}})); (d/'DONE.json').write_text('{"artefact": "viclip.pt"}')
        os.utime(d/'DONE.json', (t, t))
    assert E.default_checkpoint() == tmp_path/'runs'/'finetune-aaaa'/'viclip.pt'   # the reproduced OV-AVA detector first
    (tmp_path/'full.pth').write_bytes(b'x')
    monkeypatch.setenv('OVSTAD_FULL_VICLIP_CHECKPOINT', str(tmp_path/'full.pth'))
    assert E.default_checkpoint() == tmp_path/'full.pth'

# ---------------------------------------------------------------- with the model
@needs_models
def test_similarity_map_shapes_and_consistency(toyset):
    torch.manual_seed(0)
    det = M.OVSTAD.from_checkpoint('smoke').eval()
    clip = E.read_clip(toyset/'videos'/'walk_01.mp4', 12, det.viclip.num_frames, 1, det.viclip.image_size)
    sm = E.similarity_map(det, clip, ['a person walking', 'a person jumping'])
    P, T, h, w = sm.grid.shape
    assert P == 2 and tuple(sm.pooled.shape) == (2, 72, 96) and tuple(sm.per_frame.shape) == (2, T, 72, 96)
    assert sm.grid.abs().max() <= 1 + 1e-5
    # the per-cell cosine equals projecting one token by hand
    with torch.no_grad():
        _, fmap = det.viclip.video_features(clip.video[None])
        e = F.normalize(det.viclip.project_tokens(fmap[0, :, 0, 0, 0]), dim=-1)
        t = F.normalize(det.viclip.encode_text(['a person walking']), dim=-1)[0]
    assert float(sm.grid[0, 0, 0, 0]) == pytest.approx(float(e @ t), abs=1e-4)
    # ViCLIP alone gives the same maps as the detector (prompt embeddings vs encode_text)
    sm2 = E.similarity_map(det.viclip, clip.video, ['a person walking', 'a person jumping'])
    assert torch.allclose(sm2.grid_pooled, sm.grid_pooled, atol=1e-4)

@needs_models
def test_probe_session_prompts_change_scores_without_reencoding(toyset):
    torch.manual_seed(0)
    counts = {}
    def loader(ck, beta=0.3, device='cpu'):
        d = _loader(ck, beta, device); counts[ck] = Counting(d); return d
    s = E.ProbeSession('smoke', clip=toyset/'videos'/'walk_01.mp4', keyframe=12, box_source='proposals',
                       prompts=['a person walking', 'a person jumping'], loader=loader)
    c = counts['smoke']
    r1 = s.scores()
    assert r1.scores.shape == (2, 2) and c.video == 1 and s.encode_calls == 1
    s.set_prompts('a person walking\na person jumping\na person waving both arms')
    r2 = s.scores()
    assert c.video == 1, 'a new prompt must not re-encode the video'
    assert r2.scores.shape == (2, 3) and np.allclose(r2.scores[:, :2], r1.scores, atol=1e-5)
    text_before = c.text
    s.set_prompts('a person walking\na person jumping')   # all cached now
    s.scores(); assert c.text == text_before, 'cached prompts must not run the text tower'
    s.set_prompts('a person sitting\na person jumping')
    r3 = s.scores(); assert not np.allclose(r3.scores[:, 0], r1.scores[:, 0])
    s.set_beta(0.0); r4 = s.scores(); assert c.video == 1
    assert not np.allclose(r4.scores, r3.scores)
    with pytest.raises(OvstadError, match='duplicate'): s.set_prompts('kick\nkick')
    with pytest.raises(OvstadError, match='no prompts'): s.set_prompts('\n\n')
    with pytest.raises(OvstadError, match='beta'): s.set_beta(1.5)
    s.set_keyframe(3); s.scores(); assert c.video == 2
    assert any('whole frame' in m for m in s.messages)   # no proposals on frame 4: whole-frame fallback, said so
    s.set_keyframe(12); s.scores(); assert c.video == 2   # cached
    fig = s.figure(selected=1); assert len(fig.axes) >= 3

@needs_models
def test_widget_routes_errors_and_updates_scores(toyset):
    torch.manual_seed(0)
    s = E.ProbeSession('smoke', clip=toyset/'videos'/'walk_01.mp4', keyframe=12, box_source='gt', prompts='a person walking')
    w = E.ProbeWidget(s, clips=[str(toyset/'videos'/'walk_01.mp4')], checkpoints={'smoke': 'smoke'}, show=False)
    t0 = w.table.value
    w.prompts.value = 'a person walking\na person kicking a ball'
    assert w.table.value != t0 and 'kicking a ball' in w.table.value and s.encode_calls == 1
    assert list(w.selected.options) == ['a person walking', 'a person kicking a ball']
    w.prompts.value = ''
    assert 'no prompts' in w.status.value
    w.clip.value = str(toyset/'missing.mp4')
    assert 'does not exist' in w.status.value
    w.source.value = 'proposals'; assert '#1' in w.table.value
    w.beta.value = 1.0; assert 'beta=1.00' in w.table.value

@needs_models
def test_cli_detect_with_box_file_and_viz(toyset, tmp_path):
    v = toyset/'videos'/'walk_01.mp4'
    (tmp_path/'b.csv').write_text("frame,x1,y1,x2,y2\n0,5,15,30,60\n12,40,18,58,58\n12,1,1,20,20\n")
    out = tmp_path/'det.csv'
    r = subprocess.run([str(BIN/'ovstad'), 'detect', str(v), '--prompts', 'a person walking; a person jumping',
                        '--boxes', str(tmp_path/'b.csv'), '--checkpoint', 'smoke', '--out', str(out),
                        '--viz', str(tmp_path/'o.mp4'), '--fps-keyframes', '1'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out, header=None)
    assert df.shape == (6, 8)  # keyframes 0 and 12 (t=0, 1 s at 12 fps): 3 boxes x 2 prompts
    # sigmoid(cos/tau) with tau=0.01 may round to exactly 1.0 at 5 decimals: a probability, so [0, 1]
    assert set(df[6]) == {1, 2} and df[[2, 3, 4, 5]].to_numpy().max() <= 1 and ((df[7] >= 0) & (df[7] <= 1)).all()
    r2 = subprocess.run([str(BIN/'ovstad'), 'detect', str(v), '--prompts', 'a person walking; a person jumping',
                         '--boxes', str(tmp_path/'b.csv'), '--checkpoint', 'smoke', '--out', str(tmp_path/'det2.csv'),
                         '--fps-keyframes', '1'], capture_output=True, text=True, cwd=ROOT)
    assert r2.returncode == 0, r2.stderr
    assert pd.read_csv(tmp_path/'det2.csv', header=None).equals(df), 'random-weight configs must be seeded: two runs agree'
    assert sorted(df[1].unique().tolist()) == [0, 1]
    assert 'a person jumping' in out.with_suffix('.pbtxt').read_text()
    assert E.video_info(tmp_path/'o.mp4')['n_frames'] == 24

def test_cli_detect_errors(toyset, tmp_path):
    v = toyset/'videos'/'walk_01.mp4'
    r = subprocess.run([str(BIN/'ovstad'), 'detect', str(v), '--prompts', ' ; ', '--out', str(tmp_path/'d.csv')],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and 'no prompts' in r.stderr
    r = subprocess.run([str(BIN/'ovstad'), 'detect', str(tmp_path/'none.mp4'), '--prompts', 'wave', '--out', str(tmp_path/'d.csv')],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and 'does not exist' in r.stderr
    r = subprocess.run([str(BIN/'ovstad'), 'detect', '--help'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and 'examples:' in r.stdout and '--fps-keyframes' in r.stdout

@needs_models
@pytest.mark.parametrize('name', ['probe_prompts'])
def test_experiment_notebooks_run_under_papermill(name, toyset, tmp_path):
    "The probe notebook runs with tiny parameters and writes its figures and JSON sidecar (the maps notebook: tests/test_maps.py)."
    import json, papermill as pm
    nb = ROOT/'nbs'/'experiments'/f'{name}.ipynb'
    params = pm.inspect_notebook(str(nb))
    assert {'checkpoint', 'clip', 'prompts', 'keyframe', 'beta', 'box_source', 'out_dir'} <= set(params)
    assert all(p['help'] for p in params.values()), 'every parameter carries a comment'
    out = tmp_path/'figs'
    env_backup = os.environ.get('MPLBACKEND'); os.environ['MPLBACKEND'] = 'agg'
    try:
        pm.execute_notebook(str(nb), str(tmp_path/f'{name}.out.ipynb'), kernel_name='python3', cwd=str(nb.parent), progress_bar=False,
                            parameters=dict(checkpoint='smoke', clip=str(toyset/'videos'/'walk_01.mp4'), keyframe=12, out_dir=str(out)))
    finally:
        if env_backup is None: os.environ.pop('MPLBACKEND', None)
        else: os.environ['MPLBACKEND'] = env_backup
    js = sorted(out.glob('probe_*.json')); assert len(js) == 1
    s = json.loads(js[0].read_text())
    assert s['keyframe'] == 12 and s['box_labels'] == ['walk'] and len(s['scores'][0]) == len(s['prompts'])
    for f in s['figures'].values(): assert Path(f).stat().st_size > 5_000
