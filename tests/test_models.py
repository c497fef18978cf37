"""ovstad.models against an independent, reference-style ViCLIP forward and the shape contracts.

The reference path below follows the layout of ViCLIP's own code (OpenGVLab/InternVideo,
Data/InternVid/viclip/): sequence-first `nn.MultiheadAttention`, an additive -inf causal mask,
`(b t) n m -> (b n) t m -> b (n t) m` token rearrangement. It shares no code with ovstad.models, so
equal outputs for the same weights pin the attention layout, token order, class-token and EOT handling.
"""
import io, math, os, contextlib
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

os.environ.setdefault('HF_HUB_OFFLINE', '1')
from ovstad.core import OvstadError
from ovstad.models import (ViCLIP, OVSTAD, ClipFeatures, get_config, tokenize, infer_config, roi_pool_fmap,
                           resample_spatial_pos_embed, resample_temporal_pos_embed)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / 'shared' / 'data'
torch.set_num_threads(min(2, torch.get_num_threads()))


# ---------------------------------------------------------------- reference-style ViCLIP (test only)
class _RefQuickGELU(nn.Module):
    def forward(self, x): return x * torch.sigmoid(1.702 * x)

class _RefLN32(nn.LayerNorm):
    def forward(self, x): return super().forward(x.float()).to(x.dtype)

class _RefBlock(nn.Module):
    def __init__(self, d, h, mask=None, ln=nn.LayerNorm):
        super().__init__()
        self.attn, self.ln_1, self.ln_2 = nn.MultiheadAttention(d, h), ln(d), ln(d)
        self.mlp = nn.Sequential(OrderedDict([('c_fc', nn.Linear(d, 4 * d)), ('gelu', _RefQuickGELU()), ('c_proj', nn.Linear(4 * d, d))]))
        self.mask = mask
    def forward(self, x):                      # (L, N, d), sequence first
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=self.mask)[0]
        return x + self.mlp(self.ln_2(x))

class _RefStack(nn.Module):
    def __init__(self, d, layers, h, mask=None, ln=nn.LayerNorm):
        super().__init__()
        self.resblocks = nn.Sequential(*[_RefBlock(d, h, mask, ln) for _ in range(layers)])
    def forward(self, x): return self.resblocks(x)

class _RefVision(nn.Module):
    def __init__(self, c, D):
        super().__init__()
        W, p, k = c.width, c.patch_size, c.temporal_kernel
        self.conv1 = nn.Conv3d(3, W, (k, p, p), (k, p, p), (0, 0, 0), bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(W))
        self.positional_embedding = nn.Parameter(torch.zeros((c.image_size // p) ** 2 + 1, W))
        self.temporal_positional_embedding = nn.Parameter(torch.zeros(1, c.num_frames // k, W))
        self.ln_pre, self.ln_post = nn.LayerNorm(W), nn.LayerNorm(W)
        self.transformer = _RefStack(W, c.layers, c.heads)
        self.proj = nn.Parameter(torch.zeros(W, D))
    def tokens(self, x):                       # x (B, C, T, H, W) -> (L, B, W) after the transformer
        x = self.conv1(x)
        B, C, T, H, W = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(B * T, H * W, C)
        x = torch.cat([self.class_embedding + torch.zeros(x.shape[0], 1, C), x], dim=1) + self.positional_embedding
        cls, x = x[:B, :1, :], x[:, 1:]
        x = x.reshape(B, T, H * W, C).permute(0, 2, 1, 3).reshape(B * H * W, T, C)     # (b t) n m -> (b n) t m
        x = x + (self.temporal_positional_embedding.mean(1) if T == 1 else self.temporal_positional_embedding)
        x = x.reshape(B, H * W * T, C)                                                    # (b n) t m -> b (n t) m
        x = self.ln_pre(torch.cat([cls, x], dim=1))
        return self.transformer(x.permute(1, 0, 2))
    def forward(self, x): return self.ln_post(self.tokens(x))[0] @ self.proj

class _RefText(nn.Module):
    def __init__(self, c, D):
        super().__init__()
        mask = torch.empty(c.context_length, c.context_length).fill_(float('-inf')).triu_(1)
        self.token_embedding = nn.Embedding(c.vocab_size, c.width)
        self.positional_embedding = nn.Parameter(torch.zeros(c.context_length, c.width))
        self.transformer = _RefStack(c.width, c.layers, c.heads, mask, _RefLN32)
        self.ln_final = _RefLN32(c.width)
        self.text_projection = nn.Parameter(torch.zeros(c.width, D))
    def forward(self, text):
        x = (self.token_embedding(text) + self.positional_embedding).permute(1, 0, 2)
        x = self.ln_final(self.transformer(x).permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection

class _RefViCLIP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.vision_encoder, self.text_encoder = _RefVision(cfg.vision, cfg.embed_dim), _RefText(cfg.text, cfg.embed_dim)
        self.temp = nn.Parameter(torch.ones([]) / 100)
    def encode_vision(self, image):            # (B, T, C, H, W), test=True: no masking
        return self.vision_encoder(image.permute(0, 2, 1, 3, 4).contiguous())
    def tokenize(self, texts, context_length=32):   # SOT + BPE + EOT, truncate with EOT last
        from open_clip.tokenizer import SimpleTokenizer
        tok = SimpleTokenizer()
        sot, eot = tok.encoder['<start_of_text>'], tok.encoder['<end_of_text>']
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [sot] + tok.encode(t) + [eot]
            if len(ids) > context_length: ids = ids[:context_length]; ids[-1] = eot
            out[i, :len(ids)] = torch.tensor(ids)
        return out


def _randomized(name, seed=0, **kw):
    "A model whose every parameter is random (including the zero-initialised temporal embedding)."
    torch.manual_seed(seed)
    m = ViCLIP.from_config(name, **kw).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.add_(torch.randn_like(p) * (0.02 if 'token_embedding' in n else 0.1))
    return m

def _ref_of(m):
    ref = _RefViCLIP(m.config).eval()
    ref.load_state_dict(m.state_dict(), strict=True)
    return ref

@pytest.fixture(scope='module')
def mini():
    return _randomized('mini')

@pytest.fixture(scope='module')
def smoke():
    return _randomized('smoke', seed=1)


# ---------------------------------------------------------------- tokenizer
def test_tokenize_pinned_values():
    # computed with open_clip's SimpleTokenizer (OpenAI CLIP BPE), the tokenizer ViCLIP uses
    pinned = {'a person brush hair': [49406, 320, 2533, 8594, 2225, 49407],
              'a person ride bike': [49406, 320, 2533, 2994, 3701, 49407],
              'The woman puts down knife and fork.': [49406, 518, 2308, 7898, 1136, 8960, 537, 13700, 269, 49407],
              'An adult in blue bites a bread in a shop.': [49406, 550, 7115, 530, 1746, 65, 2454, 320, 5066, 530, 320, 1557, 269, 49407]}
    ids = tokenize(list(pinned))
    assert ids.shape == (4, 32) and ids.dtype == torch.long
    for row, want in zip(ids, pinned.values()):
        assert row[:len(want)].tolist() == want and (row[len(want):] == 0).all()
    assert torch.equal(ids, _RefViCLIP.tokenize(None, list(pinned)))

def test_tokenize_truncates_with_eot_and_warns():
    long = 'a person ' + ' '.join(['jumps'] * 50)
    with pytest.warns(UserWarning, match='truncated'):
        ids = tokenize([long, 'a person run'])
    assert ids[0, -1].item() == 49407 and (ids[0] > 0).all()
    assert torch.equal(ids, _RefViCLIP.tokenize(None, [long, 'a person run']))


# ---------------------------------------------------------------- parity with the reference layout
@pytest.mark.parametrize('name', ['mini', 'smoke'])
def test_encode_video_matches_reference(name, mini, smoke):
    m = {'mini': mini, 'smoke': smoke}[name]
    ref = _ref_of(m)
    c = m.config.vision
    x = torch.randn(2, c.num_frames, 3, c.image_size, c.image_size)
    with torch.no_grad():
        ours, theirs = m.encode_video(x), ref.encode_vision(x)
    assert ours.shape == (2, m.embed_dim)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)

def test_encode_video_single_temporal_token_uses_mean(smoke):
    # ViCLIP adds the mean temporal embedding when T' = 1; our resampling does the same
    ref = _ref_of(smoke)
    x = torch.randn(1, 1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(smoke.encode_video(x), ref.encode_vision(x), atol=1e-5, rtol=1e-5)

def test_encode_text_matches_reference(mini):
    ref = _ref_of(mini)
    prompts = ['a person brush hair', 'The woman puts down knife and fork.', 'x']
    with torch.no_grad():
        ours, theirs = mini.encode_text(prompts), ref.text_encoder(ref.tokenize(prompts))
    assert ours.shape == (3, 128)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)

def test_fmap_is_token_sequence_in_viclip_order(mini):
    # fmap[b, :, t, i, j] must be reference token 1 + (i*w + j) * T' + t (patch-major, time inner)
    ref = _ref_of(mini)
    x = torch.randn(1, 8, 3, 112, 112)
    with torch.no_grad():
        g, fmap = mini.video_features(x)
        toks = ref.vision_encoder.tokens(x.permute(0, 2, 1, 3, 4)).permute(1, 0, 2)   # (B, L, W) before ln_post
    B, W, T, h, w = fmap.shape
    assert (B, W, T, h, w) == (1, 128, 4, 7, 7)
    for t, i, j in [(0, 0, 0), (1, 0, 0), (3, 2, 5), (2, 6, 1), (0, 6, 6)]:
        torch.testing.assert_close(fmap[0, :, t, i, j], toks[0, 1 + (i * w + j) * T + t], atol=1e-5, rtol=1e-5)
    expected = toks[0, 1:].reshape(h * w, T, W).permute(2, 1, 0).reshape(W, T, h, w)
    torch.testing.assert_close(fmap[0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mini.project_tokens(fmap[0, :, 0, 0, 0]), ref.vision_encoder.ln_post(toks[0, 1]) @ ref.vision_encoder.proj,
                               atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- shape contracts
def test_permuting_frames_changes_the_embedding(smoke):
    x = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        a, b = smoke.encode_video(x), smoke.encode_video(x[:, [2, 0, 3, 1]])
        assert not torch.allclose(a, b, atol=1e-4)
        # only the temporal embedding breaks the symmetry of joint attention: without it, order is invisible
        m = ViCLIP.from_config('smoke').eval()
        torch.testing.assert_close(m.encode_video(x), m.encode_video(x[:, [2, 0, 3, 1]]), atol=1e-5, rtol=1e-4)

def test_batch_of_two_equals_two_batches_of_one(mini):
    x = torch.randn(2, 8, 3, 112, 112)
    with torch.no_grad():
        g2, f2 = mini.video_features(x)
        for b in range(2):
            g1, f1 = mini.video_features(x[b:b + 1])
            torch.testing.assert_close(g2[b:b + 1], g1, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(f2[b:b + 1], f1, atol=1e-5, rtol=1e-5)
        t2 = mini.encode_text(['a person run', 'a person jumps over a fence'])
        torch.testing.assert_close(t2[1:], mini.encode_text(['a person jumps over a fence']), atol=1e-5, rtol=1e-5)

def test_bad_video_shapes_raise(smoke):
    with pytest.raises(OvstadError, match=r'\(B, T, 3, H, W\)'): smoke.encode_video(torch.randn(1, 3, 4, 64, 64))
    with pytest.raises(OvstadError, match='temporal patches'): ViCLIP.from_config('mini').encode_video(torch.randn(1, 3, 3, 112, 112))

def test_other_input_sizes_resample_position_embeddings(mini):
    with torch.no_grad():
        g, fmap = mini.video_features(torch.randn(1, 4, 3, 128, 160))
    assert g.shape == (1, 128) and fmap.shape == (1, 128, 2, 8, 10) and torch.isfinite(g).all()

def test_resampling_functions():
    pe = torch.randn(1 + 14 * 14, 8)
    assert resample_spatial_pos_embed(pe, (14, 14)) is pe
    r = resample_spatial_pos_embed(pe, (16, 16))
    assert r.shape == (257, 8) and torch.equal(r[0], pe[0])
    te = torch.randn(1, 8, 8)
    assert resample_temporal_pos_embed(te, 8) is te
    torch.testing.assert_close(resample_temporal_pos_embed(te, 16)[:, [0, -1]], te[:, [0, -1]])   # ends kept


# ---------------------------------------------------------------- checkpoints
def test_b16_real_layout_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    m = ViCLIP.from_config('b16')
    sd = m.state_dict()
    assert sd['vision_encoder.conv1.weight'].shape == (768, 3, 1, 16, 16)
    assert sd['vision_encoder.positional_embedding'].shape == (197, 768)
    assert sd['vision_encoder.temporal_positional_embedding'].shape == (1, 8, 768)
    assert sd['vision_encoder.transformer.resblocks.11.attn.in_proj_weight'].shape == (2304, 768)
    assert sd['vision_encoder.proj'].shape == (768, 512) and sd['text_encoder.text_projection'].shape == (512, 512)
    assert sd['text_encoder.positional_embedding'].shape == (32, 512) and sd['temp'].shape == ()
    path = tmp_path / 'ViCLIP-B_InternVid-FLT-10M.pth'
    torch.save({'model': sd}, path)                 # the real file layout: no ovstad_config
    del m, sd
    m = ViCLIP.from_checkpoint(path).eval()
    rep = m.load_report
    assert (rep.layout, rep.config_name, rep.tensors) == ('viclip', 'b16', len(m.state_dict()))
    assert m.config.same_shape(get_config('b16')) and (m.embed_dim, m.vision_width, m.image_size, m.num_frames) == (512, 768, 224, 8)
    with torch.no_grad():
        v = m.encode_video(torch.randn(1, 2, 3, 112, 112))    # spatial and temporal embeddings resampled on the fly
        t = m.encode_text(['a person brush hair'])
    assert v.shape == (1, 512) and t.shape == (1, 512) and torch.isfinite(v).all() and torch.isfinite(t).all()

def test_load_resamples_for_requested_size(tmp_path, mini):
    path = tmp_path / 'm.pth'
    torch.save({'model': mini.state_dict()}, path)
    m = ViCLIP.from_checkpoint(path, image_size=128, num_frames=16, config='mini')
    assert m.config.vision.grid == 8 and m.config.vision.temporal_tokens == 8
    assert any('spatial 7x7 -> 8x8' in r for r in m.load_report.resampled)
    assert any('temporal 4 -> 8' in r for r in m.load_report.resampled)

def test_own_checkpoint_round_trip(tmp_path, mini):
    p = mini.save_checkpoint(tmp_path / 'sub' / 'mini.pth', extra={'step': 7})
    raw = torch.load(p, weights_only=True)
    assert set(raw) == {'model', 'ovstad_config', 'step'} and raw['ovstad_config']['name'] == 'mini'
    m = ViCLIP.from_checkpoint(p).eval()
    assert m.load_report.layout == 'ovstad' and m.config == mini.config
    x = torch.randn(1, 8, 3, 112, 112)
    with torch.no_grad(): torch.testing.assert_close(m.encode_video(x), mini.encode_video(x))
    with pytest.raises(OvstadError, match='extra may not contain'): mini.save_checkpoint(tmp_path / 'x.pth', extra={'model': 1})

def test_wrong_checkpoint_lists_keys(tmp_path, smoke):
    sd = dict(smoke.state_dict())
    sd.pop('vision_encoder.ln_post.bias'); sd.pop('text_encoder.transformer.resblocks.1.mlp.c_fc.weight')
    sd['vision_encoder.head.weight'] = torch.zeros(3)
    sd['vision_encoder.proj'] = torch.zeros(64, 32)
    torch.save({'model': sd, 'ovstad_config': smoke.config.to_dict()}, tmp_path / 'bad.pth')
    with pytest.raises(OvstadError) as e: ViCLIP.from_checkpoint(tmp_path / 'bad.pth')
    msg = str(e.value)
    assert '2 missing keys' in msg and 'vision_encoder.ln_post.bias' in msg and 'resblocks.1.mlp.c_fc.weight' in msg
    assert '1 unexpected keys [vision_encoder.head.weight]' in msg
    assert 'vision_encoder.proj: file (64, 32) vs model (64, 64)' in msg and 'bad.pth' in msg
    # a B/16 file read as L/14
    b = ViCLIP.from_config('smoke'); torch.save({'model': b.state_dict()}, tmp_path / 's.pth')
    with pytest.raises(OvstadError, match='wrongly shaped keys'): ViCLIP.from_checkpoint(tmp_path / 's.pth', config='mini')
    torch.save({'state_dict': {'backbone.weight': torch.zeros(1)}}, tmp_path / 'other.pth')
    with pytest.raises(OvstadError, match='not a ViCLIP checkpoint'): ViCLIP.from_checkpoint(tmp_path / 'other.pth')
    with pytest.raises(OvstadError, match='does not exist'): ViCLIP.from_checkpoint(tmp_path / 'missing.pth')

def test_module_prefix_and_half_precision(tmp_path, smoke):
    sd = {'module.' + k: v.half() for k, v in smoke.state_dict().items()}
    torch.save({'model': sd}, tmp_path / 'h.pth')
    m = ViCLIP.from_checkpoint(tmp_path / 'h.pth', config='smoke')
    assert m.vision_encoder.proj.dtype == torch.float32

def test_infer_config_named():
    with torch.device('meta'):
        for name in ['b16', 'l14', 'mini']:
            cfg = infer_config(ViCLIP.from_config(name).state_dict())
            if name == 'mini':   # heads are not in a state dict: width / 64 -> 2, not mini's 4
                assert cfg.name == 'custom' and cfg.vision.heads == 2 and cfg.vision.temporal_kernel == 2
            else: assert cfg.name == name and cfg.same_shape(get_config(name))

def test_training_helpers(smoke):
    m = ViCLIP.from_config('smoke').freeze_text()
    assert not any(p.requires_grad for p in m.text_encoder.parameters())
    names = dict(m.named_parameters())
    assert m.no_weight_decay() <= names.keys() and 'temp' in m.no_weight_decay()
    m.set_grad_checkpointing(True).train()
    x = torch.randn(2, 4, 3, 64, 64)
    m.encode_video(x).pow(2).sum().backward()
    g1 = m.vision_encoder.conv1.weight.grad.clone(); m.zero_grad()
    m.set_grad_checkpointing(False)
    m.encode_video(x).pow(2).sum().backward()
    torch.testing.assert_close(g1, m.vision_encoder.conv1.weight.grad)


# ---------------------------------------------------------------- OVSTAD head
def test_roialign_full_frame_box_equals_pooling_the_map(mini, smoke):
    det = OVSTAD(mini, beta=0.3)
    x = torch.randn(2, 8, 3, 112, 112)
    with torch.no_grad():
        feats = det.encode_clip(x)
        r = det.region_features_cached(feats, torch.tensor([[1., 0, 0, 112, 112], [0., 0, 0, 112, 112]]), beta=1)
        want = mini.project_tokens(feats.fmap.mean((2, 3, 4))[[1, 0]])
    torch.testing.assert_close(r, want, atol=1e-5, rtol=1e-5)
    # smoke's 4x4 map with a 2x2 RoI grid (2 samples per bin: 4 per side, one per cell)
    det = OVSTAD(smoke, roi_output_size=2)
    with torch.no_grad():
        feats = det.encode_clip(torch.randn(1, 4, 3, 64, 64))
        r = det.region_features_cached(feats, torch.tensor([[0., 0, 0, 64, 64]]), beta=1)
        torch.testing.assert_close(r, smoke.project_tokens(feats.fmap.mean((2, 3, 4))), atol=1e-5, rtol=1e-5)

def test_roi_box_convention_left_half():
    fmap = torch.zeros(1, 3, 2, 14, 14); fmap[..., :7] = 1.0    # left half of the frame is 1
    left = roi_pool_fmap(fmap, torch.tensor([[0., 0, 0, 100, 224]]), 16)
    right = roi_pool_fmap(fmap, torch.tensor([[0., 124, 0, 224, 224]]), 16)
    torch.testing.assert_close(left, torch.ones(1, 3)); torch.testing.assert_close(right, torch.zeros(1, 3))
    assert roi_pool_fmap(fmap, torch.zeros(0, 5), 16).shape == (0, 3)

def test_fusion_beta(smoke):
    x = torch.randn(2, 4, 3, 64, 64)
    rois = torch.tensor([[0., 5, 5, 40, 60], [1., 20, 0, 64, 50], [1., 0, 10, 30, 64]])
    det = OVSTAD(smoke, beta=0.3)
    with torch.no_grad():
        feats = det.encode_clip(x)
        region = smoke.project_tokens(roi_pool_fmap(feats.fmap, rois, 16, 7, 2))
        glob = feats.global_emb[[0, 1, 1]]
        torch.testing.assert_close(det.region_features(x, rois, beta=1), region, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(det.region_features(x, rois, beta=0), glob, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(det.region_features(x, rois), 0.3 * region + 0.7 * glob, atol=1e-5, rtol=1e-5)
        local = OVSTAD(smoke, beta=0.3, fusion=False)
        torch.testing.assert_close(local.region_features(x, rois), region, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(region[1], region[2])     # two boxes of one clip differ
    with pytest.raises(OvstadError, match=r'beta must lie in \[0, 1\]'): OVSTAD(smoke, beta=1.5)

def test_scores_and_cache_do_not_reencode():
    smoke = _randomized('smoke', seed=2)
    det = OVSTAD(smoke.freeze_text(), beta=0.3)
    calls = []
    h = smoke.vision_encoder.transformer.register_forward_hook(lambda *a: calls.append(1))
    tcalls = []
    ht = smoke.text_encoder.transformer.register_forward_hook(lambda *a: tcalls.append(1))
    try:
        x = torch.randn(1, 4, 3, 64, 64)
        rois = torch.tensor([[0., 0, 0, 30, 64], [0., 30, 0, 64, 64]])
        with torch.no_grad():
            feats = det.encode_clip(x)
            assert isinstance(feats, ClipFeatures) and feats.fmap.shape == (1, 64, 4, 4, 4)
            prompts = det.format_prompts(['run', 'ride_bike', 'jump'])
            l1 = det.score_cached(feats, rois, prompts)
            l2 = det.score_cached(feats, rois[:1], prompts[::-1])
            assert len(calls) == 1 and len(tcalls) == 1        # one video forward, one text forward (cached after)
            torch.testing.assert_close(l2[0], l1[0].flip(0))
            full = det(x, rois, prompts=prompts)
            torch.testing.assert_close(full, l1)
            # logits = cos / tau, scores = sigmoid
            f = F.normalize(det.region_features_cached(feats, rois), dim=-1)
            t = F.normalize(smoke.encode_text(prompts), dim=-1)
            torch.testing.assert_close(l1, f @ t.T / det.temperature(), atol=1e-4, rtol=1e-5)
            torch.testing.assert_close(det(x, rois, text_emb=t * 3), l1, atol=1e-4, rtol=1e-5)
        # loading new text weights invalidates the cache by itself
        sd = {k: v + 0.05 * torch.randn_like(v) for k, v in smoke.text_encoder.state_dict().items()}
        smoke.text_encoder.load_state_dict(sd)
        n = len(tcalls)
        with torch.no_grad(): l3 = det.score_cached(feats, rois, prompts)
        assert len(tcalls) == n + 1 and not torch.allclose(l3, l1)
    finally:
        h.remove(); ht.remove(); smoke.freeze_text(False)
    with pytest.raises(OvstadError, match='exactly one'): det.score_cached(feats, rois)

def test_trainable_text_is_not_cached():
    smoke = _randomized('smoke', seed=4)
    det = OVSTAD(smoke.freeze_text(False))
    e = det.prompt_embeddings(['a person run'])
    assert e.requires_grad and len(det._cache) == 0
    e.sum().backward()
    assert smoke.text_encoder.text_projection.grad is not None
    smoke.zero_grad()

def test_format_prompt_rule(smoke):
    det = OVSTAD(smoke)
    assert det.format_prompts(['brush_hair', 'Ride  Bike', 'a person dances', 'A man waves.']) == \
        ['a person brush hair', 'a person Ride Bike', 'a person dances', 'A man waves.']
    assert OVSTAD(smoke, template='someone is {}').format_prompt('jumping') == 'someone is jumping'
    with pytest.raises(OvstadError, match="needs a"): OVSTAD(smoke, template='a person')

def test_tau_initialised_from_temp_and_clamped():
    smoke = _randomized('smoke', seed=3)
    with torch.no_grad(): smoke.temp.fill_(0.05)
    det = OVSTAD(smoke)
    with torch.no_grad(): smoke.temp.fill_(0.01)
    assert abs(det.tau.item() - 0.05) < 1e-7 and det.tau.requires_grad
    with torch.no_grad(): det.tau.fill_(0.001)
    assert abs(det.temperature().item() - 0.01) < 1e-7
    assert 'tau=0.0010' in repr(det) and 'beta=0.3' in repr(det) and 'smoke' in repr(det)
    assert 'tau' in det.no_weight_decay() and 'viclip.temp' in det.no_weight_decay()

def test_rois_validation(smoke):
    det = OVSTAD(smoke)
    feats = det.encode_clip(torch.randn(1, 4, 3, 64, 64))
    with pytest.raises(OvstadError, match=r'\(K, 5\)'): det.region_features_cached(feats, torch.zeros(2, 4))
    with pytest.raises(OvstadError, match='batch indices'): det.region_features_cached(feats, torch.tensor([[1., 0, 0, 5, 5]]))
    with pytest.raises(OvstadError, match='x2 >= x1'): det.region_features_cached(feats, torch.tensor([[0., 9, 0, 5, 5]]))

@pytest.mark.skipif(not (SHARED / 'videos' / 'basketball_two_players.mp4').exists(),
                    reason='../shared/data/videos/basketball_two_players.mp4 is absent (real-data sample folder not present)')
def test_region_features_on_a_real_clip(mini):
    import decord
    vr = decord.VideoReader(str(SHARED / 'videos' / 'basketball_two_players.mp4'))
    H, W = vr[0].shape[:2]
    frames = vr.get_batch(list(range(100, 116, 2))).asnumpy()                  # 8 frames, (T, H, W, 3) uint8
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(112, 112 * W // H // 16 * 16), mode='bilinear', align_corners=False)
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    x = ((x - mean) / std)[None]
    det = OVSTAD(mini)
    rois = torch.tensor([[0., 10, 10, 90, 110], [0., 100, 5, 180, 110]])
    with torch.no_grad():
        feats = det.encode_clip(x)
        logits = det.score_cached(feats, rois, det.format_prompts(['shoot_ball', 'run', 'stand']))
    assert feats.fmap.shape[-2:] == (7, x.shape[-1] // 16) and logits.shape == (2, 3) and torch.isfinite(logits).all()


# ---------------------------------------------------------------- CLI
def test_cli_configs_init_inspect(tmp_path):
    from ovstad.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out): assert main(['model', 'configs']) == 0
    assert 'b16' in out.getvalue() and '149.6M' in out.getvalue()
    with contextlib.redirect_stdout(out): assert main(['model', 'init', '--config', 'smoke', '--out', str(tmp_path / 's.pth')]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out): assert main(['model', 'inspect', str(tmp_path / 's.pth'), '--image-size', '96']) == 0
    assert 'strict load' in out.getvalue() and 'spatial 4x4 -> 6x6' in out.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stderr(err): assert main(['model', 'inspect', str(tmp_path / 'nope.pth')]) == 2
    assert 'does not exist' in err.getvalue()
