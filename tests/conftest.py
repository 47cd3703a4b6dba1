import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def world_model():
    from obliviate.pipeline import load_model

    return load_model("world")


@pytest.fixture(scope="session")
def detector():
    from obliviate.eval.detectors import WorldDetector

    return WorldDetector()
