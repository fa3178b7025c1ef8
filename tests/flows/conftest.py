import pytest

from tests.pipeline.conftest import tiny_bert  # noqa: F401  (a tiny real BERT saved to disk)


@pytest.fixture(scope="session")
def prefect_engine():
    """One real Prefect engine (temporary server + database) for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness
    with prefect_test_harness(server_startup_timeout=120):
        yield
