"""Properties of plan() over random command lines built from the tools' own vocabulary."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from withcache_shim import curl_options as C
from withcache_shim import wget_options as W
from withcache_shim.plan import explain
from withcache_shim.rules import find_urls
from withcache_shim.urls import cache_url

SERVER = "http://cache.lab:3000"
ANSWERS = ["hit", "miss", "unreachable", "hit+content-disposition"]

_curl_words = (
    [f"--{n}" for n in C.LONG]
    + [f"--no-{n}" for n, k in C.LONG.items() if k == C.BOOL]
    + [f"-{c}" for c in C.SHORT]
    + ["--expand-url", "--expand-output", "--", "-", "-:"]
)
_wget_words = (
    [f"--{n}" for n in W.LONG]
    + [f"--{n}=" for n, k in W.LONG.items() if k != W.FLAG]
    + [f"-{c}" for c in W.SHORT]
    + ["--", "-", "-nv", "-nc"]
)

hosts = st.sampled_from(["vendor.example", "v.example:8443", "cache.lab:3000", "u:p@v.example"])
segments = st.text(alphabet="abz09-._~%?#&=[]{}/ü ", max_size=12)
urls = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https", "HTTPS", "ftp", "file"]),
    hosts,
    segments,
)
values = st.one_of(
    st.sampled_from(["GET", "HEAD", "POST", "=https", "-all,http", "Accept: x", "x=1", "off"]),
    st.text(max_size=8),
)


def _argv(words: list[str]):
    token = st.one_of(st.sampled_from(words), urls, values, st.text(max_size=6))
    # A bundle of short letters, possibly with an attached value.
    bundle = st.builds(
        lambda letters, tail: "-" + "".join(letters) + tail,
        st.lists(st.sampled_from([w[1] for w in words if len(w) == 2]), min_size=1, max_size=4),
        st.sampled_from(["", "out", "x"]),
    )
    return st.lists(st.one_of(token, bundle), max_size=12)


# Plain downloads are rare among random words: also draw command lines made of harmless
# options (kept with their values) around a few http(s) URLs, so hits are exercised too.
_curl_chunks = [
    ["-s"], ["-S"], ["-f"], ["-L"], ["-O"], ["-sSfL"], ["-#"], ["-k"], ["-o", "out"],
    ["-oout"], ["--retry", "3"], ["-H", "Accept: x"], ["-e", "https://ref.example/"],
    ["--url", "https://vendor.example/u.tar"], ["-C", "-"], ["--compressed"], ["-:"], ["-g"],
    ["--proto", "=https"], ["-X", "GET"], ["--no-progress-meter"], ["--remote-name-all"],
]  # fmt: skip
_wget_chunks = [
    ["-q"], ["-nv"], ["-c"], ["-N"], ["-O", "out"], ["-qO-"], ["--tries=3"], ["-T", "5"],
    ["--header=Accept: x"], ["--referer", "https://ref.example/"], ["-P", "dl"], ["--spider"],
    ["--method=GET"], ["--"],
]  # fmt: skip
# Query parameter names around the credential and signature lists (issue 13, finding 6).
_param_names = st.one_of(
    st.sampled_from(
        ["v", "token", "Access_Token", "access%5Ftoken", "api+key", "apiKey", "key", "keys",
         "X-Amz-Security-Token", "X-Amz-Signature", "sig", "__token__", "Sessionid", "%6Bey",
         "session%", "passive", "pwd", "PHPSESSID", "security-token", "author"]
    ),
    st.text(alphabet="aekyKtonsS_-+%0", max_size=8),
)  # fmt: skip
_queries = st.lists(
    st.builds(lambda n, v: n + v, _param_names, st.sampled_from(["", "=", "=1"])), max_size=3
).map(lambda params: "?" + "&".join(params) if params else "")
http_urls = st.builds(
    lambda scheme, host, path, query: f"{scheme}://{host}/{path}{query}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(["vendor.example", "v.example:8443"]),
    st.text(alphabet="abz09-._~%?=[]/ ", max_size=12),
    _queries,
)


def _plausible(chunks):
    pieces = st.lists(
        st.one_of(st.sampled_from(chunks), http_urls.map(lambda u: [u])), min_size=1, max_size=8
    )
    return pieces.map(lambda parts: [word for part in parts for word in part])


tools_and_args = st.one_of(
    st.tuples(st.just("curl"), _argv(_curl_words)),
    st.tuples(st.just("wget"), _argv(_wget_words)),
    st.tuples(st.just("curl"), _plausible(_curl_chunks)),
    st.tuples(st.just("wget"), _plausible(_wget_chunks)),
)


def _answering(choices):
    asked = []

    def probe(real: str, tool: str, target: str, via=None) -> str:
        asked.append(target)
        return choices[len(asked) % len(choices)]

    return probe, asked


common = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@common
@given(tools_and_args, st.lists(st.sampled_from(ANSWERS), min_size=1, max_size=4))
def test_plan_never_crashes_and_changes_only_urls_that_hit(fake_bin, case, choices) -> None:
    tool, args = case
    probe, asked = _answering(choices)
    env = {"PATH": str(fake_bin), "WITHCACHE_SERVER": "cache.lab:3000"}

    result = explain(tool, [f"{tool}withcache", *args], env, probe)

    assert result.argv[0] == result.real == str(fake_bin / tool)
    final = result.argv[1:]
    assert len(final) == len(args)
    needs_cd = find_urls(tool, args, env, SERVER).needs_cd
    targets = {i: target for i, _url, target, _answer in result.probes}
    hits = {
        i
        for i, _url, _target, answer in result.probes
        if answer == "hit+content-disposition" or (answer == "hit" and not needs_cd)
    }
    changed = {i for i, (a, b) in enumerate(zip(args, final, strict=True)) if a != b}
    # Exactly one token per rewritten URL, and it is that URL's cache URL (named for wget
    # as wget would name the origin's file).
    assert changed == hits
    for i in hits:
        assert final[i] == targets[i]
        assert targets[i].startswith(cache_url(SERVER, args[i]).rpartition("/")[0] + "/")
    assert [target for _i, _url, target, _a in result.probes] == asked
    if result.reason:  # passed through: untouched, and nothing was probed
        assert final == args
        assert asked == []
    # Probing stops at the first unreachable answer.
    answers = [a for *_, a in result.probes]
    assert "unreachable" not in answers[:-1]


@common
@given(tools_and_args)
def test_a_planned_command_line_plans_to_itself(fake_bin, case) -> None:
    tool, args = case
    env = {"PATH": str(fake_bin), "WITHCACHE_SERVER": "cache.lab:3000"}
    first = explain(tool, [f"{tool}withcache", *args], env, lambda *a: "hit")
    second = explain(tool, [f"{tool}withcache", *first.argv[1:]], env, lambda *a: "hit")
    # Cache URLs are never wrapped again, and nothing else newly qualifies.
    assert second.argv == first.argv


@common
@given(tools_and_args)
def test_without_a_server_any_argv_runs_untouched_unprobed(fake_bin, case) -> None:
    tool, args = case
    probe, asked = _answering(["hit"])
    result = explain(tool, [f"{tool}withcache", *args], {"PATH": str(fake_bin)}, probe)
    assert result.argv == [str(fake_bin / tool), *args]
    assert asked == []
