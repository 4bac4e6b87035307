"""dynvae.utils.broadcast_shapes: torch's rules without importing sympy."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dynvae.utils import broadcast_shapes


@pytest.mark.parametrize("shapes", [((),), ((3,), ()), ((2, 1), (1, 4)), ((5, 1, 3), (4, 1)),
                                    (torch.Size([2, 3]), (3,), (1, 1, 1))])
def test_same_result_as_torch(shapes):
    assert broadcast_shapes(*shapes) == torch.broadcast_shapes(*shapes)
    assert isinstance(broadcast_shapes(*shapes), torch.Size)


def test_incompatible_shapes_raise_torchs_error():
    with pytest.raises(RuntimeError):
        broadcast_shapes((2, 3), (4,))


def test_a_kalman_filter_does_not_import_sympy():
    src = Path(__file__).resolve().parents[1] / "src"
    code = ("import sys, torch\n"
            "from dynvae.models.lgssm import LGSSM, Config\n"
            "from dynvae.data import SequenceBatch\n"
            "x = torch.randn(2, 20, 1, dtype=torch.float64)\n"
            "model = LGSSM(Config(), data_dim=1)\n"
            "model.log_likelihood(SequenceBatch.from_tensor(x))\n"
            "model.reconstruct(SequenceBatch.from_tensor(x))\n"
            "print('SYMPY', 'sympy' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(src)), timeout=300)
    assert "SYMPY False" in proc.stdout, proc.stderr[-2000:]
