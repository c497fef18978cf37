"""Throughput of ViCLIP's video tower and the cost of the OV-STAD head.

Measures (random weights, the real architecture):
  * encode_video clips/s on T x S x S clips at batch 1 and 2;
  * scoring K boxes against P cached prompts from an encoded clip (`OVSTAD.score_cached`), as a
    fraction of one batch-1 encode_video: the head should add under 10%.

examples:
  python benchmarks/model.py                                  # b16, CPU, 2 threads, float32
  python benchmarks/model.py --device cuda --dtype bf16 --iters 20
  python benchmarks/model.py --config mini --json out.json
"""
from __future__ import annotations
import argparse, json, os, sys, time

os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch

from ovstad.core import resolve_device
from ovstad.models import ViCLIP, OVSTAD, CONFIG_NAMES


def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)

def _time(fn, device, iters: int, warmup: int) -> float:
    "Median seconds per call of `fn` after `warmup` untimed calls."
    for _ in range(warmup): fn()
    _sync(device)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter(); fn(); _sync(device); ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default='b16', choices=CONFIG_NAMES, help='named ViCLIP size (default: b16)')
    p.add_argument('--device', default='cpu', help='cpu, cuda, cuda:N or auto (default: cpu)')
    p.add_argument('--dtype', default='fp32', choices=['fp32', 'bf16'], help='weights and activations dtype (default: fp32)')
    p.add_argument('--threads', type=int, default=2, help='torch CPU threads (default: 2)')
    p.add_argument('--frames', type=int, default=None, help='frames per clip (default: the config\'s, 8 for b16)')
    p.add_argument('--size', type=int, default=None, help='frame side in pixels (default: the config\'s, 224 for b16)')
    p.add_argument('--batches', type=int, nargs='+', default=[1, 2], help='batch sizes to time (default: 1 2)')
    p.add_argument('--iters', type=int, default=3, help='timed iterations per measurement (default: 3)')
    p.add_argument('--warmup', type=int, default=1, help='untimed warm-up iterations (default: 1)')
    p.add_argument('--boxes', type=int, default=10, help='boxes scored by the head (default: 10)')
    p.add_argument('--prompts', type=int, default=80, help='cached prompts scored by the head (default: 80)')
    p.add_argument('--json', default=None, help='also write the figures to this JSON file')
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device, dtype = resolve_device(a.device), {'fp32': torch.float32, 'bf16': torch.bfloat16}[a.dtype]
    model = ViCLIP.from_config(a.config).eval().freeze_text().to(device=device, dtype=dtype)
    T, S = a.frames or model.num_frames, a.size or model.image_size
    det = OVSTAD(model)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'cpu ({a.threads} threads)'
    print(f"{model!r}\ndevice {name}, {a.dtype}, clips {T}x{S}x{S}, median of {a.iters} after {a.warmup} warm-up")

    res = {'config': a.config, 'device': name, 'dtype': a.dtype, 'frames': T, 'size': S, 'encode_video': {}}
    with torch.inference_mode():
        for B in a.batches:
            x = torch.randn(B, T, 3, S, S, device=device, dtype=dtype)
            s = _time(lambda: model.encode_video(x), device, a.iters, a.warmup)
            res['encode_video'][B] = {'s_per_batch': s, 'clips_per_s': B / s}
            print(f"encode_video  batch {B}: {B / s:8.2f} clips/s  ({s * 1e3:8.1f} ms per batch)")

        x = torch.randn(1, T, 3, S, S, device=device, dtype=dtype)
        t_enc = res['encode_video'][1]['s_per_batch'] if 1 in res['encode_video'] else _time(lambda: model.encode_video(x), device, a.iters, a.warmup)
        t_clip = _time(lambda: det.encode_clip(x), device, a.iters, a.warmup)
        feats = det.encode_clip(x)
        prompts = [f"a person does action number {i}" for i in range(a.prompts)]
        t0 = time.perf_counter(); det.prompt_embeddings(prompts); _sync(device); t_fill = time.perf_counter() - t0
        g = torch.Generator().manual_seed(0)
        xy = torch.rand(a.boxes, 2, generator=g) * S * 0.6
        wh = torch.rand(a.boxes, 2, generator=g) * S * 0.4 + 8
        rois = torch.cat([torch.zeros(a.boxes, 1), xy, (xy + wh).clamp(max=S)], 1).to(device)
        head_iters = max(a.iters, 20)
        t_head = _time(lambda: det.score_cached(feats, rois, prompts), device, head_iters, 3)
    ratio = t_head / t_enc
    res.update({'encode_video_b1_s': t_enc, 'encode_clip_b1_s': t_clip, 'prompt_cache_fill_s': t_fill,
                'head_s': t_head, 'head_per_s': 1 / t_head, 'head_over_encode': ratio, 'boxes': a.boxes, 'prompts': a.prompts})
    print(f"encode_clip   batch 1: {1 / t_clip:8.2f} clips/s  (global + feature map; encode_video {1 / t_enc:.2f} clips/s)")
    print(f"prompt cache fill: {a.prompts} prompts in {t_fill * 1e3:.1f} ms (once; later calls hit the cache)")
    print(f"head: {a.boxes} boxes x {a.prompts} cached prompts: {1 / t_head:8.1f} scorings/s ({t_head * 1e3:.2f} ms)")
    print(f"head / encode_video = {ratio:.4f} ({ratio * 100:.2f}% of one clip's encoding; target < 10%: "
          f"{'met' if ratio < 0.10 else 'NOT met'})")
    if a.json:
        with open(a.json, 'w') as f: json.dump(res, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
