"""resolve_device: one meaning of 'auto' everywhere, and a one-line error for a device that is not there."""
from __future__ import annotations

import pytest
import torch

from molre_lib.common.device import resolve_device


def test_auto_and_cpu():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto", local_rank=3).type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "", "tpu"])
def test_unreadable_setting_names_the_choices(bad):
    with pytest.raises(ValueError, match="'auto'.*'cpu', 'cuda', 'cuda:N'"):
        resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_missing_is_a_clear_error():
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="CUDA is not available on this machine.*use 'cpu' or 'auto'"):
            resolve_device(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_rank_and_missing_index():
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    assert resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
