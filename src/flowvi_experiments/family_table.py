"""The family table: the posterior families the experiments, the CLI and the report read, one record
each; adding a family touches this file only. (The flow steps of the later families themselves are the
library's, :mod:`flowvi.families`.)

A :class:`Family` says everything the experiments need about one family: its name (the ``family``
config key of ``flowvi train``, ``--flow`` of ``flowvi energy``), how to build its amortized posterior
for the DLGM (section 6.2) and its global one for the 2-D energies (section 6.1, Figure 3), which K it
takes, and what the report shows (label, the paper's Table 2 row, order, colours). The DLGM, the
energy experiments, the CLI's choices and the report read :data:`FAMILIES`; nothing else lists
family names.

A family may take **options** (:class:`FamilyOption`: Sylvester's ``m`` and ``shared_q``, the IAF's
MADE sizes), keywords of :func:`flowvi.make_steps` given as the ``family_options`` mapping of a training
config: :meth:`Family.check_options` validates them when the config is read, the DLGM passes them to the
builder, and :meth:`Family.run_label` shows them in the report.

Every posterior module follows one contract: ``module(Context(h, log_joint))`` (for the 2-D
energies ``module()``) returns an object with ``rsample_and_log_prob(sample_shape)``; families that
need ``ln p(x, z)``, like HVI, take it from the :class:`flowvi.Context`.

>>> register_family(Family("planar", "DLGM+NF (planar)", paper_row="planar", dlgm=..., energy=...))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from flowvi.steps import STEP_OPTIONS

from .experiments.energy import flow_on_energy
from .experiments.infinitesimal import build_hvi as energy_hvi
from .models.posterior import diagonal_posterior, flow_posterior, full_rank_posterior, hvi_posterior

#: (dim, K, context_features, options) -> the amortized posterior module of the DLGM
DLGMBuilder = Callable[..., nn.Module]
#: (K, target, **options) -> a module whose ``forward()`` is the posterior q_K on a 2-D energy (options: the
#: ``family_options`` of ``flowvi energy``, keywords of :func:`flowvi.make_steps`; none for HVI)
EnergyBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class FamilyOption:
    """One option of a family's steps: a keyword of :func:`flowvi.make_steps` of the same name, whose values
    the library judges (:data:`flowvi.steps.STEP_OPTIONS`: its kind and range, the same checks wherever an
    option is given).

    Args:
        name: the keyword (``m``, ``shared_q``, ``hidden`` …).
        help: what it sets (``flowvi train --help`` lists it, :func:`options_help`).
        label: how the report shows it, ``{}`` the value (``"M = {}"``); a boolean option shows its
            label when true and nothing when false.
    """

    name: str
    help: str
    label: str = ""

    def describe(self, value: Any) -> str | None:
        """The report's text for ``value`` (``None``: nothing to show, as for the value ``None``, the default)."""
        if value is None:
            return None
        if isinstance(value, bool):
            return self.label if value else None
        return self.label.format(f"{value:g}" if isinstance(value, float) else value)


@dataclass(frozen=True)
class Family:
    """One posterior family.

    Args:
        name: the config / CLI name (``planar``, ``nice-perm`` …).
        label: the report's name of the DLGM row (``DLGM+NF (planar)``).
        paper_row: the key of the paper's Table 2 row it compares with (``nice`` for both NICE mixings);
            ``None`` for none.
        dlgm: builder of the DLGM's amortized posterior, or ``None`` if the family has none.
        energy: builder of the 2-D posterior (``flowvi energy --flow``), or ``None``.
        min_K, max_K: the flow lengths it takes (``max_K`` ``None``: no limit).
        k_unit: what K counts in labels: ``None`` for flow steps (``K = 10``), else e.g. ``leapfrog step``
            (then its runs are not on Figure 4's flow-length axis).
        couplings: NICE coupling networks, whose ``nice_conditioning`` (amortized or global) makes a
            separate report series ``<name>-global``.
        stochastic_layers: the DLGM depths it supports.
        color, global_color: matplotlib colours of its Figure 4 line (and of its global-coupling series).
        options: the options its steps take (the ``family_options`` of a training config).
    """

    name: str
    label: str
    paper_row: str | None = None
    dlgm: DLGMBuilder | None = None
    energy: EnergyBuilder | None = None
    min_K: int = 1
    max_K: int | None = None
    k_unit: str | None = None
    couplings: bool = False
    stochastic_layers: tuple[int, ...] = (1, 2)
    color: str | None = None
    global_color: str | None = None
    options: tuple[FamilyOption, ...] = ()

    def __post_init__(self) -> None:
        takes = STEP_OPTIONS.get(self.name, {})
        missing = [o.name for o in self.options if o.name not in takes]
        if missing:
            raise ValueError(f"the {self.name} family declares options {', '.join(missing)} that "
                             f"make_steps({self.name!r}) does not take (flowvi.steps.STEP_OPTIONS)")

    def check_options(self, options: Any, latent: int | None) -> dict[str, Any]:
        """``options`` (a config's ``family_options``) validated for D = ``latent``: a dict of the given
        options in their kinds (absent ones keep :func:`flowvi.make_steps`'s defaults). Raises
        ``ValueError`` naming every problem, an unknown option with the ones this family takes."""
        if not isinstance(options, Mapping):
            raise ValueError("family_options must be a mapping of option names to values (such as "
                             f"{{m: 20, shared_q: true}}), got {options!r}")
        known = {o.name: o for o in self.options}
        unknown = [str(k) for k in options if k not in known]
        problems = []
        if unknown and known:
            problems.append(f"the {self.name} family has no option {', '.join(map(repr, unknown))}: "
                            f"it takes {', '.join(known)}")
        elif unknown:
            problems.append(f"the {self.name} family takes no options, got {', '.join(map(repr, unknown))} "
                            "(give family_options: {})")
        checked = {}
        specs = STEP_OPTIONS.get(self.name, {})
        for name, value in options.items():
            if name in known:
                checked[name], problem = specs[name].check(name, value, latent)
                if problem:
                    problems.append(problem)
        if problems:
            raise ValueError("; ".join(f"family_options: {p}" for p in problems))
        return checked

    def describe_options(self, options: Mapping[str, Any] | None) -> str:
        """The options as the report shows them (``M = 20, shared Q``), in the family's order."""
        options = options or {}
        shown = (o.describe(options[o.name]) for o in self.options if o.name in options)
        return ", ".join(t for t in shown if t)

    def check_K(self, K: int) -> None:
        if K < 0:
            raise ValueError(f"the flow length K must be >= 0, got {K}")
        if K < self.min_K or (self.max_K is not None and K > self.max_K):
            if self.max_K == 0:
                raise ValueError(f"the {self.name} posterior has no flow steps, got K={K}")
            raise ValueError(f"the {self.name} posterior needs K >= {self.min_K} {self.k_unit or 'flow step'}s, "
                             f"got K={K}")

    def run_label(self, K: int, global_couplings: bool = False, options: Mapping[str, Any] | None = None) -> str:
        """The report's label of a run of this family with ``K`` steps (and its family options)."""
        if self.k_unit is not None:
            return f"{self.label}, {K} {self.k_unit}{'s' if K != 1 else ''}"
        label = self.label + (" (global couplings)" if global_couplings else "")
        label = label if self.max_K == 0 else f"{label} K = {K}"
        described = self.describe_options(options)
        return f"{label}, {described}" if described else label

    def series(self, global_couplings: bool = False, options: Mapping[str, Any] | None = None) -> str:
        """The report series of a run (a line of Figure 4: runs that differ only in K): the name, then
        ``-global`` for NICE couplings shared by every x, then the options (``sylvester-orth (M = 20)``)."""
        described = self.describe_options(options)
        return self.name + ("-global" if global_couplings else "") + (f" ({described})" if described else "")

    def dlgm_options(self, cfg: Any) -> dict[str, Any]:
        """The keywords of its DLGM builder from a :class:`~flowvi_experiments.models.DLGMConfig`: the NICE
        coupling keys for coupling families, else the config's ``family_options``."""
        if self.couplings:
            return {"hidden": cfg.nice_hidden, "depth": cfg.nice_depth, "conditioning": cfg.nice_conditioning}
        return dict(cfg.family_options)


#: every family, in the report's order
FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add ``family`` to :data:`FAMILIES` (refuses to overwrite a name)."""
    if family.name in FAMILIES:
        raise ValueError(f"posterior family {family.name!r} is already registered")
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    key = str(name).lower()
    if key not in FAMILIES:
        raise ValueError(f"unknown posterior family {name!r}: expected one of {', '.join(FAMILIES)}")
    return FAMILIES[key]


def dlgm_families() -> list[str]:
    return [f.name for f in FAMILIES.values() if f.dlgm is not None]


def energy_families() -> list[str]:
    return [f.name for f in FAMILIES.values() if f.energy is not None]


def _series_family(series: str) -> tuple[str, bool, str]:
    """``(family name, global couplings, options text)`` of a series written by :meth:`Family.series`."""
    head, _, options = series.partition(" (")
    if head.endswith("-global") and head[: -len("-global")] in FAMILIES:
        return head[: -len("-global")], True, options.rstrip(")")
    return head, False, options.rstrip(")")


def options_help() -> str:
    """Every family's options with what they set, for the help of ``--family-options``."""
    return "; ".join(f"{f.name}: " + ", ".join(f"{o.name} ({o.help})" for o in f.options)
                     for f in FAMILIES.values() if f.options)


def series_order(series: str) -> tuple[int, int, int, str]:
    """Sort key of a report series (:meth:`Family.series`): flow-length families in table order, then
    their global-coupling series, then families whose K counts something else (HVI); the options of one
    family in text order."""
    name, is_global, options = _series_family(series)
    names = list(FAMILIES)
    if name not in names:
        return (2, int(is_global), 0, options)
    return (int(FAMILIES[name].k_unit is not None), int(is_global), names.index(name), options)


def series_color(series: str) -> str | None:
    name, is_global, _ = _series_family(series)
    if name not in FAMILIES:
        return None
    return FAMILIES[name].global_color if is_global else FAMILIES[name].color


def _nf(name: str, label: str, paper_row: str | None, color: str, global_color: str | None = None,
        couplings: bool = False, options: tuple[FamilyOption, ...] = ()) -> Family:
    """A normalizing-flow family of :func:`flowvi.make_steps`. NICE (``couplings``) has a learned
    diagonal base on the 2-D energies: volume preserving (eq. 18), it cannot concentrate N(0, I)."""
    return Family(name, label, paper_row, dlgm=flow_posterior(name),
                  energy=flow_on_energy(name, learned_base=couplings), color=color, global_color=global_color,
                  couplings=couplings, options=options)


_SHARED_Q = FamilyOption("shared_q", "one global Q per step, R, R̃ and b per data point", label="shared Q")
#: Sylvester flows (van den Berg et al. 2018), the options of :class:`flowvi.SylvesterOrthogonal` …
SYLVESTER_ORTH_OPTIONS = (
    FamilyOption("m", "orthonormal columns of Q, the rank M of a step, 1 to D; default D", label="M = {}"),
    _SHARED_Q,
)
SYLVESTER_HOUSEHOLDER_OPTIONS = (
    FamilyOption("reflections", "Householder reflections per Q; default 4", label="{} reflections"),
    _SHARED_Q,
)
#: … and of :class:`flowvi.IAF` (Kingma et al. 2016)
IAF_OPTIONS = (
    FamilyOption("hidden", "MADE width and per-point context size; default max(64, 2D)", label="MADE width {}"),
    FamilyOption("depth", "MADE hidden layers; default 2", label="depth {}"),
    FamilyOption("gate_bias", "initial s of the gate σ = sigmoid(s); default 2", label="gate bias {}"),
)


register_family(Family("diagonal", "DLGM diagonal", "diagonal", dlgm=diagonal_posterior, min_K=0, max_K=0))
register_family(_nf("planar", "DLGM+NF (planar)", "planar", "C0"))
register_family(_nf("radial", "DLGM+NF (radial)", None, "C3"))
register_family(_nf("nice-perm", "DLGM+NICE-perm", "nice", "C1", "C4", couplings=True))
register_family(_nf("nice-orth", "DLGM+NICE-orth", "nice", "C2", "C5", couplings=True))
register_family(Family("hvi", "DLGM+HVI", "hvi", dlgm=hvi_posterior, energy=energy_hvi, k_unit="leapfrog step",
                       stochastic_layers=(1,)))
# later flow families (van den Berg et al. 2018; Kingma et al. 2016): rows beside planar and NICE, none in the
# paper's Table 2
register_family(_nf("sylvester-orth", "DLGM+Sylvester (orthogonal)", None, "C6", options=SYLVESTER_ORTH_OPTIONS))
register_family(_nf("sylvester-householder", "DLGM+Sylvester (Householder)", None, "C7",
                    options=SYLVESTER_HOUSEHOLDER_OPTIONS))
register_family(_nf("sylvester-triangular", "DLGM+Sylvester (triangular)", None, "C8"))
register_family(_nf("iaf", "DLGM+IAF", None, "C9", options=IAF_OPTIONS))
register_family(Family("full-rank", "DLGM+full-rank", None, dlgm=full_rank_posterior,
                       energy=flow_on_energy("full-rank"), min_K=0, max_K=0))
