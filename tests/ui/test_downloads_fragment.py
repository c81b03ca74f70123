"""The downloads table's progress cell, rendered from the template with JobViews (issue 21)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from withcache.sizes import format_size
from withcache.web.admin import JobView, _templates


def job(state: str, done: int, total: int | None, error: str | None = None, streaming=None):
    return SimpleNamespace(
        stream=None if streaming is None else SimpleNamespace(readers=streaming),
        id=7,
        url="https://vendor.example/driver.run",
        state=state,
        error=error,
        bytes_done=done,
        bytes_total=total,
        started_at=100.0,
    )


def render(*jobs) -> str:
    views = [JobView.of(j, now=110.0) for j in jobs]
    template = _templates().get_template("_downloads.html")
    return template.render(jobs=views, has_finished=True, csrf="t", csrf_field="csrf")


def progress_cell(html: str) -> str:
    return " ".join(re.search(r'<td class="progress">(.*?)</td>', html, re.DOTALL)[1].split())


@pytest.mark.parametrize("state", ["failed", "cancelled", "refused"])
def test_an_ended_job_of_unknown_size_shows_no_percent_and_no_busy_bar(state):
    cell = progress_cell(render(job(state, 0, None, error="origin said 500")))
    assert "?" not in cell and "%" not in cell, cell
    assert "<progress" not in cell, cell
    assert re.sub(r"<[^>]+>", "", cell).strip() == format_size(0), cell  # the bytes it got


def test_a_running_job_of_unknown_size_has_a_busy_bar_and_no_question_mark():
    cell = progress_cell(render(job("running", 5000, None)))
    assert "<progress></progress>" in cell and "?" not in cell, cell


def test_a_job_of_known_size_shows_its_percent():
    cell = progress_cell(render(job("running", 500, 1000)))
    assert '<progress value="50" max="100"></progress>' in cell, cell
    assert '<span class="percent">50 %</span>' in cell, cell
    failed = progress_cell(render(job("failed", 250, 1000, error="reset")))
    assert '<span class="percent">25 %</span>' in failed, failed


def test_a_running_fill_shows_how_many_clients_stream_it():
    assert '<span class="streaming">3 clients streaming</span>' in progress_cell(
        render(job("running", 500, 1000, streaming=3))
    )
    assert "1 client streaming" in progress_cell(render(job("running", 500, 1000, streaming=1)))
    assert "streaming" not in progress_cell(render(job("running", 500, 1000, streaming=0)))
    assert "streaming" not in progress_cell(render(job("completed", 1000, 1000)))
