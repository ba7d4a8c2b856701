"""A plain single class-conditional GAN, written without the trainer, to tell whether a
conditional grid that ignores its labels does so because of the grid or the networks (issue 21).

The textbook cGAN loop in plain PyTorch: one ``torch.optim.Adam`` per network (lr 2e-4, betas
(0.5, 0.999)), non-saturating BCE, a G step then a D step on each mini-batch of 100 images (with
their labels) drawn at random from a fixed random subset of the Fashion-MNIST train split; fakes
are drawn for uniform random labels. Only the network classes are shared with Mustangs
(``mustangs.pool.networks``, conditional form). Every ``--every`` steps it prints
``cond_acc_cls2k`` (:mod:`mustangs.judge.conditional`) on the shipped judge.

    OMP_NUM_THREADS=1 python benchmarks/plain_cgan.py --arch mlp --steps 2000
    OMP_NUM_THREADS=1 python benchmarks/plain_cgan.py --arch dcgan28 --steps 500
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=("mlp", "dcgan28"), default="mlp")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=500, help="print cond_acc_cls2k every n steps")
    ap.add_argument("--images", type=int, default=6000, help="training images (a fixed random subset)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from ensembler.stats import load_evaluator
    from mustangs.data.class_names import class_names
    from mustangs.data.datasets import load_dataset
    from mustangs.judge.conditional import conditional_accuracy
    from mustangs.pool.networks import NetSpec, build_discriminator, build_generator

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = load_dataset("fashion-mnist", "train")
    idx = torch.randperm(len(data))[:args.images]
    X, Y = data.batch(idx), data.labels[idx]
    spec = NetSpec(args.arch, 64, (1, 28, 28), tuple(class_names("fashion-mnist", 10)))
    G, D = build_generator(spec), build_discriminator(spec)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    bce = torch.nn.functional.binary_cross_entropy
    judge = load_evaluator("fashion-mnist", "cpu", need_real=False).classifier
    ones, zeros = torch.ones(100), torch.zeros(100)
    t = time.time()
    for step in range(1, args.steps + 1):
        i = torch.randint(0, len(X), (100,))
        z, y_fake = torch.randn(100, 64), torch.randint(0, 10, (100,))
        loss_g = bce(D(G(z, y_fake), y_fake), ones)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        with torch.no_grad():
            fake = G(z, y_fake)
        loss_d = bce(D(X[i], Y[i]), ones) + bce(D(fake, y_fake), zeros)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        if step % args.every == 0:
            G.eval()
            acc = conditional_accuracy(judge, lambda y: G(torch.randn(len(y), 64), y), 2000, 10)
            G.train()
            print(f"{args.arch} step {step}: {time.time() - t:.0f} s, cond_acc_cls2k {acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
