"""A plain single WGAN-GP on rings-8, written without the trainer, to tell whether a grid's
WGAN-GP cells that cover no mode do so because of the grid or the recipe at this length (issue 21).

Gulrajani et al. 2017, Algorithm 1 in plain PyTorch: ``n_critic`` critic steps (each on a fresh
mini-batch of real points from a fixed random subset of the rings train split, and fresh latents)
per generator step; critic loss E[D(G(z))] − E[D(x)] + λ·(‖∇D(x̂)‖₂ − 1)², generator loss
−E[D(G(z))]; one ``torch.optim.Adam`` per network (lr 1e-4, β = (0, 0.9) by default). Only the
networks are shared with Mustangs (``rings-mlp``, the critic without its sigmoid). Every ``--every``
generator steps it prints ``modes_covered5k`` / ``high_quality5k`` (:func:`mustangs.judge.metrics.mode_scores`).

    OMP_NUM_THREADS=1 python benchmarks/plain_wgan_gp_rings.py --g-steps 3000
    OMP_NUM_THREADS=1 python benchmarks/plain_wgan_gp_rings.py --g-steps 1000 --lr 1e-3
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--g-steps", type=int, default=3000, help="generator steps")
    ap.add_argument("--every", type=int, default=500, help="print the mode scores every n generator steps")
    ap.add_argument("--n-critic", type=int, default=5, help="critic steps per generator step")
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam lr of both networks")
    ap.add_argument("--betas", type=float, nargs=2, default=(0.0, 0.9), help="Adam betas of both networks")
    ap.add_argument("--gp-lambda", type=float, default=10.0, help="gradient-penalty weight")
    ap.add_argument("--batch", type=int, default=400, help="mini-batch size")
    ap.add_argument("--sampling-ratio", type=float, default=0.2, help="fraction of the train split used")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from mustangs.data.datasets import load_dataset, point_modes
    from mustangs.judge.metrics import mode_scores, mode_stats
    from mustangs.pool.networks import NetSpec, build_discriminator, build_generator

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = load_dataset("rings", "train")
    X = data.data[torch.randperm(len(data.data))[:int(args.sampling_ratio * len(data.data))]]
    spec = NetSpec("rings-mlp", 8, (2,))
    G, D = build_generator(spec), build_discriminator(spec, critic=True)
    opt_g = torch.optim.Adam(G.parameters(), args.lr, betas=tuple(args.betas))
    opt_d = torch.optim.Adam(D.parameters(), args.lr, betas=tuple(args.betas))
    centres, std = point_modes("rings")
    B, t = args.batch, time.time()
    for step in range(1, args.g_steps + 1):
        for _ in range(args.n_critic):
            real = X[torch.randint(0, len(X), (B,))]
            with torch.no_grad():
                fake = G(torch.randn(B, 8))
            eps = torch.rand(B, 1)
            x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
            grad, = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
            gp = ((grad.norm(2, dim=1) - 1) ** 2).mean()
            loss_d = D(fake).mean() - D(real).mean() + args.gp_lambda * gp
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        loss_g = -D(G(torch.randn(B, 8))).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if step % args.every == 0:
            with torch.no_grad():
                pts = G(torch.randn(5000, 8)).numpy()
            s = mode_scores(mode_stats(pts, centres.numpy(), std))
            print(f"wgan-gp lr {args.lr:g} step {step}: {time.time() - t:.0f} s, "
                  + ", ".join(f"{k}={v:.3f}" for k, v in s.items()), flush=True)


if __name__ == "__main__":
    main()
