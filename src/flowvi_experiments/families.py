"""The posterior families of the experiments, in one table: adding a family touches this file only.

A :class:`Family` says everything the experiments need about one family: its name (the ``family``
config key of ``flowvi train``, ``--flow`` of ``flowvi energy``), how to build its amortized posterior
for the DLGM (section 6.2) and its global one for the 2-D energies (section 6.1, Figure 3), which K it
takes, and what the report shows (label, the paper's Table 2 row, order, colours). The DLGM, the
energy experiments, the CLI's choices and the report read :data:`FAMILIES`; nothing else lists
family names.

Every posterior module follows one contract: ``module(Context(h, log_joint))`` (for the 2-D
energies ``module()``) returns an object with ``rsample_and_log_prob(sample_shape)``; families that
need ``ln p(x, z)``, like HVI, take it from the :class:`flowvi.Context`.

>>> register_family(Family("planar", "DLGM+NF (planar)", paper_row="planar", dlgm=..., energy=...))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .experiments.energy import flow_on_energy
from .experiments.infinitesimal import build_hvi as energy_hvi
from .models.posterior import diagonal_posterior, flow_posterior, full_rank_posterior, hvi_posterior

#: (dim, K, context_features, options) -> the amortized posterior module of the DLGM
DLGMBuilder = Callable[..., nn.Module]
#: (K, target) -> a module whose ``forward()`` is the posterior q_K on a 2-D energy
EnergyBuilder = Callable[..., nn.Module]


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

    def check_K(self, K: int) -> None:
        if K < 0:
            raise ValueError(f"the flow length K must be >= 0, got {K}")
        if K < self.min_K or (self.max_K is not None and K > self.max_K):
            if self.max_K == 0:
                raise ValueError(f"the {self.name} posterior has no flow steps, got K={K}")
            raise ValueError(f"the {self.name} posterior needs K >= {self.min_K} {self.k_unit or 'flow step'}s, "
                             f"got K={K}")

    def run_label(self, K: int, global_couplings: bool = False) -> str:
        """The report's label of a run of this family with ``K`` steps."""
        if self.k_unit is not None:
            return f"{self.label}, {K} {self.k_unit}{'s' if K != 1 else ''}"
        label = self.label + (" (global couplings)" if global_couplings else "")
        return label if self.max_K == 0 else f"{label} K = {K}"


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


def series_order(series: str) -> tuple[int, int, int]:
    """Sort key of a report series (``<family>`` or ``<family>-global``): flow-length families in table
    order, then their global-coupling series, then families whose K counts something else (HVI)."""
    name, is_global = (series[: -len("-global")], 1) if series.endswith("-global") else (series, 0)
    names = list(FAMILIES)
    if name not in names:
        return (2, is_global, 0)
    return (int(FAMILIES[name].k_unit is not None), is_global, names.index(name))


def series_color(series: str) -> str | None:
    if series.endswith("-global") and series[: -len("-global")] in FAMILIES:
        return FAMILIES[series[: -len("-global")]].global_color
    return FAMILIES[series].color if series in FAMILIES else None


def _nf(name: str, label: str, paper_row: str | None, color: str, global_color: str | None = None,
        couplings: bool = False) -> Family:
    """A normalizing-flow family of :func:`flowvi.make_steps`. NICE (``couplings``) has a learned
    diagonal base on the 2-D energies: volume preserving (eq. 18), it cannot concentrate N(0, I)."""
    return Family(name, label, paper_row, dlgm=flow_posterior(name, couplings),
                  energy=flow_on_energy(name, learned_base=couplings), color=color, global_color=global_color,
                  couplings=couplings)


register_family(Family("diagonal", "DLGM diagonal", "diagonal", dlgm=diagonal_posterior, min_K=0, max_K=0))
register_family(_nf("planar", "DLGM+NF (planar)", "planar", "C0"))
register_family(_nf("radial", "DLGM+NF (radial)", None, "C3"))
register_family(_nf("nice-perm", "DLGM+NICE-perm", "nice", "C1", "C4", couplings=True))
register_family(_nf("nice-orth", "DLGM+NICE-orth", "nice", "C2", "C5", couplings=True))
register_family(Family("hvi", "DLGM+HVI", "hvi", dlgm=hvi_posterior, energy=energy_hvi, k_unit="leapfrog step",
                       stochastic_layers=(1,)))
# more flow families (van den Berg et al. 2018; Kingma et al. 2016): no row in the paper's Table 2
register_family(_nf("sylvester-orth", "DLGM+sylvester-orth", None, "C6"))
register_family(_nf("sylvester-householder", "DLGM+sylvester-householder", None, "C7"))
register_family(_nf("sylvester-triangular", "DLGM+sylvester-triangular", None, "C8"))
register_family(_nf("iaf", "DLGM+iaf", None, "C9"))
register_family(Family("full-rank", "DLGM+full-rank", None, dlgm=full_rank_posterior,
                       energy=flow_on_energy("full-rank"), min_K=0, max_K=0))
