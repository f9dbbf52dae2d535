"""GET /jobs/<id>/search: the numbers of the lines that contain a text or match a regex,
after a line, in bounded time, and a 400 with a message for any search it cannot run."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, quote_from_bytes, urlencode

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.models import Job
from jobs.streaming import scan, search
from tests.conftest import client_for, user_with
from tests.test_endpoints import finished_run

pytestmark = pytest.mark.django_db(transaction=True)

PROPERTY = settings()  # the profile's (tests/conftest.py)

#: Lines of every kind a search meets: case, non-ASCII letters (and those that fold to ASCII
#: in Python's re: İ, ı, ſ, the Kelvin sign), regex metacharacters, an empty line.
LINES = [
    "INFO starting the import",
    "ERROR disk full on /dev/sda1",
    "error: retrying in 5 s",
    "Warning: 3 rows skipped (of 120)",
    "",
    "café Über STRASSE straße",
    "İstanbul ıi ſ K kelvin",
    "a.b*c+d?e[f]g(h)i{j}k|l^m$n\\o",
    "timeout after 30 ms",
    "Timeout after 4500 ms",
    "<script>alert(1)</script> \x1b[31mred\x1b[0m",
    "tab\there",
    "x" * 3000 + " needle at the end",
]


@pytest.fixture
def client(staff_user: Any) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def run(transactional_db: Any) -> Job:
    return finished_run(LINES)


def ask(client: Client, job: Job, **params: Any) -> Any:
    return client.get(f"/jobs/{job.id}/search?{urlencode(params)}")


def matches(client: Client, job: Job, **params: Any) -> list[int]:
    response = ask(client, job, **params)
    assert response.status_code == 200, response.content
    return response.json()["matches"]


def numbers_where(predicate: Any) -> list[int]:
    return [number for number, text in enumerate(LINES, start=1) if predicate(text)]


def refusal(response: Any) -> str:
    assert response.status_code == 400
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    return response.content.decode()


# --- The answer ---------------------------------------------------------------------------------


def test_the_answer_is_the_designed_json(client: Client, run: Job) -> None:
    response = ask(client, run, q="error")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"matches": [2, 3], "line_count": len(LINES), "more": False, "searched": len(LINES)}


def test_a_text_is_found_ignoring_case_unless_case_is_1(client: Client, run: Job) -> None:
    assert matches(client, run, q="Error") == [2, 3]
    assert matches(client, run, q="Error", case=1) == []
    assert matches(client, run, q="ERROR", case=1) == [2]
    assert matches(client, run, q="timeout after") == [9, 10]
    # Characters that mean something in LIKE and in patterns are plain text here.
    assert matches(client, run, q="a.b*c+d?e[f]g(h)i{j}k|l^m$n\\o") == [8]
    assert matches(client, run, q="%") == []
    assert matches(client, run, q="_") == []
    assert matches(client, run, q="\t") == [12]
    assert matches(client, run, q="needle") == [13]


def test_an_ascii_text_ignoring_case_folds_ascii_letters_only(client: Client, run: Job) -> None:
    # i, s and k do not find İ, ı, ſ and the Kelvin sign (Python's re would), on both databases.
    assert matches(client, run, q="kelvin k") == []
    assert matches(client, run, q="istanbul") == []
    assert matches(client, run, q="STRASSE") == [6]


def test_a_non_ascii_text_ignoring_case_folds_non_ascii_letters(client: Client, run: Job) -> None:
    assert matches(client, run, q="CAFÉ") == [6]
    assert matches(client, run, q="über") == [6]
    assert matches(client, run, q="über", case=1) == []


def test_a_regex_is_searched_with_pythons_syntax(client: Client, run: Job) -> None:
    assert matches(client, run, q=r"timeout after \d+ ms", regex=1) == [9, 10]
    assert matches(client, run, q=r"timeout after \d{4} ms", regex=1) == [10]
    assert matches(client, run, q=r"timeout after \d+ ms", regex=1, case=1) == [9]
    assert matches(client, run, q=r"^(INFO|ERROR) ", regex=1) == [1, 2]
    assert matches(client, run, q=r"\bs\b", regex=1, case=1) == [3]  # a word boundary, on both databases
    assert matches(client, run, q=r"\d+\)$", regex=1) == [4]
    assert matches(client, run, q=r"^$", regex=1) == [5]
    assert matches(client, run, q=r"(?i)TIMEOUT", regex=1, case=1) == [9, 10]
    assert matches(client, run, q=r"[\]x]{255} needle", regex=1) == [13]  # PostgreSQL counts to 255 at most


@pytest.mark.parametrize("first_lines", [scan.FIRST_LINES, 4])
def test_after_limit_and_more_page_through_the_matches(
    client: Client, monkeypatch: pytest.MonkeyPatch, first_lines: int
) -> None:
    # The lines are searched range by range: the matches are the same wherever a range ends.
    monkeypatch.setattr(scan, "FIRST_LINES", first_lines)
    job = finished_run([f"line {n}" + (" hit" if n % 3 == 0 else "") for n in range(1, 31)])
    every = list(range(3, 31, 3))

    def answer(**params: Any) -> Any:
        return ask(client, job, q="hit", **params).json()

    # Up to the line before the next match is searched.
    assert answer(limit=4) == {"matches": every[:4], "line_count": 30, "more": True, "searched": 14}
    assert answer(after=12, limit=4)["matches"] == [15, 18, 21, 24]
    assert answer(after=24, limit=2) == {"matches": [27, 30], "line_count": 30, "more": False, "searched": 30}
    assert answer(after=30) == {"matches": [], "line_count": 30, "more": False, "searched": 30}
    assert answer(after=10**12)["matches"] == []
    assert answer(limit=0) == {"matches": [], "line_count": 30, "more": True, "searched": 2}
    assert answer(regex=1, after=3, limit=1)["matches"] == [6]


@pytest.mark.parametrize(
    ("lines", "regex_alone_later"),
    [
        # The required text ("error" or "errno") is on every line: after the first range,
        # the regex runs alone.
        ([f"{n} {'Error 404' if n % 7 == 0 else 'errors: none'}" for n in range(1, 41)], True),
        # It is on few lines: they are looked for first all along.
        ([f"{n} {'Error 404' if n % 7 == 0 else 'all fine'}" for n in range(1, 41)], False),
    ],
)
def test_a_regex_finds_the_same_lines_with_or_without_its_substring_search_first(
    client: Client, monkeypatch: pytest.MonkeyPatch, lines: list[str], regex_alone_later: bool
) -> None:
    monkeypatch.setattr(scan, "FIRST_LINES", 10)
    job = finished_run(lines)
    pattern = r"err(or|no)\s+\d{3}"
    with CaptureQueriesContext(connection) as queries:
        found = matches(client, job, q=pattern, regex=1)
    assert found == [n for n, text in enumerate(lines, start=1) if re.search(pattern, text, re.IGNORECASE)]
    if connection.vendor == "postgresql":
        later_ranges = [query["sql"] for query in queries if "ORDER BY" in query["sql"] and "OFFSET 0" in query["sql"]]
        assert later_ranges
        assert all(("strpos" not in sql) == regex_alone_later for sql in later_ranges)


@pytest.mark.parametrize("regex", [0, 1])
def test_an_answer_that_spent_its_time_says_where_it_stopped(
    client: Client, monkeypatch: pytest.MonkeyPatch, regex: int
) -> None:
    """Each answer here has time for one range of 5 lines: the next answer goes on from it."""
    monkeypatch.setattr(search, "ANSWER_SECONDS", 0.0)
    monkeypatch.setattr(scan, "FIRST_LINES", 5)
    job = finished_run([f"line {n}" + (" hit" if n % 3 == 0 else "") for n in range(1, 14)])
    assert ask(client, job, q="hit", regex=regex).json() == {
        "matches": [3],
        "line_count": 13,
        "more": True,
        "searched": 5,
    }
    assert ask(client, job, q="hit", regex=regex, after=5).json()["matches"] == [6, 9]
    assert ask(client, job, q="hit", regex=regex, after=10, limit=1).json()["matches"] == [12]
    assert ask(client, job, q="hit", regex=regex, after=10).json() == {
        "matches": [12],
        "line_count": 13,
        "more": False,
        "searched": 13,
    }


def test_limit_defaults_to_1000_and_is_at_most_10000(client: Client) -> None:
    job = finished_run(["hit"] * 10_050)
    assert len(matches(client, job, q="hit")) == search.DEFAULT_MATCHES == 1000
    assert len(matches(client, job, q="hit", limit=99_999)) == search.MAX_MATCHES == 10_000


def test_only_stored_lines_the_run_counts_are_searched(client: Client) -> None:
    """A running run's lines past its line_count are not in its answer yet."""
    job = finished_run(["hit 1", "hit 2", "hit 3"])
    Job.objects.filter(pk=job.pk).update(line_count=2)
    assert ask(client, job, q="hit").json() == {"matches": [1, 2], "line_count": 2, "more": False, "searched": 2}


# --- Refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "q is empty"),
        ({"q": ""}, "q is empty"),
        ({"q": "a\x00b"}, "q contains a NUL character"),
        ({"q": "x" * (search.MAX_QUERY_LENGTH + 1)}, "q is longer than 1,000 characters"),
        ({"q": "(", "regex": 1}, "q is not a valid regular expression: missing ), unterminated subpattern"),
        ({"q": "a**", "regex": 1}, "q is not a valid regular expression: multiple repeat"),
        ({"q": r"\p{L}", "regex": 1}, r"q is not a valid regular expression: bad escape \p"),
        ({"q": "(" * 500 + ")" * 500, "regex": 1}, "q is too complex a regular expression"),
        ({"q": "x", "regex": "yes please"}, "regex must be 1 or 0"),
        ({"q": "x", "case": "2"}, "case must be 1 or 0"),
        ({"q": "x", "after": "-1"}, "after must be a non-negative integer"),
        ({"q": "x", "limit": "ten"}, "limit must be a non-negative integer"),
    ],
)
def test_a_search_it_cannot_run_is_a_400_with_a_message(
    client: Client, run: Job, params: dict[str, Any], message: str
) -> None:
    assert refusal(ask(client, run, **params)).startswith(message)


def test_a_pattern_postgresql_cannot_run_is_a_400_there(client: Client, run: Job) -> None:
    response = ask(client, run, q="(?P<word>timeout)", regex=1)
    if connection.vendor == "postgresql":
        assert refusal(response).startswith("PostgreSQL cannot run this pattern: invalid regular expression")
    else:
        assert response.json()["matches"] == [9, 10]


def test_a_lone_surrogate_sent_as_utf8_bytes_is_searched_as_replacement_characters(client: Client, run: Job) -> None:
    # Django decodes bytes that are not UTF-8 as U+FFFD: what reaches the search is text.
    surrogate = quote_from_bytes("\ud800".encode("utf-8", "surrogatepass"))
    response = client.get(f"/jobs/{run.id}/search?q={surrogate}")
    assert response.wsgi_request.GET["q"] == "\ufffd" * 3
    assert response.json()["matches"] == []


def test_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(search.SearchError, match="lone surrogate"):
        search.make_query("a\ud800", regex=False, case_sensitive=False)


def test_a_catastrophic_pattern_is_stopped_at_the_time_limit(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """(a+)+$ backtracks exponentially in Python's re: SQLite's child is killed at the limit
    (in the server it would hold the GIL, and so every other thread, for ever). PostgreSQL's
    engine needs no backtracking for it and answers."""
    monkeypatch.setattr(search, "TIME_LIMIT", 1.0)
    job = finished_run(["a" * 40 + "!"])
    response = ask(client, job, q="(a+)+$", regex=1)
    if connection.vendor == "postgresql":
        assert response.json()["matches"] == []
    else:
        assert refusal(response).startswith("The search took longer than 1 s and was stopped")


@pytest.mark.slow
def test_a_search_past_the_time_limit_is_a_400(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    job = finished_run([f"line {n}" for n in range(1, 50_001)])
    for params in ({"q": "9999"}, {"q": "9999", "case": 1}, {"q": r"^LINE \d*9999$", "regex": 1}):
        monkeypatch.setattr(search, "TIME_LIMIT", 0.001)
        refused = refusal(ask(client, job, **params))
        assert refused.startswith("The search took longer than 0.001 s and was stopped"), params
        monkeypatch.setattr(search, "TIME_LIMIT", 60.0)
        assert matches(client, job, **params) == [9999, 19999, 29999, 39999, 49999], params


def test_search_of_an_unknown_run_is_a_404_and_a_post_a_405(run: Job) -> None:
    """Who may search is in the access matrix (tests/test_access.py)."""
    viewer = client_for(user_with("view_job"))
    assert viewer.get("/jobs/00000000-0000-4000-8000-000000000000/search?q=x").status_code == 404
    assert viewer.post(f"/jobs/{run.id}/search?q=error").status_code == 405


# --- Hypothesis: any input is an answer or a 400 -------------------------------------------------

#: Pieces of patterns that both Python and PostgreSQL read alike.
PORTABLE_PIECES = [
    "a", "e", "i", "k", "s", "t", "x", "E", "I", "K", "S", "T", "0", "3", " ", ":", "/", "-", "é", "É", "ß",
    ".", r"\d", r"\w", r"\s", r"\.", r"\$", r"\(", "[a-f]", "[^ ]", "[0-9]", r"\b", "^", "$",
    "*", "+", "?", "{2}", "{1,3}", "|", "(", ")", "(?:",
]  # fmt: skip


def portable_patterns() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(PORTABLE_PIECES), min_size=1, max_size=8).map("".join)


def any_query() -> st.SearchStrategy[str | bytes]:
    return st.one_of(
        st.text(max_size=30),
        st.text(alphabet="ab\\()[]{}*+?|^$.-,:=!<>PiIsSkK0123 ", max_size=16),
        portable_patterns(),
        st.sampled_from(["(a+)+$", "(?P<x>a)(?P=x)", "[[:alpha:]]", "x{,3}", "(?x) a # c", r"\Z", "(?<=a)b"]),
        st.binary(max_size=12),
    )


def python_answer(query: search.Query) -> list[int]:
    """What Python makes of the query over LINES: the answer when the database must agree."""
    if query.regex:
        return numbers_where(re.compile(query.text, query.flags).search)
    if query.case_sensitive:
        return numbers_where(lambda text: query.text in text)
    if query.text.isascii():
        ascii_lower = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
        return numbers_where(lambda text: query.text.lower() in text.translate(ascii_lower))
    return numbers_where(re.compile(re.escape(query.text), re.IGNORECASE).search)


@PROPERTY
@given(q=any_query(), regex=st.booleans(), case=st.booleans(), after=st.integers(0, len(LINES) + 1))
def test_any_search_is_an_answer_or_a_400(
    client: Client, run: Job, q: str | bytes, regex: bool, case: bool, after: int
) -> None:
    encoded = quote_from_bytes(q, safe="") if isinstance(q, bytes) else quote(q, safe="")
    response = client.get(f"/jobs/{run.id}/search?q={encoded}&regex={int(regex)}&case={int(case)}&after={after}")
    sent = response.wsgi_request.GET.get("q", "")
    if response.status_code == 400:
        message = refusal(response)
        assert message.startswith(("q ", "PostgreSQL cannot run this pattern: ")), message
        assert len(message) < 1000
        return
    assert response.status_code == 200
    body = json.loads(response.content)
    assert body["line_count"] == len(LINES)
    assert body["matches"] == sorted(set(body["matches"]))
    assert all(after < number <= len(LINES) for number in body["matches"])
    query = search.make_query(sent, regex=regex, case_sensitive=case)
    expected = [number for number in python_answer(query) if number > after]
    # SQLite runs Python's re itself; PostgreSQL agrees on texts that fold as ASCII.
    if connection.vendor == "sqlite" or not regex and (case or sent.isascii()):
        assert body["matches"] == expected


@settings(max_examples=PROPERTY.max_examples * 10)  # pure Python: cheap examples
@given(
    hits=st.lists(st.booleans(), min_size=1, max_size=60),
    after=st.integers(0, 59),
    wanted=st.integers(1, 8),
    first_lines=st.integers(1, 10),
    seconds=st.sampled_from([0.0, 60.0]),
)
def test_a_scan_answers_every_match_up_to_where_it_stopped(
    hits: list[bool], after: int, wanted: int, first_lines: int, seconds: float
) -> None:
    after %= len(hits)  # the search asks for a scan of some lines only
    matching = [number for number, hit in enumerate(hits, start=1) if hit]
    asked: list[tuple[int, int]] = []

    def search_range(start: int, end: int, count: int) -> list[int]:
        asked.append((start, end))
        return [number for number in matching if start < number <= end][:count]

    numbers, searched = scan.scan(search_range, after, len(hits), wanted, seconds, first_lines)
    assert numbers == [number for number in matching if after < number <= searched][:wanted]
    # It stops when it has enough, at the end, or (with no time) after one range.
    if len(numbers) < wanted:
        assert searched == len(hits) or seconds == 0 and searched == after + first_lines
    else:
        assert searched == numbers[-1]
    # Ranges follow each other from `after`, none past the run's end.
    assert [start for start, _ in asked] == [after, *(end for _, end in asked[:-1])]
    assert all(end <= len(hits) for _, end in asked)


@pytest.mark.slow
@PROPERTY
@given(
    hits=st.lists(st.sampled_from(["hit", "a HIT", "miss", ""]), max_size=24),
    regex=st.booleans(),
    limit=st.integers(1, 4),
    first_lines=st.integers(2, 6),
    seconds=st.sampled_from([0.0, 60.0]),
)
def test_answers_that_go_on_from_searched_find_every_match_once(
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    hits: list[str],
    regex: bool,
    limit: int,
    first_lines: int,
    seconds: float,
) -> None:
    """A client that asks again from `searched` while `more` gets each match once, in order."""
    monkeypatch.setattr(search, "ANSWER_SECONDS", seconds)
    monkeypatch.setattr(scan, "FIRST_LINES", first_lines)
    lines = [f"{number} {text}" for number, text in enumerate(hits, start=1)]
    job = finished_run(lines)
    found: list[int] = []
    after, more = 0, True
    while more:
        body = ask(client, job, q="h.t" if regex else "hit", regex=int(regex), limit=limit, after=after).json()
        assert all(after < number <= body["searched"] for number in body["matches"])
        assert len(body["matches"]) <= limit
        found += body["matches"]
        more = body["more"]
        assert body["searched"] > after or not more  # every answer gets further
        after = body["searched"]
    assert after == len(lines)
    assert found == [number for number, text in enumerate(hits, start=1) if text in ("hit", "a HIT")]


#: The line whose letters fold to ASCII ones in Python's re only (İ, ı, ſ, the Kelvin sign).
BEYOND_ASCII_LINE = LINES.index("İstanbul ıi ſ K kelvin") + 1


@pytest.mark.slow
@PROPERTY
@given(pattern=portable_patterns(), case=st.booleans())
def test_portable_patterns_find_the_same_lines_as_python(client: Client, run: Job, pattern: str, case: bool) -> None:
    response = ask(client, run, q=pattern, regex=1, case=int(case))
    if response.status_code == 400:
        assert refusal(response).startswith(("q is not a valid regular expression", "PostgreSQL cannot run"))
        return
    found = response.json()["matches"]
    expected = python_answer(search.make_query(pattern, regex=True, case_sensitive=case))
    if connection.vendor == "postgresql" and not case:
        # PostgreSQL folds i, k and s to their ASCII pair only.
        found, expected = ([n for n in numbers if n != BEYOND_ASCII_LINE] for numbers in (found, expected))
    assert found == expected


@settings(max_examples=PROPERTY.max_examples * 10)  # pure Python: cheap examples
@given(
    pattern=portable_patterns(),
    text=st.text(alphabet="aeiksxtEIKST03 :/-éÉßİıſK.$(", max_size=20),
    case=st.booleans(),
)
def test_a_patterns_required_texts_are_one_in_every_line_it_matches(pattern: str, text: str, case: bool) -> None:
    try:
        query = search.make_query(pattern, regex=True, case_sensitive=case)
    except search.SearchError:
        return
    if re.search(pattern, text, query.flags):
        # On ASCII lines the engines agree: PostgreSQL's, which folds i, k and s to ASCII only.
        for python in (True, False) if text.isascii() else (True,):
            required = search.required_texts(pattern, query.flags, folds_beyond_ascii=python)
            if case:
                assert not required or any(one in text for one in required)
            else:
                assert not required or any(one.lower() in text.lower() for one in required)


@pytest.mark.parametrize(
    ("pattern", "required"),
    [
        (r"timeout after \d+ ms", {"timeout after "}),
        (r"(?i)timeout after \d+ ms", {"meout after "}),  # i, k and s fold beyond ASCII
        (r"(error|warning): disk", {"error: disk", "warning: disk"}),
        (r"err(or|no)\s+\d{3}", {"error", "errno"}),
        (r"(?i)[Ee]rr(?:or|no)", {"error", "errno"}),
        (r"abc|abd", {"abc", "abd"}),
        (r"x+yz", {"xyz"}),
        (r"items, checksum 0{4}", {"items, checksum 0000"}),
        (r"ab{2,}c", {"abb"}),
        (r"(?:request )id=\d+", {"request id="}),
        (r"(?i:abc)def", {"def"}),
        (r"(a|b)(c|d)(e|f)(g|h)xyz", {"gxyz", "hxyz"}),  # 16 alternatives are too many
        (r"a*", set()),
        (r"\d{4}-\d\d", set()),
    ],
)
def test_the_required_texts_of_a_pattern(pattern: str, required: set[str]) -> None:
    assert search.required_texts(pattern, re.IGNORECASE if pattern.startswith("(?i)") else 0) == required


def test_postgresqls_engine_folds_i_k_and_s_to_ascii_only() -> None:
    pattern = r"(?i)items \(0 errors\), checksum 0{4}"
    assert search.required_texts(pattern, re.IGNORECASE) == {" (0 error"}
    assert search.required_texts(pattern, re.IGNORECASE, folds_beyond_ascii=False) == {
        "items (0 errors), checksum 0000"
    }


@pytest.mark.parametrize(
    ("python", "postgresql"),
    [
        (r"\bword\b", r"\yword\y"),
        (r"\Bx", r"\Yx"),
        (r"[\b]", r"[\b]"),
        (r"\\b", r"\\b"),
        (r"[]\b]\b", r"[]\b]\y"),
        (r"[^]\b]\b", r"[^]\b]\y"),
        (r"\d+\.\w", r"\d+\.\w"),
    ],
)
def test_python_patterns_in_postgresqls_spelling(python: str, postgresql: str) -> None:
    assert search.postgresql_pattern(python) == postgresql
