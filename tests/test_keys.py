"""Cache keys and the token codec."""

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from withcache.keys import InvalidURL, cache_key, decode_token, encode_token

hosts = st.from_regex(r"\A[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?(\.[a-zA-Z]{2,6}){0,2}\Z")
segments = st.text(alphabet=st.sampled_from("abcXYZ019-._~%!$&'()*+,;=:@"), min_size=0, max_size=12)
paths = st.lists(segments, max_size=5).map(lambda parts: "/" + "/".join(parts))
queries = st.text(alphabet=st.sampled_from("abc=&%20xyz"), min_size=1, max_size=20)


@st.composite
def urls(draw, with_query=None):
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "Https"]))
    port = draw(st.sampled_from(["", ":80", ":443", ":8080"]))
    url = f"{scheme}://{draw(hosts)}{port}{draw(paths)}"
    query = draw(with_query) if with_query is not None else None
    if query:
        url += "?" + query
    if draw(st.booleans()):
        url += "#frag"
    return url


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("HTTPS://Example.COM/a/B.tar.gz", "https://example.com/a/B.tar.gz"),
        ("https://example.com:443/x", "https://example.com/x"),
        ("http://example.com:80/x", "http://example.com/x"),
        ("http://example.com:443/x", "http://example.com:443/x"),
        ("https://example.com:80/x", "https://example.com:80/x"),
        ("https://example.com/x?sig=abc&exp=1", "https://example.com/x"),
        ("https://example.com/x#part", "https://example.com/x"),
        ("https://example.com", "https://example.com/"),
        ("https://[2001:DB8::1]:8443/f", "https://[2001:db8::1]:8443/f"),
        ("https://example.com/A%2Fb//c/", "https://example.com/A%2Fb//c/"),
    ],
)
def test_key_normalises_scheme_host_port_and_drops_query_and_fragment(url, key):
    assert cache_key(url) == key


def test_keep_query_keeps_the_query_but_not_the_fragment():
    assert cache_key("https://e.com/x?b=2&a=1#f", keep_query=True) == "https://e.com/x?b=2&a=1"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/f", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("example.com/f", "only http and https"),
        ("https:///f", "no host"),
        ("https://user:pw@example.com/f", "credentials"),
        ("https://example.com:99999/f", "malformed"),
        ("https://example.com/a b", "whitespace"),
        ("https://example.com/a\nb", "whitespace"),
        ("", "empty"),
    ],
)
def test_uncacheable_urls_are_refused_with_a_reason(url, reason):
    with pytest.raises(InvalidURL, match=reason):
        cache_key(url)


@given(st.text(min_size=1, max_size=200))
def test_token_codec_round_trips_any_text(url):
    token = encode_token(url)
    assert "=" not in token
    assert decode_token(token) == url


@given(urls())
def test_padded_tokens_are_tolerated(url):
    padded = base64.urlsafe_b64encode(url.encode()).decode()
    assert decode_token(padded) == url


@given(urls(with_query=st.none() | queries), st.booleans())
def test_normalisation_is_idempotent(url, keep_query):
    key = cache_key(url, keep_query=keep_query)
    assert cache_key(key, keep_query=keep_query) == key


@given(urls(), queries, queries)
def test_query_only_differences_share_a_key_unless_keep_query(url, q1, q2):
    base = url.split("#")[0]
    a, b = f"{base}?{q1}", f"{base}?{q2}"
    assert cache_key(a) == cache_key(b) == cache_key(base)
    if q1 != q2:
        assert cache_key(a, keep_query=True) != cache_key(b, keep_query=True)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!",
        "a",
        "abcde",
        "ab/cd",
        "ab+cd",
        "a=b",
        "_-_-_",
        base64.b64encode(b"\xff\xfe").decode(),
    ],
)
def test_malformed_tokens_raise_invalid_url(token):
    with pytest.raises(InvalidURL, match="malformed token"):
        decode_token(token)
