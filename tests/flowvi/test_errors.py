"""Bad input raises a clear error naming the problem."""

import pytest
import torch

import flowvi as fv
from flowvi.transforms import (
    AdditiveCouplingTransform,
    OrthogonalTransform,
    PermutationTransform,
    PlanarTransform,
    RadialTransform,
)


def test_dimension_mismatch_between_parameters():
    with pytest.raises(ValueError, match=r"dimension mismatch between parameters: w\(3,\), u_hat\(4,\)"):
        PlanarTransform(torch.zeros(3), torch.zeros(4), torch.tensor(0.0))


def test_wrong_input_dimension():
    t = PlanarTransform(torch.ones(3), torch.zeros(3), torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"z must have a last \(event\) dimension of size 3, got shape \(5, 2\)"):
        t(torch.zeros(5, 2))
    r = RadialTransform(torch.zeros(3), torch.tensor(1.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match="y must have a last"):
        r.inv(torch.zeros(4))


def test_non_finite_parameters():
    with pytest.raises(ValueError, match="w has 1 non-finite entries"):
        PlanarTransform(torch.tensor([1.0, float("nan")]), torch.zeros(2), torch.tensor(0.0))
    with pytest.raises(ValueError, match="alpha has 1 non-finite"):
        RadialTransform(torch.zeros(2), torch.tensor(float("inf")), torch.tensor(0.0))
    with pytest.raises(ValueError, match="loc has"):
        fv.FlowPosterior(torch.tensor([float("nan"), 0.0]), torch.ones(2), [])


def test_non_invertible_parameters_refuse_to_invert():
    # refused when built (issue 14: also the forward), and, with validation off, still by the inverse
    with pytest.raises(ValueError, match="not invertible"):
        PlanarTransform(torch.tensor([1.0, 0.0]), torch.tensor([-2.0, 0.0]), torch.tensor(0.0))
    with pytest.raises(ValueError, match="not invertible"):
        RadialTransform(torch.zeros(2), torch.tensor(1.0), torch.tensor(-3.0))
    import flowvi

    flowvi.set_validation(False)
    try:
        t = PlanarTransform(torch.tensor([1.0, 0.0]), torch.tensor([-2.0, 0.0]), torch.tensor(0.0))
        r = RadialTransform(torch.zeros(2), torch.tensor(1.0), torch.tensor(-3.0))
    finally:
        flowvi.set_validation(True)
    with pytest.raises(ValueError, match="not invertible"):
        t.inv(torch.zeros(2))
    with pytest.raises(ValueError, match="not invertible"):
        r.inv(torch.ones(2))


def test_wrong_types_and_shapes():
    with pytest.raises(TypeError, match="w must be a torch.Tensor"):
        PlanarTransform([1.0], torch.zeros(1), torch.tensor(0.0))
    with pytest.raises(TypeError, match="floating-point"):
        PlanarTransform(torch.ones(2, dtype=torch.long), torch.zeros(2), torch.tensor(0.0))
    with pytest.raises(ValueError, match="permutation"):
        PermutationTransform(torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="orthogonal"):
        OrthogonalTransform(torch.ones(2, 2))
    with pytest.raises(ValueError, match="two non-empty parts"):
        AdditiveCouplingTransform(torch.ones(3, dtype=torch.bool), lambda z: z)
    t = AdditiveCouplingTransform(torch.tensor([True, False, False]), lambda z: z)
    with pytest.raises(ValueError, match="coupling function returned last dimension 1, expected 2"):
        t(torch.zeros(3))


def test_flow_construction_errors():
    with pytest.raises(ValueError, match="step 1 .* has dim 3, the flow has dim 2"):
        fv.NormalizingFlow(2, [fv.Planar(2), fv.Planar(3)])
    with pytest.raises(TypeError, match="step 0 must be a FlowStep"):
        fv.NormalizingFlow(2, [torch.nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="unknown flow family 'spline'"):
        fv.make_steps("spline", 2, 3)
    amortized = fv.NormalizingFlow(2, fv.planar_steps(2, 1), context_features=4)
    with pytest.raises(ValueError, match="needs a context"):
        amortized()
    with pytest.raises(ValueError, match="context must have last dimension 4, got shape"):
        amortized(torch.zeros(3, 5))
    q = fv.NormalizingFlow(2, fv.planar_steps(2, 1))()
    with pytest.raises(ValueError, match="value must have a last"):
        q.log_prob(torch.zeros(3))
