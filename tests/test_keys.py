"""Cache keys and the token codec."""

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from withcache import keys
from withcache.keys import InvalidURL, cache_key, decode_token, encode_token

hosts = st.from_regex(r"\A[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?(\.[a-zA-Z]{2,6}){0,2}\Z")
segments = st.text(alphabet=st.sampled_from("abcXYZ019-._~%!$&'()*+,;=:@"), min_size=0, max_size=12)
paths = st.lists(segments, max_size=5).map(lambda parts: "/" + "/".join(parts))
queries = st.text(alphabet=st.sampled_from("abc=&%20xyz"), min_size=1, max_size=20)


@st.composite
def signed_queries(draw):
    """Queries mixing plain parameters with those of the signature schemes."""
    names = ["v", "a", "sig", "sp", "X-Amz-Signature", "x-amz-date", "Expires", "Key-Pair-Id"]
    params = draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(["1", "", "x%20y"]))))
    return "&".join(f"{n}={v}" for n, v in params)


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
        ("https://example.com/x?sig=abc&sv=2024&se=1", "https://example.com/x"),
        ("https://example.com/x#part", "https://example.com/x"),
        ("https://example.com/x?#part", "https://example.com/x"),
        ("https://example.com", "https://example.com/"),
        ("https://[2001:DB8::1]:8443/f", "https://[2001:db8::1]:8443/f"),
        ("https://example.com/A%2Fb//c/", "https://example.com/A%2Fb//c/"),
    ],
)
def test_key_normalises_scheme_host_port_and_drops_signatures_and_fragment(url, key):
    assert cache_key(url) == key


def test_keep_query_keeps_the_query_but_not_the_fragment():
    assert cache_key("https://e.com/x?b=2&a=1#f", query="keep") == "https://e.com/x?b=2&a=1"


def test_drop_query_drops_the_whole_query():
    assert cache_key("https://e.com/x?version=1&sig=s#f", query="drop") == "https://e.com/x"


def test_an_unknown_query_mode_is_a_programming_error():
    with pytest.raises(ValueError, match="query mode"):
        cache_key("https://e.com/x", query="sorted")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/f", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("example.com/f", "only http and https"),
        ("https:///f", "no host"),
        ("https://user:pw@example.com/f", "credentials"),
        ("https://example.com/f?access_token=abc", "credentials"),
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


@given(urls(with_query=st.none() | queries | signed_queries()), st.sampled_from(keys.QUERY_MODES))
def test_normalisation_is_idempotent(url, query):
    key = cache_key(url, query=query)
    assert cache_key(key, query=query) == key


@given(urls(), queries, queries)
def test_query_only_differences_share_a_key_only_with_drop_query(url, q1, q2):
    base = url.split("#")[0]
    a, b = f"{base}?{q1}", f"{base}?{q2}"
    assert cache_key(a, query="drop") == cache_key(b, query="drop") == cache_key(base)
    if q1 != q2:
        assert cache_key(a, query="keep") != cache_key(b, query="keep")


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


# -- issue 13, finding 6: the query in cache keys ----------------------------------------------

S3 = "https://bucket.s3.amazonaws.com/tools/tool.tar.gz"
SIGV4 = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20240101%2Fus-east-1%2Fs3"
    "%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature={sig}"
)


def test_finding6_query_values_that_select_content_get_different_keys():
    """The first of `tool.sh?version=attacker` and `tool.sh?version=1.2.3` no longer decides
    what everyone asking for the other gets."""
    attacker = cache_key("https://vendor.example/tool.sh?version=attacker")
    genuine = cache_key("https://vendor.example/tool.sh?version=1.2.3")
    assert attacker != genuine
    assert genuine == "https://vendor.example/tool.sh?version=1.2.3"


@pytest.mark.parametrize(
    ("scheme", "first", "second", "key"),
    [
        (
            "AWS SigV4",
            f"{S3}?{SIGV4.format(sig='aaaa')}",
            f"{S3}?{SIGV4.format(sig='bbbb').replace('20240101T', '20240102T')}",
            S3,
        ),
        (
            "AWS SigV4 with a session token and a kept parameter",
            f"{S3}?versionId=7&X-Amz-Security-Token=T1&{SIGV4.format(sig='a')}",
            f"{S3}?versionId=7&X-Amz-Security-Token=T2&{SIGV4.format(sig='b')}",
            f"{S3}?versionId=7",
        ),
        (
            "AWS SigV2",
            f"{S3}?AWSAccessKeyId=AKIA&Expires=1700000000&Signature=abc%3D",
            f"{S3}?AWSAccessKeyId=AKIA&Expires=1700003600&Signature=def%3D",
            S3,
        ),
        (
            "CloudFront canned",
            "https://d1.cloudfront.net/f.iso?Expires=1&Signature=s1~x_&Key-Pair-Id=K2",
            "https://d1.cloudfront.net/f.iso?Expires=2&Signature=s2~y_&Key-Pair-Id=K2",
            "https://d1.cloudfront.net/f.iso",
        ),
        (
            "CloudFront custom policy",
            "https://d1.cloudfront.net/f.iso?Policy=eyJ1&Signature=s1&Key-Pair-Id=K2",
            "https://d1.cloudfront.net/f.iso?Policy=eyJ2&Signature=s2&Key-Pair-Id=K2",
            "https://d1.cloudfront.net/f.iso",
        ),
        (
            "Google Cloud Storage V4",
            "https://storage.googleapis.com/b/o.bin?X-Goog-Algorithm=GOOG4-RSA-SHA256"
            "&X-Goog-Credential=sa%40p.iam%2F20240101%2Fauto%2Fstorage%2Fgoog4_request"
            "&X-Goog-Date=20240101T000000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host"
            "&X-Goog-Signature=0a1b",
            "https://storage.googleapis.com/b/o.bin?X-Goog-Algorithm=GOOG4-RSA-SHA256"
            "&X-Goog-Credential=sa%40p.iam%2F20240102%2Fauto%2Fstorage%2Fgoog4_request"
            "&X-Goog-Date=20240102T000000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host"
            "&X-Goog-Signature=2c3d",
            "https://storage.googleapis.com/b/o.bin",
        ),
        (
            "Google Cloud Storage V2",
            "https://storage.googleapis.com/b/o.bin?GoogleAccessId=sa&Expires=1&Signature=a",
            "https://storage.googleapis.com/b/o.bin?GoogleAccessId=sa&Expires=2&Signature=b",
            "https://storage.googleapis.com/b/o.bin",
        ),
        (
            "Azure SAS (service)",
            "https://acct.blob.core.windows.net/c/f.vhd?sp=r&st=2024-01-01T00:00:00Z"
            "&se=2024-01-02T00:00:00Z&spr=https&sv=2022-11-02&sr=b&sig=abc%2B%3D",
            "https://acct.blob.core.windows.net/c/f.vhd?sp=r&st=2024-02-01T00:00:00Z"
            "&se=2024-02-02T00:00:00Z&spr=https&sv=2022-11-02&sr=b&sig=def%2B%3D",
            "https://acct.blob.core.windows.net/c/f.vhd",
        ),
        (
            "Azure SAS (user delegation, with a snapshot kept)",
            "https://acct.blob.core.windows.net/c/f.vhd?snapshot=2024&sv=2022-11-02&sr=b&sp=r"
            "&skoid=o&sktid=t&skt=1&ske=2&sks=b&skv=2022-11-02&se=3&sig=one",
            "https://acct.blob.core.windows.net/c/f.vhd?snapshot=2024&sv=2022-11-02&sr=b&sp=r"
            "&skoid=o&sktid=t&skt=4&ske=5&sks=b&skv=2022-11-02&se=6&sig=two",
            "https://acct.blob.core.windows.net/c/f.vhd?snapshot=2024",
        ),
        (
            "Alibaba OSS V1",
            "https://b.oss-cn-hangzhou.aliyuncs.com/o?OSSAccessKeyId=k&Expires=1&Signature=a",
            "https://b.oss-cn-hangzhou.aliyuncs.com/o?OSSAccessKeyId=k&Expires=2&Signature=b",
            "https://b.oss-cn-hangzhou.aliyuncs.com/o",
        ),
        (
            "Alibaba OSS V4",
            "https://b.oss.example/o?x-oss-signature-version=OSS4-HMAC-SHA256&x-oss-date=1"
            "&x-oss-expires=60&x-oss-credential=c&x-oss-signature=a",
            "https://b.oss.example/o?x-oss-signature-version=OSS4-HMAC-SHA256&x-oss-date=2"
            "&x-oss-expires=60&x-oss-credential=c&x-oss-signature=b",
            "https://b.oss.example/o",
        ),
        (
            "Tencent COS",
            "https://b.cos.example/o?q-sign-algorithm=sha1&q-ak=k&q-sign-time=1;2&q-key-time=1;2"
            "&q-header-list=&q-url-param-list=&q-signature=a",
            "https://b.cos.example/o?q-sign-algorithm=sha1&q-ak=k&q-sign-time=3;4&q-key-time=3;4"
            "&q-header-list=&q-url-param-list=&q-signature=b",
            "https://b.cos.example/o",
        ),
        (
            "Akamai token",
            "https://dl.example/cuda.run?__token__=exp=1~acl=/*~hmac=aa",
            "https://dl.example/cuda.run?__token__=exp=2~acl=/*~hmac=bb",
            "https://dl.example/cuda.run",
        ),
        (
            "names compared percent-decoded and in any case",
            f"{S3}?x-amz-signature=a&X%2DAmz%2DDate=1",
            f"{S3}?X-AMZ-SIGNATURE=b&x-amz-date=2",
            S3,
        ),
    ],
)
def test_finding6_presigned_urls_differing_only_in_signatures_share_a_key(
    scheme, first, second, key
):
    assert cache_key(first) == cache_key(second) == key, scheme


@pytest.mark.parametrize(
    ("url", "key"),
    [
        # A scheme's generic names are dropped only beside its own signature.
        ("https://e.com/f?sp=racwdl&st=stable", "https://e.com/f?sp=racwdl&st=stable"),
        ("https://e.com/f?Expires=1&Signature=x", "https://e.com/f?Expires=1&Signature=x"),
        ("https://e.com/f?Policy=p", "https://e.com/f?Policy=p"),
        # Kept parameters stay byte-for-byte, in their order; empty ones go.
        ("https://e.com/f?b=2&a=%41+1&sig=x&c", "https://e.com/f?b=2&a=%41+1&c"),
        ("https://e.com/f?b=2&a=1", "https://e.com/f?b=2&a=1"),
        ("https://e.com/f?a=1&&b=2&", "https://e.com/f?a=1&b=2"),
        ("https://e.com/f?&", "https://e.com/f"),
        ("https://e.com/f?a=1;sig=2", "https://e.com/f?a=1;sig=2"),  # '&' separates, not ';'
    ],
)
def test_finding6_only_signatures_and_empty_parameters_leave_the_key(url, key):
    assert cache_key(url) == key


def test_finding6_parameter_order_is_kept_so_reordered_queries_are_different_keys():
    assert cache_key("https://e.com/f?a=1&b=2") != cache_key("https://e.com/f?b=2&a=1")


@pytest.mark.parametrize(
    "query",
    [
        "token=abc",
        "access_token=abc",
        "Access_Token=abc",
        "access%5Ftoken=abc",
        "private_token=glpat-x",
        "download-token=x",
        "api_key=k",
        "apiKey=k",
        "x-api-key=k",
        "key=AIza",
        "password=p",
        "passwd=p",
        "pass=p",
        "client_secret=s",
        "auth=x",
        "authorization=Bearer+x",
        "auth_key=x",
        "session=s",
        "sessionid=s",
        "JSESSIONID=s",
        "PHPSESSID=s",
        "sid=s",
        "jwt=eyJ",
        "id_token=eyJ",
        "license_key=x",
        "credential=x",
        "version=1&token=",
        "version=1&token",
        "a=1&refresh_token=r&sig=x",
    ],
)
def test_finding6_credential_like_parameters_make_a_url_uncacheable(query):
    for mode in keys.QUERY_MODES:
        with pytest.raises(InvalidURL, match="credentials") as raised:
            cache_key(f"https://vendor.example/f.tar?{query}", query=mode)
        assert "abc" not in str(raised.value) and "AIza" not in str(raised.value)


@pytest.mark.parametrize(
    "query",
    [
        # Signature parameters are not credentials: they are meant to travel with the URL.
        "X-Amz-Security-Token=FQoG&X-Amz-Signature=s",
        "X-Amz-Credential=AKIA%2Fx&X-Amz-Signature=s",
        "X-Goog-Credential=sa&X-Goog-Signature=s",
        "OSSAccessKeyId=k&security-token=t&Signature=s",
        "__token__=exp=1~hmac=2",
        "Key-Pair-Id=K&Signature=s&Expires=1",
        # Nor are names that merely look alike.
        "monkey=1",
        "keys=1",
        "author=me",
        "passive=1",
        "bypass=1",
        "sidebar=1",
    ],
)
def test_finding6_signature_and_lookalike_parameters_are_not_credentials(query):
    cache_key(f"https://vendor.example/f.tar?{query}")


def test_finding6_scheme_markers_are_among_their_parameters_and_none_is_a_credential():
    for scheme in keys.SIGNATURE_SCHEMES:
        assert scheme.markers <= scheme.params, scheme.name
    assert not any(keys.is_credential_param(name) for name in keys.SIGNATURE_PARAMS)
