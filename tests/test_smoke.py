import pytest

from jobs.models import JobStatus
from tests.conftest import assert_contiguous, log_texts, run_now


@pytest.mark.django_db(transaction=True)
def test_count_runs_and_stores_every_line() -> None:
    job = run_now("demo.count", n=3, interval=0)
    assert job.status == JobStatus.SUCCEEDED
    assert log_texts(job) == ["Task #0", "Task #1", "Task #2", "Done"]
    assert_contiguous(job)
