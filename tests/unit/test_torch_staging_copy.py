"""A host batch reaches the torch engine's staging tensor unchanged, whatever its memory layout."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from yoloquant.backends.torch.replay import copy_into  # noqa: E402

BATCH = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)


@pytest.mark.parametrize(
    "pixels",
    [
        BATCH,  # contiguous: torch's copy
        np.ascontiguousarray(BATCH.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2),  # strided: torch's copy
        np.ascontiguousarray(BATCH[:, ::-1])[:, ::-1],  # negative strides (a BGR -> RGB view): numpy's
        np.frombuffer(BATCH.tobytes(), np.uint8).reshape(BATCH.shape),  # read-only: numpy's
    ],
    ids=["contiguous", "strided", "flipped-view", "read-only"],
)
def test_every_layout_is_copied_exactly(pixels: np.ndarray) -> None:
    staging = torch.zeros(BATCH.shape, dtype=torch.uint8)
    copy_into(staging, pixels)
    np.testing.assert_array_equal(staging.numpy(), BATCH)
