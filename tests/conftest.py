"""Shared fixtures. Eight fake CPU devices for the sharding tests (set before JAX starts)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("INTERPLM_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_DATA = REPO / "data" / "demo"


@pytest.fixture(scope="session")
def tiny_esm(tmp_path_factory) -> Path:
    """Directory of a tiny ESM-2 (4 layers, d=32) saved with save_pretrained."""
    from torch_bridge.tiny_esm import build_tiny_esm

    return build_tiny_esm(tmp_path_factory.mktemp("models") / "tiny-esm2")


@pytest.fixture(scope="session")
def tiny_esmc(tmp_path_factory) -> Path:
    """Directory of a tiny ESM C (4 layers, d=32) saved with save_pretrained."""
    from torch_bridge.tiny_esm import build_tiny_esmc

    return build_tiny_esmc(tmp_path_factory.mktemp("models") / "tiny-esmc")


@pytest.fixture(scope="session", params=["esm2", "esmc"])
def tiny_plm(request) -> Path:
    """The tiny model of each family in turn (tests that must hold for ESM-2 and ESM C)."""
    return request.getfixturevalue({"esm2": "tiny_esm", "esmc": "tiny_esmc"}[request.param])


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that use it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The small real data bundled with the repository (data/demo)."""
    return DEMO_DATA


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Headless Chromium (a Playwright context) for the page tests; skipped when absent, a
    failure with INTERPLM_REQUIRE_BROWSER=1 (tests/_browser.py)."""
    from _browser import browser_context

    with browser_context(tmp_path_factory.mktemp("chromium-profile")) as ctx:
        yield ctx


@pytest.fixture(scope="session")
def demo_study(tmp_path_factory):
    """The demo study (test sizes) run by scripts/pipeline.py, killed once mid-training and
    resumed (tests/_study.py)."""
    from _study import build_demo_study

    return build_demo_study(tmp_path_factory.mktemp("demo_study"))
