"""Pages of weights mapped from a file leave memory when let go, and come back when read."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model_runtime.local.pages import PAGE, drop_file_pages, file_mappings

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")


def resident_kb(address: int) -> int:
    """Resident kB of the mapping holding `address`, from /proc/self/smaps."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            low, high = (int(x, 16) for x in head.split("-"))
            inside = low <= address < high
        elif inside and head == "Rss:":
            return int(line.split()[1])
    raise AssertionError("no mapping holds the address")


@pytest.fixture
def mapped(tmp_path: Path) -> tuple[torch.Tensor, np.ndarray]:
    """A tensor that is a private mapping of a file (as transformers maps safetensors)."""
    values = np.arange(64 * PAGE // 4, dtype=np.float32)
    path = tmp_path / "weights.bin"
    values.tofile(path)
    return torch.from_numpy(np.memmap(path, dtype=np.float32, mode="c")), values


def test_mapped_pages_leave_memory_and_read_back_the_same(mapped) -> None:
    tensor, values = mapped
    assert float(tensor.sum()) == float(values.sum())  # every page read once
    assert resident_kb(tensor.data_ptr()) >= 60 * PAGE // 1024
    assert drop_file_pages([tensor]) == tensor.nbytes
    assert resident_kb(tensor.data_ptr()) < 4 * PAGE // 1024
    assert np.array_equal(tensor.numpy(), values)


def test_only_whole_pages_inside_the_buffer_go(mapped) -> None:
    tensor, _ = mapped
    tensor.sum()
    middle = tensor[PAGE // 8 : 5 * PAGE // 4]  # from half a page in to just past page 5
    assert drop_file_pages([middle]) == 4 * PAGE


def test_memory_that_is_not_a_file_mapping_is_left_alone() -> None:
    tensor = torch.arange(64 * PAGE // 4, dtype=torch.float32)
    before = tensor.clone()
    assert all(not low <= tensor.data_ptr() < high for low, high in file_mappings())
    assert drop_file_pages([tensor]) == 0
    assert torch.equal(tensor, before)


def test_a_missing_maps_file_means_no_mappings(tmp_path: Path) -> None:
    assert file_mappings(str(tmp_path / "none")) == []
