"""Time ``scaled_dot_product_attention``'s backends at SD3.5-Medium's attention shapes (issue 11, section 4).

Attention is ~38% of an SD3.5-M forward's FLOPs at 1024 px (4096 image + 333 text tokens, 24 heads
of 64), so its kernel decides much of the DP-DMD cycle's share of the bf16 ceiling. For each
backend that accepts the shape this prints forward and forward+backward milliseconds and TFLOP/s
(FLOPs: 4·B·H·S²·D forward, 2.5x that backward, as FlashAttention counts; the SDPA backends
and compiled ``flex_attention``), the kernel that
PyTorch's default choice runs (from the profiler), and each backend's largest difference from the
math backend in fp32 (output and the three input gradients, relative to their largest value).

    python bench/attention_backends.py                  # GPU: SD3.5-M joint (4429) and image-only (4096) attention
    python bench/attention_backends.py --smoke          # CPU, small shapes: checks the script

``fa4``: FlashAttention-4 (``flash-attn-4``) through `dpdmd.parallel.attention_impl.use_attention_backend`,
the library's own switch (``TrainConfig.attention_backend: fa4``): SDPA's flash path with FA4 as its
kernel. The switch is process-wide, so ``fa4`` is timed last (after it, "flash" would be FA4 too).

Results: a markdown table on stdout and ``attention_backends.json`` in ``--out`` ($OUT).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpdmd.parallel import attention_impl  # noqa: E402

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def qkv(batch: int, heads: int, seq: int, dim: int, device, dtype, seed: int = 0):
    """q, k, v as diffusers' attention processors hand them over: (B, S, H·D) projections viewed
    as (B, S, H, D) and transposed to (B, H, S, D) (not contiguous)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for _ in range(3):
        x = torch.randn(batch, seq, heads * dim, generator=g).to(device, dtype)
        out.append(x.view(batch, seq, heads, dim).transpose(1, 2).requires_grad_(True))
    return out


def timed(fn, device, reps: int) -> float:
    """Median milliseconds of ``fn`` over ``reps`` calls after 3 warm-ups (CUDA events on a GPU)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def forward_backward(attend, q, k, v, grad_out) -> None:
    out = attend(q, k, v)
    torch.autograd.grad(out, (q, k, v), grad_out)


def backend_call(name: str):
    """(context, attention function) for a backend name: an SDPA backend, or "flex" (compiled
    ``flex_attention``, Inductor's Triton kernel; timed on a GPU only)."""
    if name == "flex":
        from torch.nn.attention.flex_attention import flex_attention
        return contextlib.nullcontext(), torch.compile(flex_attention, dynamic=False)
    if name == "default":
        return contextlib.nullcontext(), F.scaled_dot_product_attention
    if name == "fa4":  # the library's switch: SDPA's flash path, with FA4 as its kernel (process-wide)
        attention_impl.use_attention_backend("fa4", torch.device("cuda") if torch.cuda.is_available() else "cpu")
        return sdpa_kernel(SDPBackend.FLASH_ATTENTION), F.scaled_dot_product_attention
    return sdpa_kernel(BACKENDS[name]), F.scaled_dot_product_attention


def default_kernel(q, k, v) -> str:
    """Names of the GPU kernels the default dispatch runs for one forward (profiler)."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CUDA] if q.is_cuda else [ProfilerActivity.CPU]
    with torch.no_grad(), profile(activities=acts) as prof:
        F.scaled_dot_product_attention(q, k, v)
    names = {e.key for e in prof.key_averages() if "attention" in e.key.lower() or "fmha" in e.key.lower()
             or "flash" in e.key.lower() or "cudnn" in e.key.lower() or "sm90" in e.key.lower()}
    return "; ".join(sorted(names))[:300] or "?"


def fa4_kernel(q, k, v) -> str:
    """Names of the GPU kernels one FA4 forward runs (profiler)."""
    from torch.profiler import ProfilerActivity, profile
    with torch.no_grad(), sdpa_kernel(SDPBackend.FLASH_ATTENTION), profile(activities=[ProfilerActivity.CUDA]) as prof:
        F.scaled_dot_product_attention(q, k, v)
    return "; ".join(sorted({e.key for e in prof.key_averages()}))[:300] or "?"


def errors(q, k, v, name: str) -> dict[str, float]:
    """Largest difference from the math backend in fp32, relative to the largest value of each."""
    def run(call, cast):
        ctx, attend = call
        qq, kk, vv = (t.detach().to(cast).requires_grad_(True) for t in (q, k, v))
        with ctx:
            out = attend(qq, kk, vv)
        out.float().pow(2).sum().backward()  # a gradient that depends on the output
        return [out.detach().float()] + [t.grad.float() for t in (qq, kk, vv)]
    ref = run((sdpa_kernel(SDPBackend.MATH), F.scaled_dot_product_attention), torch.float32)
    got = run(backend_call(name), q.dtype)
    return {part: float((a - b).abs().max() / b.abs().max()) for part, a, b in zip(("out", "dq", "dk", "dv"), got, ref)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, small shapes")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seqs", default="4429,4096", help="sequence lengths: joint (4096 + 333 text) and image-only")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--backends", default="default,flash,cudnn,efficient,flex,fa4",
                    help="which to time, in this order (fa4 last: its switch is process-wide)")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    args = ap.parse_args(argv)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.smoke:
        args.batch, args.heads, args.dim, args.seqs, args.reps = 1, 2, 16, "64", 2
    rows = []
    for seq in (int(s) for s in args.seqs.split(",")):
        q, k, v = qkv(args.batch, args.heads, seq, args.dim, device, dtype)
        fwd_flops = 4 * args.batch * args.heads * seq * seq * args.dim
        kernel = default_kernel(q, k, v)
        for name in args.backends.split(","):
            row = {"seq": seq, "backend": name}
            if name == "flex" and device.type != "cuda":
                row["error"] = "flex_attention is timed on a GPU only"
                rows.append(row)
                continue
            try:
                ctx, attend = backend_call(name)
                with ctx:
                    with torch.no_grad():
                        fwd = timed(partial(attend, q, k, v), device, args.reps)
                    both = timed(partial(forward_backward, attend, q, k, v, torch.randn_like(q)), device, args.reps)
                row.update(fwd_ms=fwd, fwd_tflops=fwd_flops / fwd / 1e9, fwd_bwd_ms=both,
                           fwd_bwd_tflops=3.5 * fwd_flops / both / 1e9, bwd_tflops=2.5 * fwd_flops / (both - fwd) / 1e9)
                if name == "default":
                    row["kernel"] = kernel
                else:
                    row["rel_err"] = errors(q, k, v, name)
                if name == "fa4":  # it did run FA4's kernels; and inputs laid out as torch.cat leaves them (joint attention)
                    row["rel_err_contiguous_bhsd"] = errors(*(t.detach().contiguous() for t in (q, k, v)), name)
                    row["fa4_calls"] = dict(attention_impl.fa4_calls)
                    row["kernel"] = fa4_kernel(q, k, v)
                    if not attention_impl.fa4_calls["forward"] or not attention_impl.fa4_calls["backward"]:
                        raise RuntimeError(f"the FA4 kernels did not run: {attention_impl.fa4_calls}")
            except Exception as err:  # noqa: BLE001  (the backend refuses this shape / device / compile)
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version(), "flash_attn_4": attention_impl.fa4_version(),
           "args": vars(args), "rows": rows}
    (out / "attention_backends.json").write_text(json.dumps(doc, indent=1))
    print(f"\n# {doc['device']}, torch {doc['torch']}, cuDNN {doc['cudnn']}; B {args.batch}, H {args.heads}, D {args.dim}\n")
    print("| seq | backend | fwd ms | fwd TF/s | fwd+bwd ms | fwd+bwd TF/s | bwd TF/s | max rel. err vs fp32 math (out/dq/dk/dv) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['seq']} | {r['backend']} | refused: {r['error']} | | | | | |")
            continue
        err = "/".join(f"{e:.1e}" for e in r["rel_err"].values()) if "rel_err" in r else f"kernel: {r['kernel']}"
        if r["backend"] == "fa4":
            bhsd = "/".join(f"{e:.1e}" for e in r.get("rel_err_contiguous_bhsd", {}).values())
            err += f" (contiguous (B,H,S,D) inputs: {bhsd}); kernel: {r.get('kernel', '?')[:120]}"
        print(f"| {r['seq']} | {r['backend']} | {r['fwd_ms']:.2f} | {r['fwd_tflops']:.0f} | {r['fwd_bwd_ms']:.2f} | "
              f"{r['fwd_bwd_tflops']:.0f} | {r['bwd_tflops']:.0f} | {err} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
