"""Training configuration: one dataclass, loaded from YAML, every key overridable on the command line.

Defaults are the paper's recipe (section 6.2): RMSprop (lr 1e-5, momentum 0.9), minibatches of 100,
500,000 updates, annealing ``β_t = min(1, 0.01 + t/10000)`` (eq. 20).
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from flowvi.steps import CONDITIONINGS

from ..cli.options import check_all, parse_mapping
from ..keys import unknown_keys_error
from ..models.dlgm import DLGMArchitecture, DLGMConfig
from .data_source import DATA

#: the keys of TrainConfig that configure the model: the fields of :class:`DLGMArchitecture`
MODEL_KEYS = tuple(f.name for f in fields(DLGMArchitecture))
#: the values of ``optimizer_impl``: torch's ``foreach`` / ``fused`` keywords of its optimizers, or neither
OPTIMIZER_IMPLS = ("default", "foreach", "fused")


@dataclass
class _DataKeys:
    """The first keys of a run's config: its name and its data."""

    name: str = "dlgm"
    data: str = "mnist"  #: the dataset: mnist (Table 2) or cifar10 (Table 3)
    data_dir: str | None = None  #: directory of the datasets (else $FLOWVI_DATA_DIR, else the default)
    binarization: str = "static"  #: static (Larochelle's fixed binarization) or dynamic (fresh draws per epoch)
    verify_data: bool = True  #: check the data files' sha256 (turn off only for test fixtures)
    train_limit: int = 0  #: use only the first N training images (0 = all)
    val_size: int = 0  #: validation images used for the periodic bound (0 = all)
    #: "train" (50,000 images; the validation split selects best.pt) or "train+valid" (all 60,000: a refit
    #: for a number of updates selected on an earlier run, see ``flowvi train --refit-from``)
    train_on: str = "train"


@dataclass
class TrainConfig(DLGMArchitecture, _DataKeys):
    """A run's configuration, one flat mapping (config.yaml): the name and data keys, the model's keys
    (the fields of :class:`~flowvi_experiments.models.dlgm.DLGMArchitecture`, section 6.2), then the
    optimization and run-control keys below. :meth:`model_config` gives the model's config."""

    #: bernoulli or discretized_logistic; "" = the one the data calls for (the model's default is bernoulli)
    likelihood: str = ""
    # optimization
    optimizer: str = "rmsprop"  #: rmsprop or adam
    lr: float = 1e-5
    momentum: float = 0.9  #: RMSprop momentum
    rmsprop_alpha: float = 0.99  #: RMSprop smoothing constant
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    #: torch's implementation of the optimizer's arithmetic: default (torch's choice for the device: one
    #: tensor at a time on CPU), foreach (multi-tensor) or fused (one kernel, Adam only). The same update
    #: up to rounding; only default reproduces earlier runs bit for bit
    optimizer_impl: str = "default"
    lr_schedule: str = "constant"  #: constant, cosine or exponential (decays to lr_final at the last update)
    lr_final: float = 0.0
    warmup: int = 0  #: updates of linear learning-rate warm-up
    grad_clip: float = 0.0  #: max gradient norm (0 = no clipping)
    batch_size: int = 100
    updates: int = 500_000
    anneal_start: float = 0.01  #: β_0 of eq. (20)
    anneal_steps: int = 10_000  #: β_t = min(1, anneal_start + t / anneal_steps); 0 = no annealing
    init_output_bias: bool = True  #: start the decoder bias at the logit of the mean training image
    # run control
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  #: torch intra-op threads (0 = torch's default)
    val_every: int = 5000
    ckpt_every: int = 10_000
    log_every: int = 100
    early_stopping: int = 0  #: stop after this many validations without improvement (0 = off)
    progress: bool = True
    tensorboard: bool = True
    #: the whole update (loss, backward, optimizer step) as one torch.compile(fullgraph=True) graph
    compile: bool = False
    #: capture the update once as a CUDA graph and replay it (device cuda; with compile: reduce-overhead)
    cuda_graph: bool = False

    def __post_init__(self) -> None:
        errors = []
        if self.data not in DATA:
            errors.append(f"data must be one of {', '.join(DATA)}, got {self.data!r}")
        else:
            wanted = DATA[self.data].likelihood
            self.likelihood = self.likelihood or wanted
            if self.likelihood != wanted:
                errors.append(f"data {self.data} needs likelihood {wanted}, got {self.likelihood!r}")
        if self.binarization not in ("static", "dynamic"):
            errors.append(f"binarization must be 'static' or 'dynamic', got {self.binarization!r}")
        if self.train_on not in ("train", "train+valid"):
            errors.append(f"train_on must be 'train' or 'train+valid', got {self.train_on!r}")
        if self.nice_conditioning not in CONDITIONINGS:
            errors.append(f"nice_conditioning must be one of {', '.join(CONDITIONINGS)}, "
                          f"got {self.nice_conditioning!r}")
        if self.optimizer not in ("rmsprop", "adam"):
            errors.append(f"optimizer must be 'rmsprop' or 'adam', got {self.optimizer!r}")
        if self.optimizer_impl not in OPTIMIZER_IMPLS:
            errors.append(f"optimizer_impl must be one of {', '.join(OPTIMIZER_IMPLS)}, got {self.optimizer_impl!r}")
        elif self.optimizer_impl == "fused" and self.optimizer == "rmsprop":
            errors.append("optimizer_impl fused needs optimizer adam (torch has no fused RMSprop): use foreach "
                          "for RMSprop")
        if self.lr_schedule not in ("constant", "cosine", "exponential"):
            errors.append(f"lr_schedule must be constant, cosine or exponential, got {self.lr_schedule!r}")
        if self.lr_schedule == "exponential" and self.lr_final <= 0:
            errors.append("an exponential lr_schedule needs lr_final > 0")
        errors += check_all(asdict(self))  # types and ranges: one table for files and flags (cli/options.py)
        errors += self._check_family()
        for key in ("name", "device", "family"):
            if not isinstance(getattr(self, key), str):
                errors.append(f"{key} must be a string, got {getattr(self, key)!r}")
        for key in ("verify_data", "init_output_bias", "progress", "tensorboard", "compile", "cuda_graph"):
            if not isinstance(getattr(self, key), bool):
                errors.append(f"{key} must be true or false, got {getattr(self, key)!r}")
        if self.cuda_graph is True and isinstance(self.device, str) and not self.device.startswith("cuda"):
            errors.append(f"cuda_graph needs device cuda, this run has device {self.device!r}: drop cuda_graph "
                          "or train on a GPU")
        if errors:
            raise ValueError("; ".join(errors))

    def _check_family(self) -> list[str]:
        """The family's name and its ``family_options`` against the family table (the options then in
        their kinds, as config.yaml records them)."""
        from ..family_table import FAMILIES

        if not isinstance(self.family, str):
            return []  # named with the other string keys
        if self.family.lower() not in FAMILIES:
            return [f"unknown posterior family {self.family!r}: expected one of {', '.join(FAMILIES)}"]
        if self.family_options is None:  # "family_options:" with no value in a YAML file
            self.family_options = {}
        latent_ok = isinstance(self.latent, int) and not isinstance(self.latent, bool) and self.latent >= 1
        latent = self.latent if latent_ok else None  # a bad latent is named by check_all
        try:
            self.family_options = FAMILIES[self.family.lower()].check_options(self.family_options, latent)
        except ValueError as exc:
            return [str(exc)]
        return []

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def model_config(self) -> DLGMConfig:
        """The DLGM's configuration: the model keys of this config and ``x_dim``, the dimension of
        ``data`` (784 for MNIST, 3072 for CIFAR-10)."""
        return DLGMConfig.from_dict({**{name: getattr(self, name) for name in MODEL_KEYS},
                                     "x_dim": DATA[self.data].x_dim})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(unknown_keys_error("config", unknown, known))
        return cls(**{k: _coerce(known[k], v) for k, v in values.items()})


def _field_type(f: Any) -> type:
    t = str(f.type)
    if t.startswith("dict"):
        return dict
    if t.startswith("bool"):
        return bool
    if t.startswith("int"):
        return int
    if t.startswith("float"):
        return float
    return str


def _coerce(f: Any, value: Any) -> Any:
    if value is None:
        return None
    typ = _field_type(f)
    if typ is dict:
        if not isinstance(value, str):
            return value  # a non-mapping is named by the checks
        try:
            return parse_mapping(value)
        except argparse.ArgumentTypeError:
            return value  # named by the checks
    if typ is bool:
        if isinstance(value, str):
            try:
                return _parse_bool(value)
            except argparse.ArgumentTypeError:
                return value  # named by the checks
        return value
    if isinstance(value, bool):
        return value  # a boolean where a number is expected: named by the checks, not turned into 0 or 1
    if typ is float and isinstance(value, (int, float, str)):
        try:
            return float(value)  # YAML reads 1e-5 (no dot) as a string
        except ValueError:
            return value
    if typ is int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config as a dict (keys are validated by :meth:`TrainConfig.from_dict`)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"config file {p} is not valid YAML{where}: {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read config file {p}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {p} must hold a mapping of keys to values")
    return data


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--<key>`` (dashes for underscores) for every :class:`TrainConfig` field, default unset; a
    boolean flag alone means true (``--compile``), or takes a value (``--progress false``)."""
    group = parser.add_argument_group("config keys (override the config file)")
    for f in fields(TrainConfig):
        typ = _field_type(f)
        default = f.default_factory() if f.default_factory is not MISSING else (
            None if f.default is MISSING else f.default)
        flag = "--" + f.name.replace("_", "-")
        parse = {bool: _parse_bool, dict: parse_mapping}.get(typ, typ)
        note = ""
        if typ is dict:
            from ..family_table import options_help

            note = (" a YAML mapping that replaces the config file's, e.g. '{m: 20, shared_q: true}'; by family: "
                    + options_help()).replace("%", "%%")
        extra: dict[str, Any] = {"nargs": "?", "const": True} if typ is bool else {}
        group.add_argument(
            flag,
            dest=f"cfg_{f.name}",
            type=parse,
            default=None,
            metavar="MAPPING" if typ is dict else typ.__name__.upper(),
            help=f"(default {default}){note}",
            **extra,
        )


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {f.name: getattr(args, f"cfg_{f.name}") for f in fields(TrainConfig)
            if getattr(args, f"cfg_{f.name}", None) is not None}
