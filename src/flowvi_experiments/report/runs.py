"""Reading finished runs for the report: config, training summary and evaluation metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from ..family_table import FAMILIES, Family, series_order
from ..training.config import TrainConfig

#: TrainConfig's defaults: the value of a key that an older run's config.yaml does not have
DEFAULTS: dict[str, Any] = TrainConfig().to_dict()
#: keys that choose how a run is executed, logged or checkpointed, not what it computes (the optimizer kernel
#: changes an update only up to rounding): runs that differ only in these are the same experiment
EXECUTION_KEYS = frozenset({"name", "data_dir", "verify_data", "optimizer_impl", "device", "threads", "val_every",
                            "ckpt_every", "log_every", "early_stopping", "progress", "tensorboard", "compile",
                            "cuda_graph"})

#: Table 2 of the paper (section 6.2): test −ln p(x) in nats, by (family, K); "≤" in the paper.
PAPER_TABLE2: dict[tuple[str, int], float] = {
    ("diagonal", 0): 89.9,
    ("planar", 10): 87.5,
    ("planar", 20): 86.5,
    ("planar", 40): 85.7,
    ("planar", 80): 85.1,
    ("nice", 10): 88.6,
    ("nice", 20): 87.9,
    ("nice", 40): 87.3,
    ("nice", 80): 87.2,
    # HVI (Salimans et al. 2015) as the paper's Table 2 quotes it; K = the number of leapfrog steps.
    ("hvi", 1): 88.08,
    ("hvi", 4): 86.40,
    ("hvi", 8): 85.51,
}


def paper_value(family: str, K: int) -> float | None:
    """The paper's number for a family (its :attr:`~flowvi_experiments.family_table.Family.paper_row`: NICE-perm
    and NICE-orth both compare with the paper's NICE)."""
    fam = FAMILIES.get(family)
    if fam is None or fam.paper_row is None:
        return None
    return PAPER_TABLE2.get((fam.paper_row, K if fam.max_K != 0 else 0))


@dataclass
class RunRecord:
    path: Path
    name: str
    config: dict[str, Any]
    summary: dict[str, Any] | None
    metrics: dict[str, Any] | None

    extra_metrics: dict[int, dict[str, Any]] = field(default_factory=dict)  #: S -> metrics-s{S}.json
    #: metrics-last.json: the end of training evaluated (``flowvi evaluate RUN --checkpoint last --output ...``)
    last_metrics: dict[str, Any] | None = None

    def per_image_nll(self):  # -> Tensor | None
        """Per-test-image ``−ln p(x)`` written by ``flowvi evaluate`` (``metrics.per_image.csv``; runs
        evaluated before it was text have ``metrics.per_image.pt``, read with ``weights_only``), if any."""
        from ..evaluation import read_per_image

        csv = self.path / "metrics.per_image.csv"
        if csv.is_file():
            return -read_per_image(csv)["log_marginal"]
        path = self.path / "metrics.per_image.pt"
        if not path.is_file():
            return None
        from ..training.checkpoint import load_checkpoint

        return -load_checkpoint(path)["log_marginal"].double()

    @cached_property
    def _settings(self) -> dict[str, Any]:
        """The run's config resolved as TrainConfig resolves it (the likelihood its data calls for, defaults for
        keys its config.yaml predates); as written over the defaults where TrainConfig rejects it (a key from a
        later version, or a value it does not accept)."""
        try:
            return TrainConfig.from_dict(self.config).to_dict()
        except (TypeError, ValueError):
            return {**DEFAULTS, **self.config}

    def setting(self, key: str) -> Any:
        """The run's value of ``key`` (:attr:`_settings`)."""
        return self._settings.get(key)

    @cached_property
    def experiment(self) -> dict[str, Any]:
        """Every setting that changes what the run computes (all of TrainConfig's but :data:`EXECUTION_KEYS`)."""
        return {k: self.setting(k) for k in DEFAULTS if k not in EXECUTION_KEYS}

    @property
    def family(self) -> str:
        return str(self.config.get("family", "diagonal"))

    @property
    def K(self) -> int:
        return int(self.config.get("K", 0))

    @property
    def family_options(self) -> dict[str, Any]:
        """The run's ``family_options`` (``{}`` for runs written before the key existed)."""
        options = self.config.get("family_options") or {}
        return dict(options) if isinstance(options, dict) else {}

    @property
    def _global_couplings(self) -> bool:
        fam = FAMILIES.get(self.family)
        return fam is not None and fam.couplings and self.config.get("nice_conditioning", "amortized") == "global"

    @property
    def _family_record(self) -> Family:
        return FAMILIES.get(self.family) or Family(self.family, f"DLGM+{self.family}")

    @property
    def series(self) -> str:
        """The family, with ``-global`` for NICE whose coupling networks are not conditioned on x and its
        family options (:meth:`~flowvi_experiments.family_table.Family.series`): runs of one series differ only
        in K (a line of Figure 4)."""
        return self._family_record.series(self._global_couplings, self.family_options)

    @property
    def recipe(self) -> str:
        """Optimizer, learning rate, its schedule (unless constant), gradient clipping (if on) and the annealing
        of the free energy's β_t (over how many updates, or none)."""
        c = self.config
        schedule = c.get("lr_schedule", "constant")
        anneal = int(self.setting("anneal_steps") or 0)
        return (f"{c.get('optimizer')} lr {c.get('lr'):g}" + (f" {schedule}" if schedule != "constant" else "")
                + (f", grad clip {c['grad_clip']:g}" if c.get("grad_clip") else "")
                + (f", anneal {anneal} upd" if anneal else ", no annealing"))

    @property
    def architecture(self) -> str:
        """How the DLGM differs from the paper's one deterministic Maxout layer and one stochastic layer per
        network ("" when it does not): ``2 Maxout layers``."""
        parts = []
        for key, what in (("hidden_layers", "Maxout layer"), ("stochastic_layers", "stochastic layer")):
            n = int(self.setting(key))
            if n != 1:
                parts.append(f"{n} {what}s")
        return ", ".join(parts)

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def hours(self) -> float | None:
        """The run's wall time in hours (``summary.json``), None where it has none."""
        wall = (self.summary or {}).get("wall_s")
        return None if wall is None else wall / 3600

    @property
    def progress(self) -> str:
        """How far the run trained and how it ended (``summary.json``): ``235000 upd (early_stopped)``."""
        s = self.summary or {}
        return f"{s.get('updates', '–')} upd ({s.get('status', '–')})"

    @property
    def recipe_budget(self) -> str:
        """The training budget and recipe, whatever the seed: the runs of one Table 2. A refit on train + valid
        (``flowvi train --refit-from``) is a recipe of its own: its data are 60,000 images."""
        c = self.config
        data = "cifar10" if c.get("data") == "cifar10" else c.get("binarization", "static")
        if self.setting("train_on") == "train+valid":
            data += ", refit on train+valid"
        architecture = f", {self.architecture}" if self.architecture else ""
        return f"{c.get('updates')} updates, {self.recipe}, {data}{architecture}"

    @property
    def budget(self) -> str:
        """Budget, recipe and seed: runs with the same budget are compared with each other (paired)."""
        return f"{self.recipe_budget}, seed {self.seed}"

    @property
    def label(self) -> str:
        label = self._family_record.run_label(self.K, self._global_couplings, self.family_options)
        return f"{label} ({self.architecture})" if self.architecture else label


class RunFileError(ValueError):
    """A file of a run directory (config.yaml, summary.json, metrics.json) that cannot be read."""


def _read(path: Path, loader: Any) -> Any:
    if not path.is_file():
        return None
    try:
        value = loader(path.read_text())
    except (ValueError, yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunFileError(f"{path} is damaged ({first}); restore it, or re-create it with the command that "
                           "wrote it (flowvi train --resume writes summary.json, flowvi evaluate metrics.json)"
                           ) from None
    if path.suffix == ".json" and not isinstance(value, dict):
        raise RunFileError(f"{path} is damaged (it holds a {type(value).__name__}, not a JSON object)")
    return value


def load_run(path: str | Path) -> RunRecord:
    p = Path(path)
    config = _read(p / "config.yaml", yaml.safe_load)
    if not isinstance(config, dict):
        raise FileNotFoundError(f"{p} is not a training run (config.yaml missing or invalid)")
    extra = {}
    for f in sorted(p.glob("metrics-s*.json")):  # more importance samples, e.g. metrics-s5000.json
        m = _read(f, json.loads)
        if isinstance(m, dict) and "samples" in m:
            extra[int(m["samples"])] = m
    last = _read(p / "metrics-last.json", json.loads) if (p / "metrics-last.json").is_file() else None
    return RunRecord(p, p.resolve().name, config, _read(p / "summary.json", json.loads),
                     _read(p / "metrics.json", json.loads), extra, last)


def load_runs(paths: list[str | Path]) -> list[RunRecord]:
    """Run records for every directory in ``paths`` holding a run (others are skipped), sorted by family and K."""
    records = []
    for path in paths:
        p = Path(path)
        if p.is_dir() and (p / "config.yaml").is_file():
            records.append(load_run(p))
    return sorted(records, key=lambda r: (series_order(r.series), r.K, r.name))
