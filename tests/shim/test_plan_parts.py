"""The parts of plan(): server choice, real-tool search, cache URLs, and the default probe."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from conftest import FakeProbe, make_tool
from hypothesis import given
from hypothesis import strategies as st
from withcache_shim.plan import RealToolNotFound, explain, plan
from withcache_shim.probe import classify, probe_command
from withcache_shim.probe import probe as default_probe
from withcache_shim.realtool import find_real_tool, pick_server
from withcache_shim.urls import basename, cache_url, token

URL = "https://vendor.example/dl/a.tar"


@pytest.mark.parametrize(
    ("env", "curl", "wget"),
    [
        ({}, None, None),
        ({"WITHCACHE_SERVER": ""}, None, None),
        ({"WITHCACHE_SERVER": "   "}, None, None),
        ({"WITHCACHE_SERVER": "cache:3000"}, "http://cache:3000", "http://cache:3000"),
        ({"WITHCACHE_SERVER": "http://cache:3000/"}, "http://cache:3000", "http://cache:3000"),
        ({"WITHCACHE_SERVER": "https://cache.lab"}, "https://cache.lab", "https://cache.lab"),
        ({"WITHCACHE_SERVER": "HTTP://Cache:1"}, "HTTP://Cache:1", "HTTP://Cache:1"),
        ({"WITHCACHE_SERVER": "ftp://cache"}, None, None),
        (
            {"WITHCACHE_SERVER": "a:1", "CURLWITHCACHE_SERVER": "c:2"},
            "http://c:2",
            "http://a:1",
        ),
        (
            {"WITHCACHE_SERVER": "a:1", "WGETWITHCACHE_SERVER": "w:3"},
            "http://a:1",
            "http://w:3",
        ),
        ({"WITHCACHE_SERVER": "a:1", "CURLWITHCACHE_SERVER": ""}, "http://a:1", "http://a:1"),
        ({"CURLWITHCACHE_SERVER": "c:2"}, "http://c:2", None),
    ],
)
def test_pick_server(env, curl, wget) -> None:
    assert pick_server("curl", env) == curl
    assert pick_server("wget", env) == wget


def test_real_tool_is_the_first_on_path(tmp_path) -> None:
    first = make_tool(tmp_path / "one", "curl")
    make_tool(tmp_path / "two", "curl")
    env = {"PATH": f"{tmp_path / 'one'}:{tmp_path / 'two'}"}
    assert find_real_tool("curl", env, "/opt/shim/curlwithcache") == str(first)


def test_real_tool_search_skips_the_shim_through_symlinks(tmp_path) -> None:
    shim = make_tool(tmp_path / "venv", "curl-shim-impl")
    links = tmp_path / "links"
    links.mkdir()
    (links / "curl").symlink_to(shim)
    real = make_tool(tmp_path / "usr", "curl")
    env = {"PATH": f"{links}:{tmp_path / 'usr'}"}
    # Started through the link, as a shell running `curl` would.
    assert find_real_tool("curl", env, str(links / "curl")) == str(real)
    # Started by a bare name, as execvp with argv[0]="curl" would.
    assert find_real_tool("curl", env, "curl") == str(real)


def test_real_tool_search_skips_anything_resolving_to_a_shim_name(tmp_path) -> None:
    other_shim = make_tool(tmp_path / "native", "curlwithcache")
    links = tmp_path / "links"
    links.mkdir()
    (links / "curl").symlink_to(other_shim)
    real = make_tool(tmp_path / "usr", "curl")
    env = {"PATH": f"{links}:{tmp_path / 'usr'}"}
    assert find_real_tool("curl", env, "/somewhere/else") == str(real)


def test_real_tool_search_skips_non_executables_and_directories(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "wget").write_text("not executable")
    (tmp_path / "b" / "wget").mkdir(parents=True)
    real = make_tool(tmp_path / "c", "wget")
    env = {"PATH": ":".join(str(tmp_path / d) for d in "abc")}
    assert find_real_tool("wget", env, "/x/wgetwithcache") == str(real)


def test_real_tool_override_wins(tmp_path) -> None:
    make_tool(tmp_path / "usr", "curl")
    pinned = make_tool(tmp_path / "opt", "curl-8")
    env = {"PATH": str(tmp_path / "usr"), "REAL_CURL": str(pinned)}
    assert find_real_tool("curl", env, "/x/curlwithcache") == str(pinned)
    env = {"PATH": f"{tmp_path / 'usr'}:{tmp_path / 'opt'}", "REAL_CURL": "curl-8"}
    assert find_real_tool("curl", env, "/x/curlwithcache") == str(pinned)


def test_real_tool_override_pointing_at_the_shim_is_refused(tmp_path) -> None:
    shim = make_tool(tmp_path / "bin", "curl")
    env = {"PATH": str(tmp_path / "bin"), "REAL_CURL": str(shim)}
    with pytest.raises(RealToolNotFound, match="REAL_CURL"):
        find_real_tool("curl", env, str(shim))


def test_no_real_tool_raises(tmp_path) -> None:
    shim = make_tool(tmp_path / "bin", "wget")
    with pytest.raises(RealToolNotFound, match="no real wget"):
        find_real_tool("wget", {"PATH": str(tmp_path / "bin")}, str(shim))
    with pytest.raises(RealToolNotFound):
        plan("wget", [str(shim), URL], {"PATH": str(tmp_path / "bin")}, FakeProbe())


def test_a_missing_path_means_the_default_search_path(monkeypatch) -> None:
    monkeypatch.setattr(os, "defpath", "/usr/bin")
    assert find_real_tool("curl", {}, "/x/curlwithcache") == "/usr/bin/curl"


def test_without_a_server_nothing_is_parsed_or_probed(fake_bin, probe) -> None:
    args = ["--frobnicate", "-d", "x", URL, "--", "\x00garbage", "-"]
    real, argv = plan("curl", ["curlwithcache", *args], {"PATH": str(fake_bin)}, probe)
    assert (real, argv) == (str(fake_bin / "curl"), [str(fake_bin / "curl"), *args])
    assert probe.asked == []


def test_the_per_tool_server_applies_to_its_tool_only(fake_bin) -> None:
    env = {"PATH": str(fake_bin), "CURLWITHCACHE_SERVER": "c:1"}
    curl_probe, wget_probe = FakeProbe(), FakeProbe()
    assert plan("curl", ["curlwithcache", URL], env, curl_probe)[1][1] == cache_url(
        "http://c:1", URL
    )
    assert plan("wget", ["wgetwithcache", URL], env, wget_probe)[1][1] == URL
    assert (curl_probe.asked, wget_probe.asked) == ([URL], [])


def test_an_https_cache_satisfies_proto_https(fake_bin, probe) -> None:
    env = {"PATH": str(fake_bin), "WITHCACHE_SERVER": "https://cache.lab"}
    args = ["--proto", "=https", "--tlsv1.2", "-sSf", "https://sh.rustup.rs"]
    _, argv = plan("curl", ["curlwithcache", *args], env, probe)
    assert argv[1:] == [*args[:-1], cache_url("https://cache.lab", "https://sh.rustup.rs")]


def test_posixly_correct_makes_wget_stop_at_the_first_url(fake_bin) -> None:
    base = {"PATH": str(fake_bin), "WITHCACHE_SERVER": "c:1"}
    args = [URL, "-O", "out"]
    permuted = explain("wget", ["wgetwithcache", *args], base, FakeProbe())
    strict = explain(
        "wget", ["wgetwithcache", *args], {**base, "POSIXLY_CORRECT": "1"}, FakeProbe()
    )
    assert permuted.argv[1:] == [cache_url("http://c:1", URL), "-O", "out"]
    assert strict.argv[1:] == args
    assert "not an http(s) URL" in (strict.reason or "")


def test_a_miss_and_an_unreachable_host_keep_the_argv(fake_bin) -> None:
    env = {"PATH": str(fake_bin), "WITHCACHE_SERVER": "c:1"}
    for answer in ("miss", "unreachable"):
        asked = []

        def answering(real, tool, cache_url, answer=answer, asked=asked):
            asked.append(cache_url)
            return answer

        _, argv = plan("curl", ["curlwithcache", "-O", URL], env, answering)
        assert argv[1:] == ["-O", URL]
        assert asked == [cache_url("http://c:1", URL)]


def test_the_probe_is_given_the_real_tool_and_the_cache_url(fake_bin) -> None:
    seen = []
    env = {"PATH": str(fake_bin), "WITHCACHE_SERVER": "c:1"}
    plan("wget", ["wgetwithcache", URL], env, lambda *a: seen.append(a) or "miss")
    assert seen == [(str(fake_bin / "wget"), "wget", cache_url("http://c:1", URL), None)]


@pytest.mark.parametrize(
    "url",
    [URL, "https://v.example/a?b=c&d=e#f", "http://v.example", "https://ü.example/ä ö"],
)
def test_the_token_is_the_whole_url_in_unpadded_urlsafe_base64(url) -> None:
    assert token(url) == base64.urlsafe_b64encode(url.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("url", "name"),
    [
        (URL, "a.tar"),
        ("https://v.example/dl/a.tar?sig=x/y#frag", "a.tar"),
        ("https://v.example/dl/a.tar#x/y", "a.tar"),
        ("https://v.example/dl/", "download"),
        ("https://v.example", "download"),
        ("https://v.example?x=/a", "download"),
        ("https://v.example/dl/..", "download"),
        ("https://v.example/dl/.", "download"),
        ("https://v.example/torch-2.2.1%2Bcu121.whl", "torch-2.2.1%2Bcu121.whl"),
        ("https://v.example/a b.tar", "a%20b.tar"),
        ("https://v.example/100%.tar", "100%25.tar"),
        ("https://v.example/%zz.tar", "%25zz.tar"),
        ("https://v.example/ü.tar", "%C3%BC.tar"),
        ("https://v.example/a;v=1,b=(2)+c:d@e.tar", "a;v=1,b=(2)+c:d@e.tar"),
        ('https://v.example/a"<>.tar', "a%22%3C%3E.tar"),
    ],
)
def test_basename(url, name) -> None:
    assert basename(url) == name


def test_cache_url_shape() -> None:
    assert cache_url("http://c:1", URL) == f"http://c:1/b/{token(URL)}/a.tar"


@pytest.mark.parametrize(
    ("tool", "code", "answer"),
    [
        ("curl", 0, "hit"),
        ("curl", 22, "miss"),
        ("curl", 7, "unreachable"),
        ("curl", 28, "unreachable"),
        ("curl", 8, "unreachable"),
        ("wget", 0, "hit"),
        ("wget", 8, "miss"),
        ("wget", 4, "unreachable"),
        ("wget", 22, "unreachable"),
        ("curl", -9, "unreachable"),
    ],
)
def test_exit_codes_map_to_answers(tool, code, answer) -> None:
    assert classify(tool, code) == answer


def test_probe_commands() -> None:
    assert probe_command("/r/curl", "curl", "http://c/b/t/n") == [
        "/r/curl", "-fsS", "-I", "--max-time", "3", "-o", "/dev/null", "http://c/b/t/n",
    ]  # fmt: skip
    assert probe_command("/r/wget", "wget", "http://c/b/t/n") == [
        "/r/wget", "--spider", "-q", "--timeout=3", "--tries=1", "http://c/b/t/n",
    ]  # fmt: skip


@pytest.mark.parametrize(("code", "answer"), [(0, "hit"), (22, "miss"), (6, "unreachable")])
def test_an_https_server_is_probed_by_the_tool_without_our_stdio(
    tmp_path, capfd, code, answer
) -> None:
    log = tmp_path / "argv"
    tool = make_tool(
        tmp_path,
        "curl",
        f'printf "%s\\n" "$@" > {log}\necho to-stdout\necho to-stderr >&2\n'
        f"read line && echo stdin-was-open >> {log}\nexit {code}",
    )
    assert default_probe(str(tool), "curl", "https://c/b/t/n") == answer
    assert (
        log.read_text().split("\n")[:-1] == probe_command(str(tool), "curl", "https://c/b/t/n")[1:]
    )
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_default_probe_of_an_unrunnable_tool_is_unreachable(tmp_path) -> None:
    assert default_probe(str(tmp_path / "absent"), "wget", "https://c/b/t/n") == "unreachable"
    broken = tmp_path / "broken"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    assert default_probe(str(broken), "wget", "https://c/b/t/n") == "unreachable"


def test_plan_is_importable_from_the_package() -> None:
    import withcache_shim

    assert withcache_shim.plan is plan
    assert Path(withcache_shim.__file__).parent.name == "withcache_shim"


def test_finding6_the_shims_credential_lists_are_the_hosts():
    """The shim passes through exactly what the cache-host would refuse (and the native shim's
    tables are generated from these)."""
    from withcache_shim import urls

    from withcache import keys

    assert set(urls.CREDENTIAL_PARAMS) == keys.CREDENTIAL_PARAMS
    assert set(urls.CREDENTIAL_PARTS) == set(keys.CREDENTIAL_PARTS)
    assert set(urls.SIGNATURE_PARAMS) == keys.SIGNATURE_PARAMS


@given(
    st.lists(
        st.tuples(
            st.text(alphabet="aAkKeEyYtToOnNsSiIgG_-+%25fF0", max_size=14),
            st.sampled_from(["", "=", "=1"]),
        ),
        max_size=4,
    )
)
def test_finding6_the_shim_refuses_a_query_exactly_when_the_host_does(params):
    from withcache_shim.urls import credential_param

    from withcache.keys import InvalidURL, cache_key

    url = f"{URL}?" + "&".join(name + value for name, value in params)
    try:
        cache_key(url)
        host_refuses = False
    except InvalidURL:
        host_refuses = True
    assert (credential_param(url) is not None) == host_refuses
