"""The ``trainer train`` config: typed dataclasses with legal values next to every knob.

Load with ``load_train_config(path, overrides)``; unknown keys, illegal values and impossible
combinations raise :class:`~mustangs.errors.ConfigError` (one line, exit code 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from mustangs.data.datasets import DATASETS
from mustangs.errors import ConfigError
from mustangs.pool.networks import ARCH_SHAPES, ARCHS, CONDITIONAL_ARCHS, INITS
from trainer.configio import load_config, option
from trainer.wgan_recipe import WassersteinConfig, resolve as resolve_wasserstein

LOSSES = ("bce", "mustangs", "wgan", "wgan-gp")  # loss modes of the whole run
ADVERSARIES = ("selected", "neighbour")  # who each selected G/D trains against
#: Retired names of the adversary values (they described the implementation, not the recipe).
ADVERSARY_RENAMES = {"own": "selected", "random": "neighbour"}
DEVICES = ("auto", "cpu", "cuda")
BATCHING = ("auto", "bmm", "grouped", "vmap", "loop")
ADAM_KERNELS = ("fused", "ops")
REPLACEMENTS = ("elitist", "crowding")  # how a trained copy may replace the centre (docs/lineages.md)
POOL_MEMBERS = ("centres", "centres+lineage-best", "centres+snapshots", "all")  # what pool/ keeps (docs/lineages.md)
EXCHANGES = ("sync", "async")         # how ranks exchange centres (docs/scale-out.md)
LABELLED_DATASETS = ("fashion-mnist", "mnist")  # datasets a conditional run may train on (labels + a shipped judge)


@dataclass
class GridConfig:
    """The torus of cells."""

    height: int = option(2, ge=1)  # rows of the torus; >= 1
    width: int = option(2, ge=1)   # columns of the torus; >= 1


@dataclass
class NetworkConfig:
    """Generator/discriminator pair (see mustangs/pool/networks.py)."""

    arch: str = option("mlp", choices=ARCHS)  # mlp | dcgan28 (28x28x1) | dcgan64 (64x64x3) | rings-mlp (2-D points)
    latent_dim: int = option(64, ge=1)        # size of the generator's latent z; >= 1
    init: str = option("auto", choices=INITS)  # initial weights: auto (default: dcgan for dcgan28/dcgan64, torch for the MLPs; benchmarks/RESULTS.md "A plain single GAN") | torch (PyTorch's default per module; the reference recipe, every run before this key) | dcgan (Radford et al. 2016: conv/linear weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0; from each cell's own stream)
    conditional: bool = False                 # class-conditional G and D (labelled data: fashion-mnist | mnist; arch mlp | dcgan28; loss bce | mustangs | wgan); docs/wgan-and-conditional.md


@dataclass
class DataConfig:
    """Training data and how each cell sees it."""

    dataset: str = option("fashion-mnist", choices=DATASETS)  # fashion-mnist | mnist | cifar10 | image-folder | rings | grid25 (2-D toys: modes_covered, high_quality, tvd_modes scores)
    data_dir: str | None = None                # folder with the data files (None = default places)
    image_size: int | None = option(None, ge=8)  # image-folder only: square side in pixels (None = 64)
    sampling_ratio: float = option(1.0, gt=0.0, le=1.0)  # data dieting: each cell trains on its own fixed random subset of this fraction; (0, 1]
    batch_size: int = option(100, ge=1)        # mini-batch size of every Adam step (and of the fitness batch unless coevolution.fitness_samples); >= 1


@dataclass
class CoevolutionConfig:
    """The generation step (design.md §3)."""

    generations: int = option(10, ge=1)                     # number of generations; >= 1
    batches_per_generation: int | None = option(None, ge=1)  # Adam steps per generation (None = one pass over the cell's data)
    loss: str = option("mustangs", choices=LOSSES)          # bce (Lipizzaner) | mustangs (per-generator draw of bce/mse/heuristic each generation) | wgan (critic, clipping, RMSprop) | wgan-gp (critic, gradient penalty, Adam); see section wasserstein
    tournament_size: int = option(2, ge=1)                  # tournament size of selection; 1 ..= sub-population size
    selection: bool = True   # tournament selection + elitist replacement; false = "SPaGAN" ablation (always train and keep the centre)
    exchange: bool = True    # exchange with the von Neumann neighbours; false = "PaGAN" ablation (isolated GANs, sub-population = the cell)
    lr_g: float = option(0.0002, gt=0.0, le=1.0)           # initial generator learning rate; (0, 1]
    lr_d: float = option(0.0002, gt=0.0, le=1.0)           # initial discriminator learning rate; (0, 1]
    betas: list[float] = option([0.5, 0.999])              # Adam (beta1, beta2); each in [0, 1)
    mutation_probability: float = option(0.5, ge=0.0, le=1.0)  # chance per cell and generation that each lr is mutated; [0, 1]
    mutation_scale: float = option(0.1, ge=0.0, le=1.0)    # relative std of a mutation: lr ← lr·(1 + scale·N(0,1)); [0, 1]
    lr_min: float = option(1e-6, gt=0.0, le=1.0)           # a mutated lr never drops below this; (0, 1]
    adversary: str = option("selected", choices=ADVERSARIES, renamed=ADVERSARY_RENAMES)  # selected (default, the Lipizzaner reference recipe: the cell's tournament-selected G and D train against each other every mini-batch) | neighbour (experiment: a live neighbourhood D/G drawn per mini-batch; trains far slower)
    d_skip_every: int | None = option(None, ge=2)          # skip the discriminator step on every n-th batch (None = never; the reference's discriminator_skip_each_nth_step: 1 is 2 here); >= 2
    fitness_samples: int | None = option(None, ge=1)       # real and fake samples per fitness evaluation (None = data.batch_size; the reference's fitness_sample_size is 1000); >= 1
    migration_every: int = option(1, ge=1)                 # exchange with the neighbours only on every k-th generation (the others: the cell alone, as with exchange=false); 1 = every generation (reference); >= 1
    foreign_replacement: float = option(1.0, ge=0.0, le=1.0)  # chance that a trained copy of another lineage may replace the centre (the elitist test still applies); 1.0 = always (reference); [0, 1]
    replacement: str = option("elitist", choices=REPLACEMENTS)  # elitist (reference: the trained copy replaces the centre when its fitness is better) | crowding (as elitist, but a copy of another lineage is refused while its lineage holds a strict majority of the neighbourhood's centres)


@dataclass
class MixtureConfig:
    """Per-cell mixture weights over the neighbourhood's generators ((1+1)-ES on fid_cls)."""

    enabled: bool = True                      # run the (1+1)-ES on mixture weights; false = uniform weights
    sigma: float = option(0.05, gt=0.0, le=10.0)  # std of the ES perturbation of the weights (which sum to 1); (0, 10]
    eval_samples: int = option(1000, ge=16)   # samples per cell generator per scored generation (cheap fid_cls); >= 16


@dataclass
class EvalConfig:
    """Scoring on the evaluation classifier (fid_cls*, tvd_cls*)."""

    every: int | None = option(1, ge=1)       # score cells and step the mixture ES every n generations (None = only at the end); >= 1
    fid_samples: int = option(10000, ge=16)   # samples per generator for the final scores written to the pool; >= 16
    classifier: str | None = None             # the judge: None = the dataset's ($MUSTANGS_CACHE/classifiers/<dataset>/, then shipped) | a NAME | a classifier folder or .json
    force_classifier: bool = False            # accept a classifier trained on another dataset (the pool records forced: true)
    diversity_samples: int | None = option(1000, ge=6)  # samples per generator (and real) for precision/recall/density/coverage/kid in the final pool scores (None = skip); >= 6
    inception: bool | None = None             # fid_incep*/kid_incep* in the final pool scores: None = for RGB data when pytorch-fid's weights are on disk | true = required | false = never
    inception_samples: int = option(10000, ge=2)  # samples per generator (and real) for the Inception metrics; >= 2


@dataclass
class OutputConfig:
    """What the run folder receives."""

    checkpoint_every: int = option(1, ge=1)   # checkpoint every n generations (and always at the end); >= 1
    sample_every: int | None = option(1, ge=1)  # PNG sample grid every n generations (None = only the last); >= 1
    samples_per_cell: int = option(8, ge=1, le=64)  # samples per cell in each grid (one row per cell); 1 ..= 64
    report: bool = True                       # write report.html + PNGs at the end
    pool_members: str = option("centres", choices=POOL_MEMBERS)  # what pool/ holds: centres (the final centre generators) | centres+lineage-best (+ the best-scoring generator each lineage ever produced) | centres+snapshots (+ every centre every output.snapshot_every generations) | all (both)
    snapshot_every: int = option(10, ge=1)    # with centres+snapshots or all: keep every centre generator every n generations (held in memory and in checkpoints); >= 1
    tensorboard: bool | None = None           # TensorBoard event files in <run>/tensorboard/: None = when the tensorboard package is installed | true = required | false = never


@dataclass
class DistributionConfig:
    """How worker processes (--workers N, torchrun) exchange their cells (docs/scale-out.md)."""

    exchange: str = option("sync", choices=EXCHANGES)  # sync (default: every generation waits for all ranks; reproducible, equal to one process) | async (a rank trains against the freshest neighbour centres it has received and never waits for their current generation; not reproducible)
    max_staleness: int | None = option(None, ge=0)     # async only: wait while a neighbour copy is more than this many generations behind (None = never wait); >= 0
    lost_after: float | None = option(None, gt=0.0)    # async only: seconds without a heartbeat after which a waiting rank gives up on another (dead and not restarted: a one-line error, rerun with --resume); None = 120; > 0


@dataclass
class TrainConfig:
    """Everything ``trainer train`` needs; see configs/*.yaml for worked examples."""

    seed: int = option(0, ge=0, le=2**63 - 1)          # master seed; every cell derives its own streams from it; 0 ..= 2**63-1
    device: str = option("auto", choices=DEVICES)      # auto (cuda when available) | cpu | cuda
    batching: str = option("auto", choices=BATCHING)   # auto (bmm for MLP archs; else loop on a CPU, where it was fastest for the DCGANs, vmap on a GPU) | bmm (one stacked GEMM per layer for all cells; MLP archs only) | grouped (one grouped convolution per layer for all cells, HFTA-style; dcgan28/dcgan64 only) | vmap (all cells in one vmapped call; any arch) | loop (per-cell loop; same numbers, slower)
    adam: str = option("fused", choices=ADAM_KERNELS)    # fused (default: PyTorch's fused kernel per cell, one pass over memory; ops where the build lacks it) | ops (the same formula op by op, other rounding; reproduces runs recorded before fused became the default)
    threads: int | None = option(None, ge=1, le=1024)  # CPU threads for torch during the run; None = every core this process may use (sched_getaffinity), shared between local ranks; OpenMP threads sleep when idle, so this stays fast on a busy machine (mustangs/threads.py); 1 ..= 1024
    grid: GridConfig = field(default_factory=GridConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    coevolution: CoevolutionConfig = field(default_factory=CoevolutionConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    wasserstein: WassersteinConfig = field(default_factory=WassersteinConfig)  # coevolution.loss=wgan | wgan-gp only
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    distribution: DistributionConfig = field(default_factory=DistributionConfig)

    @property
    def num_cells(self) -> int:
        """Cells on the grid."""
        return self.grid.height * self.grid.width

    def sample_shape(self) -> tuple[int, ...]:
        """The sample shape the dataset produces (without loading it)."""
        ds = self.data.dataset
        if ds in ("fashion-mnist", "mnist"):
            return (1, 28, 28)
        if ds == "cifar10":
            return (3, 32, 32)
        if ds == "image-folder":
            s = self.data.image_size or 64
            return (3, s, s)
        return (2,)

    def validate(self) -> None:
        """Cross-field checks, each naming the fix."""
        from trainer.grid import Grid

        b = self.coevolution.betas
        if len(b) != 2 or not all(0.0 <= x < 1.0 for x in b):
            raise ConfigError(f"coevolution.betas: expected two numbers in [0, 1), got {b!r}")
        shape = self.sample_shape()
        want = ARCH_SHAPES[self.network.arch]
        if tuple(want) != shape:
            fits = [a for a, s in ARCH_SHAPES.items() if tuple(s) == shape]
            hint = f"set network.arch={fits[0]}" if fits else "no shipped arch fits this dataset"
            raise ConfigError(f"network.arch={self.network.arch} makes samples of shape {tuple(want)} but "
                              f"dataset {self.data.dataset} has shape {shape}; {hint}")
        if self.data.dataset == "image-folder" and not self.data.data_dir:
            raise ConfigError("data.dataset=image-folder needs data.data_dir (a folder of images); "
                              "set data.data_dir=/path/to/images")
        co = self.coevolution
        sub = Grid(self.grid.height, self.grid.width).subpopulation_size if co.exchange else 1
        if co.selection and co.tournament_size > sub:
            raise ConfigError(
                f"coevolution.tournament_size={co.tournament_size} is larger than the sub-population "
                f"({sub} on a {self.grid.height}x{self.grid.width} grid"
                f"{'' if co.exchange else ' without exchange'}); set coevolution.tournament_size<={sub}"
                f"{'' if co.exchange else ' or coevolution.selection=false'}")
        if self.eval.inception and self.data.dataset == "rings":
            raise ConfigError("eval.inception=true needs image data, but data.dataset=rings holds 2-D points; "
                              "set eval.inception=null")
        if self.output.tensorboard:
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                raise ConfigError("output.tensorboard=true but the tensorboard package is not installed; "
                                  "pip install 'mustangs[tensorboard]' or set output.tensorboard=null")
        if co.lr_min > min(co.lr_g, co.lr_d):
            raise ConfigError(f"coevolution.lr_min={co.lr_min} is above the initial learning rates; lower it")
        if self.distribution.exchange == "async" and co.adversary == "neighbour":
            raise ConfigError("coevolution.adversary=neighbour trains against live neighbours every mini-batch, "
                              "which needs lockstep ranks; set distribution.exchange=sync")
        if self.distribution.lost_after is not None and self.distribution.exchange != "async":
            raise ConfigError("distribution.lost_after is how long an async rank waits for a silent one; "
                              "set distribution.exchange=async or distribution.lost_after=null")
        if self.distribution.max_staleness is not None and self.distribution.exchange != "async":
            raise ConfigError("distribution.max_staleness bounds the async exchange only; "
                              "set distribution.exchange=async or distribution.max_staleness=null")
        recipe = resolve_wasserstein(co.loss, self.wasserstein)
        if recipe is not None and co.d_skip_every is not None:
            raise ConfigError(f"coevolution.d_skip_every is for bce/mustangs; {co.loss} takes "
                              f"wasserstein.n_critic critic steps per generator step; set coevolution.d_skip_every=null")
        if recipe is not None and co.lr_min > min(recipe.lr_g, recipe.lr_d):
            raise ConfigError(f"coevolution.lr_min={co.lr_min} is above the {co.loss} learning rates; lower it")
        self._validate_pool_members()
        if self.network.conditional:
            self._validate_conditional()
        if self.batching == "bmm" and self.network.arch not in ("mlp", "rings-mlp"):
            raise ConfigError(f"batching=bmm runs MLP networks only, not network.arch={self.network.arch}; "
                              f"set batching=auto (or vmap)")
        if self.batching == "grouped" and self.network.arch not in ("dcgan28", "dcgan64"):
            raise ConfigError(f"batching=grouped runs the DCGAN networks (dcgan28, dcgan64) only, not "
                              f"network.arch={self.network.arch}; set batching=auto (or vmap)")

    def _validate_conditional(self) -> None:
        """``network.conditional``: labelled data, an arch with a conditional form, a loss whose
        every term is defined for (image, label) pairs."""
        net, ds = self.network, self.data.dataset
        if ds not in LABELLED_DATASETS or net.arch not in CONDITIONAL_ARCHS:
            what = "has no class labels to condition on" if ds in ("image-folder", "rings", "grid25") else \
                f"needs network.arch={net.arch}, which has no conditional form"
            raise ConfigError(f"network.conditional=true: data.dataset={ds} {what}; conditional runs train "
                              f"{' or '.join(CONDITIONAL_ARCHS)} on {' or '.join(LABELLED_DATASETS)}; set "
                              f"data.dataset=fashion-mnist network.arch=mlp or network.conditional=false")
        if self.coevolution.loss == "wgan-gp":
            raise ConfigError("coevolution.loss=wgan-gp interpolates real and fake inputs, which have different "
                              "labels in a conditional run; set coevolution.loss=wgan (or bce, mustangs) or "
                              "network.conditional=false")

    def _validate_pool_members(self) -> None:
        """``output.pool_members``: refuse what the async exchange cannot gather, and a pool that
        remembers more generators than a pool may list or than :data:`REMEMBERED_LIMIT` bytes."""
        from mustangs.io.safety import human_bytes
        from mustangs.io.validation import MAX_GENERATORS
        from trainer.remember import remembered_bytes, remembered_count

        out = self.output
        if out.pool_members == "centres":
            return
        if self.distribution.exchange == "async":
            raise ConfigError(f"output.pool_members={out.pool_members} remembers generators of the whole grid every "
                              "generation, which the async exchange does not gather; set distribution.exchange=sync "
                              "or output.pool_members=centres")
        n = self.num_cells + remembered_count(self.num_cells, self.coevolution.generations, out.pool_members,
                                              out.snapshot_every)
        size = remembered_bytes(self)
        if n > MAX_GENERATORS or size > REMEMBERED_LIMIT:
            raise ConfigError(f"output.pool_members={out.pool_members} would keep {n:,} generators "
                              f"({human_bytes(size)} in memory, in every checkpoint and in the pool; the limits are "
                              f"{MAX_GENERATORS:,} and {human_bytes(REMEMBERED_LIMIT)}); raise output.snapshot_every "
                              "or set output.pool_members=centres+lineage-best")


#: Most bytes of remembered generators (``output.pool_members``) a run may keep: they sit in memory
#: and are rewritten with every checkpoint.
REMEMBERED_LIMIT = 4 << 30


def load_train_config(path: str | Path | None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a train config from YAML plus dotted ``key=value`` overrides, fully validated."""
    return load_config(TrainConfig, path, overrides)
