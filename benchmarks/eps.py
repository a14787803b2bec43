"""What eps means: plan sharpness and convergence on real deep features, per cost scaling.

For each cost scaling ("std", the default; "max"; "mean") and each eps, on real features (7x7
post-ReLU maps of a CNN trained on Fashion-MNIST, benchmarks/deep_features.py):
  partners     mean effective partners per row (exp of the row-normalised plan's entropy) of the
               converged plan: 1 is a one-to-one match, 49 plain averaging;
  cost/EMD     its transport cost relative to exact OT (on the raw squared distances);
  plain iters  iterations of plain log-domain Sinkhorn (no annealing, no over-relaxation) to reach
               the marginal tolerance, capped at --max-iter;
  mixkit iters iterations of the default torch solver (epsilon scaling, over-relaxation).
The paper's configuration (raw cost, eps 0.1, 100 iterations) is measured alongside.

Writes benchmarks/results/eps[-<tag>].json and .png and prints a table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from common import MachineRecord, common_parser, pyplot, resolve_device, result_path, save_figure, write_json
from deep_features import fashion_mnist_features
from tqdm.auto import tqdm

from mixkit.ot import (
    DEFAULT_TOL,
    effective_partners,
    emd,
    marginal_error,
    normalize_cost,
    relative_transport_cost,
    sinkhorn_reference,
    sinkhorn_torch,
    squared_euclidean_cost,
)


def study(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_flush_denormal(True)
    feats = fashion_mnist_features(2 * args.batch, progress=True).double().to(resolve_device(args.device))
    x, y = feats[: args.batch], feats[args.batch :]
    raw = squared_euclidean_cost(x, y)
    exact = emd(raw.cpu()).to(raw.device)
    rows = []
    jobs = [(s, e) for s in args.scales for e in args.eps]
    for scale, eps in tqdm(jobs, desc="eps study"):
        cost = normalize_cost(raw, scale)
        converged = sinkhorn_torch(cost, eps, 100000, 1e-7)
        _, plain = sinkhorn_torch(cost.float(), eps, args.max_iter, DEFAULT_TOL, anneal_factor=1.0, omega=1.0,
                                  return_info=True)
        _, fast = sinkhorn_torch(cost.float(), eps, args.max_iter, DEFAULT_TOL, return_info=True)
        rows.append({
            "scale": scale, "eps": eps,
            "partners": effective_partners(converged).mean().item(),
            "cost_vs_emd": relative_transport_cost(converged, raw, exact).mean().item(),
            "plain_iters": plain.n_iter, "plain_converged": bool(plain.marginal_error <= DEFAULT_TOL),
            "mixkit_iters": fast.n_iter, "mixkit_converged": bool(fast.marginal_error <= DEFAULT_TOL),
        })
    paper, info = sinkhorn_reference(raw.float(), return_info=True)
    row_sums = paper.sum(dim=2) * raw.shape[1]
    ratio = torch.maximum(row_sums, 1 / row_sums.clamp_min(1e-30))
    paper_row = {
        "iters": info.n_iter, "marginal_error": marginal_error(paper.double()).max().item(),
        "worst_row_sum_factor": ratio.max().item(), "partners": effective_partners(paper.double()).mean().item(),
    }
    return {"batch": args.batch, "tol": DEFAULT_TOL, "max_iter": args.max_iter, "rows": rows, "paper": paper_row}


def table(result: dict[str, Any]) -> str:
    lines = ["| scale | eps | partners / 49 | cost/EMD | plain Sinkhorn iters | mixkit torch iters |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        plain = f"{r['plain_iters']}" + ("" if r["plain_converged"] else " (not converged)")
        fast = f"{r['mixkit_iters']}" + ("" if r["mixkit_converged"] else " (not converged)")
        lines.append(f"| {r['scale']} | {r['eps']} | {r['partners']:.1f} | {r['cost_vs_emd']:.3f} | {plain} | {fast} |")
    p = result["paper"]
    lines.append(f"\nPaper's settings (raw cost, eps 0.1): {p['iters']} iterations, marginal error "
                 f"{p['marginal_error']:.2f}, worst row sum off by a factor of {p['worst_row_sum_factor']:.1f}, "
                 f"{p['partners']:.1f} partners per row.")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for k, scale in enumerate(sorted({r["scale"] for r in result["rows"]})):
        sel = [r for r in result["rows"] if r["scale"] == scale]
        eps = [r["eps"] for r in sel]
        color = f"C{k}"
        ax1.plot(eps, [r["partners"] for r in sel], "o-", color=color, label=scale)
        ax2.plot(eps, [r["plain_iters"] for r in sel], "o--", color=color, label=f"{scale}: plain Sinkhorn")
        ax2.plot(eps, [r["mixkit_iters"] for r in sel], "o-", color=color, label=f"{scale}: mixkit torch")
    ax1.set(xscale="log", xlabel="eps", ylabel="effective partners per row", title="sharpness (real features)")
    ax2.set(xscale="log", yscale="log", xlabel="eps", ylabel=f"iterations to marginal error {result['tol']}",
            title="convergence")
    ax1.legend()
    ax2.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[common_parser(device="cpu")])
    p.add_argument("--batch", type=int, default=64, help="pairs of feature maps (test images 0..2B-1)")
    p.add_argument("--scales", nargs="+", default=["std", "max", "mean"], help="cost scalings to compare")
    p.add_argument("--eps", type=float, nargs="+", default=[0.5, 0.2, 0.1, 0.05, 0.02, 0.01],
                   help="eps values, in units of the scaled cost")
    p.add_argument("--max-iter", type=int, default=5000, help="iteration cap for the plain and mixkit solvers")
    args = p.parse_args(argv)
    with MachineRecord(resolve_device(args.device)) as rec:
        result = study(args)
    result["machine"] = rec.record
    path = result_path(args.out_dir, "eps", tag=args.tag)
    write_json(path, result)
    plot(result, path.with_suffix(".png"))
    print(table(result))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    main()
