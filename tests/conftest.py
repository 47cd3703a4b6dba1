import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# 1 torch thread per test process: the world's small batches run no faster on 2 threads than on 1 (a 60-step Lethe
# erasure: 12.7 s on 2, 11.2 s on 1, this machine), so the suite runs as 2 processes of 1 thread (make test: -n 2).
# OMP_NUM_THREADS carries the count into the subprocesses the CLI and README tests start (left at torch's default
# there, they collapsed on a busy machine: 80 s -> 324 s)
THREADS = os.environ.get("OBLIVIATE_TEST_THREADS", "1")
os.environ["OMP_NUM_THREADS"] = THREADS

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(THREADS))


@pytest.fixture(scope="session")
def pipe():
    """The shipped world as a plain diffusers pipeline (float32, cpu), shared by the session's tests: every test
    that applies a patch removes it again (``Patch.applied`` / the API do so even when a test fails)."""
    from obliviate import load_pipeline

    return load_pipeline("world")


@pytest.fixture(scope="session")
def detector():
    from obliviate.eval.detectors import WorldDetector

    return WorldDetector()


@pytest.fixture(autouse=True)
def _one_thread_count():
    """Whatever a test runs (the world's build recipe sets its own count), the next one gets the suite's: a
    process on two threads beside another one slows both down threefold on two cores."""
    yield
    if torch.get_num_threads() != int(THREADS):
        torch.set_num_threads(int(THREADS))


@pytest.fixture(autouse=True)
def _eval_cache(tmp_path_factory, monkeypatch):
    """Base-model results are cached per session, never in the user's cache."""
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path_factory.getbasetemp() / "eval-cache"))


@pytest.fixture(autouse=True)
def _weights_unchanged(request):
    """Every test leaves the shared world pipeline exactly as it found it."""
    if "pipe" not in request.fixturenames:
        yield
        return
    pipe = request.getfixturevalue("pipe")
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    yield
    stack = getattr(pipe, "_obliviate_applied", [])
    while stack:
        stack[-1].remove()
    after = pipe.unet.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if changed:
        pipe.unet.load_state_dict(before)
        pytest.fail(f"the test left {len(changed)} UNet tensors changed (first: {changed[0]})")
