"""One harness: every CPU kernel against the float64 staged graph, over case x dtype x affine."""

import numpy as np
import pytest
from conftest import assert_matches_staged, case_params


@pytest.mark.parametrize("case", case_params())
def test_kernel_matches_staged_graph(case, dtype, affine):
    assert_matches_staged(case, dtype, affine)


@pytest.mark.parametrize("case", case_params())
def test_inputs_are_never_modified(case, affine):
    """Copies taken before the first call: a forward that writes into x the same way every time shows too. The
    backward leaves the statistics the forward returned alone, too."""
    inputs = case.inputs(np.float32, affine)
    given = [a for a in (inputs.x, *inputs.values(), inputs.dy) if a is not None]
    before = [a.copy() for a in given]
    _, saved = case.run_forward(inputs)
    stats = list(case.norm_entry.flatten(saved))
    kept = [a.copy() for a in stats]
    case.run_backward(inputs.dy, inputs, saved)
    for a, b in zip(given + stats, before + kept, strict=True):
        np.testing.assert_array_equal(a, b)
