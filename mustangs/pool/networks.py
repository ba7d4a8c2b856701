"""Generator/discriminator pairs, chosen by name in the config.

Every generator maps a latent ``z [N, latent_dim]`` to samples ``[N, *sample_shape]`` in
[-1, 1]; every discriminator maps samples to the probability ``[N]`` that they are real.
A network is fully described by ``(arch, latent_dim, sample_shape)``, which is what pools
and ensembles store next to the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mustangs.errors import UserError

ARCHS = ("mlp", "dcgan28", "dcgan64", "rings-mlp")

#: The sample shape each architecture is built for (``None`` = any of the listed shapes).
ARCH_SHAPES: dict[str, tuple[int, ...]] = {
    "mlp": (1, 28, 28),
    "dcgan28": (1, 28, 28),
    "dcgan64": (3, 64, 64),
    "rings-mlp": (2,),
}


@dataclass(frozen=True)
class NetSpec:
    """What is needed to rebuild a network: architecture name, latent size, sample shape."""

    arch: str
    latent_dim: int
    sample_shape: tuple[int, ...]

    def to_json(self) -> dict:
        return {"arch": self.arch, "latent_dim": self.latent_dim, "sample_shape": list(self.sample_shape)}

    @classmethod
    def from_json(cls, data: dict) -> "NetSpec":
        try:
            spec = cls(str(data["arch"]), int(data["latent_dim"]), tuple(int(s) for s in data["sample_shape"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"bad network description {data!r}: {exc}") from None
        check_spec(spec)
        return spec


def check_spec(spec: NetSpec) -> None:
    """Refuse architectures we do not know or shapes they cannot produce."""
    if spec.arch not in ARCHS:
        raise UserError(f"unknown network arch '{spec.arch}'; legal values: {', '.join(ARCHS)}")
    want = ARCH_SHAPES[spec.arch]
    if tuple(spec.sample_shape) != want:
        raise UserError(f"network arch '{spec.arch}' makes samples of shape {want}, "
                        f"not {tuple(spec.sample_shape)}; pick an arch that fits the dataset")
    if spec.latent_dim < 1:
        raise UserError(f"latent_dim must be >= 1, got {spec.latent_dim}")


class MLPGenerator(nn.Module):
    """The reference Lipizzaner MNIST generator: z → 256 → 256 → 784, LeakyReLU 0.2, tanh."""

    def __init__(self, latent_dim: int = 64, sample_shape=(1, 28, 28), hidden: int = 256):
        super().__init__()
        self.latent_dim, self.sample_shape = latent_dim, tuple(sample_shape)
        out = math.prod(self.sample_shape)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, out), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.sample_shape)


class MLPDiscriminator(nn.Module):
    """The reference Lipizzaner MNIST discriminator: 784 → 256 → 256 → 1, sigmoid."""

    def __init__(self, sample_shape=(1, 28, 28), hidden: int = 256):
        super().__init__()
        inp = math.prod(sample_shape)
        self.net = nn.Sequential(
            nn.Linear(inp, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1)).squeeze(1)


class RingsGenerator(MLPGenerator):
    """A small MLP for 2-D toy data: z → 128 → 128 → 2 (linear output)."""

    def __init__(self, latent_dim: int = 8, sample_shape=(2,)):
        super().__init__(latent_dim, sample_shape, hidden=128)
        self.net[-1] = nn.Identity()


class RingsDiscriminator(MLPDiscriminator):
    """A small MLP critic for 2-D toy data: 2 → 128 → 128 → 1, sigmoid."""

    def __init__(self, sample_shape=(2,)):
        super().__init__(sample_shape, hidden=128)


class DCGAN28Generator(nn.Module):
    """DCGAN generator for 28×28×1: z → 128×7×7 → 64×14×14 → 1×28×28."""

    def __init__(self, latent_dim: int = 64, sample_shape=(1, 28, 28)):
        super().__init__()
        self.latent_dim, self.sample_shape = latent_dim, tuple(sample_shape)
        self.fc = nn.Sequential(nn.Linear(latent_dim, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU())
        self.conv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.ConvTranspose2d(64, sample_shape[0], 4, 2, 1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(self.fc(z).view(-1, 128, 7, 7))


class DCGAN28Discriminator(nn.Module):
    """DCGAN discriminator for 28×28×1 (no batch norm, so it behaves the same in any batch)."""

    def __init__(self, sample_shape=(1, 28, 28)):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(sample_shape[0], 64, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(128 * 7 * 7, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class DCGAN64Generator(nn.Module):
    """The DCGAN generator of Radford et al. for 64×64×3."""

    def __init__(self, latent_dim: int = 100, sample_shape=(3, 64, 64), width: int = 64):
        super().__init__()
        self.latent_dim, self.sample_shape = latent_dim, tuple(sample_shape)
        w = width
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, w * 8, 4, 1, 0), nn.BatchNorm2d(w * 8), nn.ReLU(),
            nn.ConvTranspose2d(w * 8, w * 4, 4, 2, 1), nn.BatchNorm2d(w * 4), nn.ReLU(),
            nn.ConvTranspose2d(w * 4, w * 2, 4, 2, 1), nn.BatchNorm2d(w * 2), nn.ReLU(),
            nn.ConvTranspose2d(w * 2, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.ConvTranspose2d(w, sample_shape[0], 4, 2, 1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class DCGAN64Discriminator(nn.Module):
    """The DCGAN discriminator for 64×64×3, without batch norm (per-sample behaviour)."""

    def __init__(self, sample_shape=(3, 64, 64), width: int = 64):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(sample_shape[0], w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, w * 2, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w * 2, w * 4, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w * 4, w * 8, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w * 8, 1, 4, 1, 0), nn.Flatten(), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


_GENERATORS = {"mlp": MLPGenerator, "dcgan28": DCGAN28Generator, "dcgan64": DCGAN64Generator,
               "rings-mlp": RingsGenerator}
_DISCRIMINATORS = {"mlp": MLPDiscriminator, "dcgan28": DCGAN28Discriminator,
                   "dcgan64": DCGAN64Discriminator, "rings-mlp": RingsDiscriminator}


def build_generator(spec: NetSpec) -> nn.Module:
    """A freshly initialised generator for ``spec``."""
    check_spec(spec)
    return _GENERATORS[spec.arch](spec.latent_dim, spec.sample_shape)


def build_discriminator(spec: NetSpec) -> nn.Module:
    """A freshly initialised discriminator for ``spec`` (latent size is not used)."""
    check_spec(spec)
    return _DISCRIMINATORS[spec.arch](spec.sample_shape)


def network_numels(spec: NetSpec) -> dict[str, int]:
    """Parameter and activation counts of one G and one D for ``spec``, without allocating anything.

    The networks are built on PyTorch's ``meta`` device and run on one meta sample, so the
    counts are exact for every architecture. Keys: ``g_params``, ``d_params``,
    ``g_activations``, ``d_activations`` (values per sample, summed over all layer outputs).
    """
    check_spec(spec)
    counts = {"g_activations": 0, "d_activations": 0}

    def counter(key):
        def hook(_module, _inp, out):
            if isinstance(out, torch.Tensor):
                counts[key] += out.numel()
        return hook

    with torch.device("meta"):
        g = _GENERATORS[spec.arch](spec.latent_dim, spec.sample_shape).eval()
        d = _DISCRIMINATORS[spec.arch](spec.sample_shape).eval()
        handles = [m.register_forward_hook(counter("g_activations")) for m in g.modules()]
        handles += [m.register_forward_hook(counter("d_activations")) for m in d.modules()]
        with torch.no_grad():
            d(g(torch.empty(1, spec.latent_dim)))
        for h in handles:
            h.remove()
    counts["g_params"] = sum(p.numel() for p in g.parameters()) + sum(b.numel() for b in g.buffers())
    counts["d_params"] = sum(p.numel() for p in d.parameters()) + sum(b.numel() for b in d.buffers())
    return counts


def check_network_memory(spec: NetSpec, where: str, copies: int = 4) -> None:
    """Refuse a network description (from a file) whose generator could not even be built in memory."""
    from mustangs.io.safety import check_memory

    n = network_numels(spec)
    check_memory(4 * copies * n["g_params"], f"{where}: a '{spec.arch}' generator with latent_dim "
                 f"{spec.latent_dim} ({n['g_params']:,} parameters)")
