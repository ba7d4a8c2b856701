"""Generator/discriminator pairs, chosen by name in the config.

Every generator maps a latent ``z [N, latent_dim]`` to samples ``[N, *sample_shape]`` in
[-1, 1]; every discriminator maps samples to the probability ``[N]`` that they are real.
A network is fully described by ``(arch, latent_dim, sample_shape)`` and, for a
class-conditional pair, the class names it was trained on (``classes``), which is what pools and
ensembles store next to the weights.

**Conditional networks** (``classes`` set; ``mlp`` and ``dcgan28``). The generator takes
``(z, labels)``: the label's one-hot is concatenated to z before the first layer, which is the
same function as a learned label embedding concatenated to z (the first layer's columns for the
one-hot *are* the embedding), with no extra module, so the ``bmm``/``vmap`` engines train it as
they train any generator. Called with ``z`` alone it draws labels ``0, 1, …, K−1, 0, …`` (a
balanced batch), so every caller that only knows ``G(z)`` keeps working. Inside the batched
engines it receives the packed ``[z, onehot(y)]`` (width ``latent_dim + K``).

The discriminator receives the packed ``[flatten(x), onehot(y)]`` (:func:`pack`). The ``dcgan28``
one is a projection discriminator (Miyato & Koyama 2018): ``D(x, y) = ψ(φ(x)) + ⟨e_y, φ(x)⟩``:
the label asks "is this a real *y*" through one inner product with the conv features, the
form that paper found to beat input concatenation for conv discriminators, at the cost of one
6272-wide embedding. The ``mlp`` one concatenates the one-hot to the flattened image, the
original cGAN of Mirza & Osindero (2014), which was this MLP; it stays a plain stack of linear
layers, so the fast ``bmm`` engine still runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mustangs.errors import UserError

ARCHS = ("mlp", "dcgan28", "dcgan64", "rings-mlp")

#: Weight initialisations a run may ask for (``network.init``): ``torch`` = PyTorch's default per
#: module (what every run before ``network.init`` existed used) | ``dcgan`` = the DCGAN paper's |
#: ``auto`` = ``dcgan`` for the convolutional archs, ``torch`` for the MLPs.
INITS = ("torch", "dcgan", "auto")
#: The archs ``network.init=auto`` initialises the DCGAN way (the convolutional ones).
DCGAN_INIT_ARCHS = ("dcgan28", "dcgan64")

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
    classes: tuple[str, ...] | None = None   # class-conditional on these class names (label i = classes[i]); None = unconditional

    @property
    def num_classes(self) -> int:
        """K for a conditional pair, 0 otherwise."""
        return len(self.classes) if self.classes else 0

    def to_json(self) -> dict:
        out = {"arch": self.arch, "latent_dim": self.latent_dim, "sample_shape": list(self.sample_shape)}
        if self.classes:   # unconditional specs keep the old, three-key form
            out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "NetSpec":
        try:
            classes = data.get("classes")
            spec = cls(str(data["arch"]), int(data["latent_dim"]), tuple(int(s) for s in data["sample_shape"]),
                       tuple(str(c) for c in classes) if classes else None)
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
    if spec.classes is not None:
        if spec.arch not in CONDITIONAL_ARCHS:
            raise UserError(f"network arch '{spec.arch}' has no conditional form; conditional archs: "
                            f"{', '.join(CONDITIONAL_ARCHS)}")
        if len(spec.classes) < 2 or len(set(spec.classes)) != len(spec.classes):
            raise UserError(f"a conditional network needs >= 2 distinct class names, got {list(spec.classes)}")


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


def balanced_labels(n: int, k: int, device=None) -> torch.Tensor:
    """``0, 1, …, k−1, 0, 1, …`` (n labels): what a conditional generator draws when given none."""
    return torch.arange(n, device=device) % k


def pack(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """A conditional discriminator's input: ``[flatten(x), onehot(labels)]`` over the last dims.

    ``x`` is ``[..., *sample_shape]`` with ``labels`` ``[...]`` (long); returns ``[..., numel + k]``.
    """
    lead = labels.dim()
    flat = x.reshape(*x.shape[:lead], -1)
    return torch.cat([flat, torch.nn.functional.one_hot(labels, k).to(flat.dtype)], -1)


class _ConditionalGenerator:
    """Mixin: ``forward(z, labels=None)`` appends the labels' one-hot to z (see the module doc)."""

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if z.shape[-1] == self.latent_dim:   # noise only: append the one-hot (balanced if no labels)
            if labels is None:
                labels = balanced_labels(z.shape[0], self.num_classes, z.device)
            z = torch.cat([z, torch.nn.functional.one_hot(labels.long(), self.num_classes).to(z.dtype)], -1)
        return super().forward(z)


class CondMLPGenerator(_ConditionalGenerator, MLPGenerator):
    """The MLP generator on ``[z, onehot(y)]``."""

    def __init__(self, latent_dim: int = 64, sample_shape=(1, 28, 28), num_classes: int = 10):
        super().__init__(latent_dim + num_classes, sample_shape)
        self.latent_dim, self.num_classes = latent_dim, num_classes


class CondMLPDiscriminator(MLPDiscriminator):
    """The MLP discriminator on ``[flatten(x), onehot(y)]`` (input concatenation)."""

    def __init__(self, sample_shape=(1, 28, 28), num_classes: int = 10):
        super().__init__((math.prod(sample_shape) + num_classes,))
        self.sample_shape, self.num_classes = tuple(sample_shape), num_classes

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x if labels is None else pack(x, labels, self.num_classes))


class CondDCGAN28Generator(_ConditionalGenerator, DCGAN28Generator):
    """The DCGAN28 generator on ``[z, onehot(y)]``."""

    def __init__(self, latent_dim: int = 64, sample_shape=(1, 28, 28), num_classes: int = 10):
        super().__init__(latent_dim + num_classes, sample_shape)
        self.latent_dim, self.num_classes = latent_dim, num_classes


class CondDCGAN28Discriminator(nn.Module):
    """Projection discriminator (Miyato & Koyama 2018) on the DCGAN28 body: ψ(φ(x)) + ⟨e_y, φ(x)⟩.

    Input: packed ``[flatten(x), onehot(y)]`` (or ``x`` and ``labels``). ``net`` is the head
    (linear + sigmoid; a critic's has no sigmoid); ``embed`` maps the one-hot to e_y.
    """

    def __init__(self, sample_shape=(1, 28, 28), num_classes: int = 10):
        super().__init__()
        self.sample_shape, self.num_classes = tuple(sample_shape), num_classes
        self.body = nn.Sequential(
            nn.Conv2d(sample_shape[0], 64, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
        )
        self.net = nn.Sequential(nn.Linear(128 * 7 * 7, 1), nn.Sigmoid())
        self.embed = nn.Linear(num_classes, 128 * 7 * 7, bias=False)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            n = math.prod(self.sample_shape)
            x, onehot = x[:, :n].reshape(x.shape[0], *self.sample_shape), x[:, n:]
        else:
            onehot = torch.nn.functional.one_hot(labels, self.num_classes).to(x.dtype)
        h = self.body(x)
        out = self.net[0](h) + (self.embed(onehot) * h).sum(1, keepdim=True)
        return self.net[1](out).squeeze(1)


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


#: Architectures with a class-conditional form (``NetSpec.classes``).
CONDITIONAL_ARCHS = ("mlp", "dcgan28")
_COND_GENERATORS = {"mlp": CondMLPGenerator, "dcgan28": CondDCGAN28Generator}
_COND_DISCRIMINATORS = {"mlp": CondMLPDiscriminator, "dcgan28": CondDCGAN28Discriminator}

_GENERATORS = {"mlp": MLPGenerator, "dcgan28": DCGAN28Generator, "dcgan64": DCGAN64Generator,
               "rings-mlp": RingsGenerator}
_DISCRIMINATORS = {"mlp": MLPDiscriminator, "dcgan28": DCGAN28Discriminator,
                   "dcgan64": DCGAN64Discriminator, "rings-mlp": RingsDiscriminator}


def resolve_init(init: str, arch: str) -> str:
    """The initialisation ``network.init`` means for ``arch``: ``torch`` or ``dcgan`` (``auto``
    picks ``dcgan`` for the convolutional archs, ``torch`` for the MLPs)."""
    if init == "auto":
        return "dcgan" if arch in DCGAN_INIT_ARCHS else "torch"
    if init not in ("torch", "dcgan"):
        raise ValueError(f"unknown initialisation {init!r}; legal values: {', '.join(INITS)}")
    return init


@torch.no_grad()
def dcgan_init(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise ``module`` in place the way the DCGAN paper does (Radford et al. 2016):
    conv, transposed-conv and linear weights N(0, 0.02), BatchNorm weights N(1, 0.02), every
    bias 0. Draws only from ``generator`` (a cell's own stream), in module order, so a cell's
    weights depend on its seed alone. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02, generator=generator)
            nn.init.zeros_(m.bias)
    return module


def build_generator(spec: NetSpec) -> nn.Module:
    """A freshly initialised generator for ``spec``."""
    check_spec(spec)
    if spec.classes:
        return _COND_GENERATORS[spec.arch](spec.latent_dim, spec.sample_shape, spec.num_classes)
    return _GENERATORS[spec.arch](spec.latent_dim, spec.sample_shape)


def build_discriminator(spec: NetSpec, critic: bool = False) -> nn.Module:
    """A freshly initialised discriminator for ``spec`` (latent size is not used).

    With ``critic`` the final sigmoid is an identity: a Wasserstein critic that outputs raw
    scores. The parameters (names, shapes, initial values for one seed) are the same.
    """
    check_spec(spec)
    if spec.classes:
        d = _COND_DISCRIMINATORS[spec.arch](spec.sample_shape, spec.num_classes)
    else:
        d = _DISCRIMINATORS[spec.arch](spec.sample_shape)
    if critic:
        seq = d.net
        last = max(i for i, m in enumerate(seq) if isinstance(m, nn.Sigmoid))
        seq[last] = nn.Identity()
    return d


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
        g = build_generator(spec).eval()
        d = build_discriminator(spec).eval()
        handles = [m.register_forward_hook(counter("g_activations")) for m in g.modules()]
        handles += [m.register_forward_hook(counter("d_activations")) for m in d.modules()]
        with torch.no_grad():   # conditional: packed inputs (one_hot cannot run on meta tensors)
            x = g(torch.empty(1, spec.latent_dim + spec.num_classes))
            d(torch.cat([x.reshape(1, -1), torch.empty(1, spec.num_classes)], 1) if spec.classes else x)
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
