"""plan() on real-world and edge-case command lines, one table row per command line.

Each row is (tool, command line, probes). In the command line, a word written `^URL` is a URL
the plan must rewrite to its cache URL (the `^` is not part of the input), `?URL` one it must
probe and leave as it is. `probes` is how many
URLs must be probed; 0 means the command line passes through untouched without any probe.
The fake probe answers "miss" for origins containing "/miss-", "unreachable" for "/down-",
"hit+content-disposition" for "/cd-", and "hit" for the rest.
"""

from __future__ import annotations

import shlex

import pytest
from withcache_shim.plan import explain
from withcache_shim.urls import cache_url, wget_name

SERVER = "http://cache.lab:3000"
NV = "https://developer.download.nvidia.com/compute/cuda"
ROCM = "https://repo.radeon.com"
GH = "https://github.com/acme/tool/releases/download/v1.2.3"
V = "https://vendor.example/dl"

CURL_CASES = [
    # Vendor install lines, as found in the wild.
    f"-fsSLO ^{NV}/repos/ubuntu2204/x86_64/cuda-keyring_1.1-1_all.deb",
    f"-fsSLo cuda.run ^{NV}/12.4.0/local_installers/cuda_12.4.0_550.54.14_linux.run",
    f"-fsSL ^{ROCM}/rocm/rocm.gpg.key",
    f"-fsSLo a.deb ^{ROCM}/amdgpu-install/6.0.2/ubuntu/jammy/amdgpu-install_6.0.60002-1_all.deb",
    f"-L -o tool.tgz ^{GH}/tool-linux-amd64.tar.gz",
    f"-LO ^{GH}/tool-linux-amd64.tar.gz",
    "-sSL ^https://install.python-poetry.org",
    "-fsSL ^https://ollama.com/install.sh",
    "-fsSL -o get_helm.sh ^https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-3",
    "-fsSL ^https://deb.nodesource.com/setup_20.x -o nodesource_setup.sh",
    "-fsSLo /usr/share/keyrings/docker.gpg ^https://download.docker.com/linux/ubuntu/gpg",
    "-O ^https://download.pytorch.org/whl/cu121/torch-2.2.1%2Bcu121-cp311-cp311-linux_x86_64.whl",
    "-L --retry 5 --retry-delay 2 -o go.tgz ^https://go.dev/dl/go1.22.1.linux-amd64.tar.gz",
    "--proto =https --tlsv1.2 -sSf https://sh.rustup.rs",  # the cache is plain http
    "--proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs",
    # Short-option bundles and attached values.
    f"-sSfLo out ^{V}/a.tar",
    f"-sSfLoout ^{V}/a.tar",
    f"-oout ^{V}/a.tar",
    f"-Lo- ^{V}/a.tar",
    f"-m30 -sS ^{V}/a.tar",
    f"-#L ^{V}/a.tar",
    f"-vkL ^{V}/a.tar",
    # An option's value is never the URL, even when it looks like one.
    "-x http://proxy:3128 ^https://vendor.example/file",
    f"-e https://referer.example/page ^{V}/a.tar",
    f"--referer https://referer.example/page ^{V}/a.tar",
    f"-o https://looks-like-a-url ^{V}/a.tar",
    f"-w '%{{url_effective}}' -s -o /dev/null ^{V}/a.tar",
    f"--doh-url https://doh.example/dns-query {V}/a.tar",
    f"--noproxy https://x.example ^{V}/a.tar",
    f"-H 'Referer: https://x.example/' ^{V}/a.tar",
    # --url and --.
    f"--url ^{V}/a.tar",
    f"-sS --url ^{V}/a.tar -o a.tar",
    f"--url={V}/a.tar",  # curl has no --opt=value: an unknown option
    f"-s -- ^{V}/a.tar",
    f"-- -o {V}/a.tar",  # after --, "-o" is a URL, and not an http one
    # Options after the URL still count.
    f"^{V}/a.tar -fsSL -o a.tar",
    f"{V}/a.tar -d x=1",
    # Several URLs: each is probed, each hit rewritten.
    f"-O ^{V}/a.tar -O ^{V}/b.tar",
    f"-O ^{V}/a.tar -O {V}/miss-b.tar",
    f"{V}/miss-a.tar ^{V}/b.tar",
    f"-o a ^{V}/a.tar --next -o b ^{V}/b.tar",
    f"-o a ^{V}/a.tar -: -o b ^{V}/b.tar",
    f"--parallel -O ^{V}/a.tar -O ^{V}/b.tar",
    f"--remote-name-all ^{V}/a.tar ^{V}/b.tar",
    # Probing stops at the first unreachable answer: the host is down for all of them.
    f"{V}/down-a.tar {V}/b.tar",
    f"^{V}/a.tar {V}/down-b.tar {V}/c.tar",
    # Plain download options that keep the rewrite.
    f"-I ^{V}/a.tar",
    f"--head ^{V}/a.tar",
    f"-X GET ^{V}/a.tar",
    f"-XHEAD ^{V}/a.tar",
    f"--request GET ^{V}/a.tar",
    f"-H 'Accept: application/octet-stream' ^{V}/a.tar",
    f"-A 'my-agent/1.0' ^{V}/a.tar",
    f"-C - -o a.tar ^{V}/a.tar",
    f"-r 0-1023 ^{V}/a.tar",
    f"-z a.tar -o a.tar ^{V}/a.tar",
    f"--limit-rate 1M ^{V}/a.tar",
    f"--connect-timeout 5 --max-time 600 ^{V}/a.tar",
    f"--compressed ^{V}/a.tar",
    f"-k ^{V}/a.tar",
    f"--cacert /etc/ssl/ca.pem ^{V}/a.tar",
    f"--http1.1 ^{V}/a.tar",
    f"--http2 ^{V}/a.tar",
    f"--tlsv1.3 ^{V}/a.tar",
    f"--create-dirs -o x/y/a.tar ^{V}/a.tar",
    f"--output-dir /tmp -O ^{V}/a.tar",
    f"-R -O ^{V}/a.tar",
    f"--no-progress-meter -O ^{V}/a.tar",
    f"--no-silent ^{V}/a.tar",
    f"--no-netrc ^{V}/a.tar",
    f"--no-remote-header-name -O ^{V}/a.tar",
    f"-c jar.txt ^{V}/a.tar",
    f"--trace-ascii - ^{V}/a.tar",
    f"--libcurl code.c ^{V}/a.tar",
    f"--stderr err.txt ^{V}/a.tar",
    f"--fail-with-body ^{V}/a.tar",
    f"--etag-save etag.txt ^{V}/a.tar",
    f"--proto-redir =https ^{V}/a.tar",
    f"--proto -all,+http,+https ^{V}/a.tar",
    f"--proto https ^{V}/a.tar",
    f"--proto =http,https ^{V}/a.tar",
    f"--proto =https --proto +http ^{V}/a.tar",
    f"-g -O '^{V}/a[1].tar'",
    f"--globoff '^{V}/a{{1}}.tar'",
    f"-G ^{V}/a.tar",
    f"-: ^{V}/a.tar",
    # curl 8.x options.
    f"--ca-native ^{V}/a.tar",
    f"--follow ^{V}/a.tar",
    f"--out-null ^{V}/a.tar",
    f"--skip-existing -O ^{V}/a.tar",
    f"--variable name=value ^{V}/a.tar",
    f"--ech true ^{V}/a.tar",
    f"--mptcp ^{V}/a.tar",
    f"--ip-tos CS1 ^{V}/a.tar",
    f"--trace-config all ^{V}/a.tar",
    f"--expand-url '{{{{u}}}}' {V}/a.tar",
    f"--expand-output '{{{{name}}}}' {V}/a.tar",
    f"--expand-header 'X: {{{{h}}}}' {V}/a.tar",
    f"--dump-ca-embed {V}/a.tar",
    f"--no-ca-native {V}/a.tar",  # not known to be negatable: unknown
    # Bodies, uploads and methods pass through.
    f"-d x=1 {V}/a.tar",
    f"-dx=1 {V}/a.tar",
    f"--data-binary @file {V}/a.tar",
    f"--data-raw x {V}/a.tar",
    f"--data-urlencode q=a {V}/a.tar",
    f"--json '{{}}' {V}/a.tar",
    f"-F file=@a.tar {V}/upload",
    f"--form-string a=b {V}/upload",
    f"-T a.tar {V}/upload/",
    f"--upload-file a.tar {V}/upload/",
    f"--url-query a=b {V}/a.tar",
    f"-G -d q=1 {V}/search",
    f"-X POST {V}/a.tar",
    f"-XPOST {V}/a.tar",
    f"--request PUT {V}/a.tar",
    f"-X get {V}/a.tar",
    f"--request-target '*' {V}/a.tar",
    # Credentials and cookies pass through.
    f"-u user:secret {V}/a.tar",
    f"-uuser:secret {V}/a.tar",
    f"--user user:secret {V}/a.tar",
    f"--oauth2-bearer tok {V}/a.tar",
    f"-H 'Authorization: Bearer tok' {V}/a.tar",
    f"-H 'authorization: token tok' {V}/a.tar",
    f"--header 'Cookie: a=b' {V}/a.tar",
    f"-H 'Host: other.example' {V}/a.tar",
    f"-H @headers.txt {V}/a.tar",
    f"-b cookies.txt {V}/a.tar",
    f"--cookie 'a=b' {V}/a.tar",
    f"-n {V}/a.tar",
    f"--netrc-file ~/.netrc-x {V}/a.tar",
    f"--netrc-optional {V}/a.tar",
    f"-E client.pem {V}/a.tar",
    f"--key client.key {V}/a.tar",
    f"--aws-sigv4 aws:amz:us-east-1:s3 {V}/a.tar",
    f"--negotiate -u : {V}/a.tar",
    "https://user:secret@vendor.example/dl/a.tar",
    # Credential-like query parameters pass through (issue 13, finding 6); signatures do not.
    f"-fsSLo a.tar '{V}/a.tar?access_token=abc'",
    f"-o a.tar '{V}/a.tar?v=1&Private-Token=x'",
    f"-o a.tar '{V}/a.tar?api%5Fkey=x'",
    f"-o a.tar '{V}/a.tar?API+Key=x&apikey=y'",
    f"-o a.tar '{V}/a.tar?key=AIza'",
    f"-o a.tar '{V}/a.tar?password'",
    f"-o a.tar '{V}/a.tar?JSESSIONID=1#frag'",
    f"-O {V}/a.tar -O '{V}/b.tar?token=t'",  # the whole command line, as for user:pw@
    f"-o a.tar '^{V}/a.tar?X-Amz-Security-Token=t&X-Amz-Credential=c&X-Amz-Signature=s'",
    f"-o a.tar '^{V}/a.tar?__token__=exp=1~hmac=2&OSSAccessKeyId=k&security-token=t'",
    f"-o a.tar '^{V}/a.tar?monkey=1&author=me&sidebar=1&passive=%ZZ&key%'",
    f"-o a.tar '^{V}/a.tar#access_token=abc'",
    f"-o a.tar '^{V}/a.tar?v=1%26token%3Dx'",
    # Config files.
    f"-K curl.cfg {V}/a.tar",
    f"--config curl.cfg {V}/a.tar",
    # Ways of reaching the network the probe does not share.
    # Proxies: the probe takes the tool's route (see test_route.py); one it cannot take
    # passes through.
    f"--proxy http://proxy:3128 ^{V}/a.tar",
    f"-x socks5h://proxy:1080 {V}/a.tar",
    f"-x https://proxy:3128 {V}/a.tar",
    f"-x http://user:pw@proxy:3128 {V}/a.tar",
    f"-x socks5://proxy:1080 --noproxy cache.lab ^{V}/a.tar",
    f"-x '' ^{V}/a.tar",
    f"--socks5-hostname proxy:1080 {V}/a.tar",
    f"--preproxy socks5://p:1080 {V}/a.tar",
    f"--unix-socket /run/x.sock {V}/a.tar",
    f"--resolve vendor.example:443:10.0.0.1 {V}/a.tar",
    f"--connect-to ::mirror:443 {V}/a.tar",
    f"--interface eth1 {V}/a.tar",
    f"-4 {V}/a.tar",
    f"-6 {V}/a.tar",
    f"--http2-prior-knowledge {V}/a.tar",
    f"--http3-only {V}/a.tar",
    f"--haproxy-protocol {V}/a.tar",
    # File named from the origin's headers.
    # -J names the file from Content-Disposition: a hit counts only when the host serves the
    # origin's ("/cd-" origins answer hit+content-disposition); a plain hit stays (?).
    f"-J -O ?{V}/a.tar",
    f"-OJ ?{V}/a.tar",
    f"-OJ ^{V}/cd-a.tar",
    f"-O ^{V}/cd-a.tar",
    f"-OJ ^{V}/cd-a.tar -J -O ?{V}/b.tar",
    # URLs that are not plain http(s).
    "ftp://ftp.example/pub/a.tar",
    "file:///etc/hostname",
    "vendor.example/dl/a.tar",
    f"{V}/a.tar ftp://ftp.example/b.tar",
    f"-O '{V}/a[1-3].tar'",
    f"'{V}/{{a,b}}.tar'",
    f"-g -: '{V}/a[1].tar'",  # -g belongs to the first transfer only
    "''",
    # Informational runs.
    "-h",
    "--help all",
    "-V",
    "--version",
    "-M",
    # What curl itself would reject: never guessed.
    f"--frobnicate {V}/a.tar",
    f"--verb {V}/a.tar",
    f"--max-time=3 {V}/a.tar",
    f"--no-output {V}/a.tar",
    f"- {V}/a.tar",
    f"-j% {V}/a.tar",
    f"{V}/a.tar -o",
    f"--metalink {V}/a.tar",
    "",
    "-sS",
    # Nothing to probe: the URL already points at the cache, or -O lacks a file name.
    f"{SERVER}/b/aHR0cHM6Ly92/a.tar",
    f"-O {V}/",
    "--remote-name-all https://vendor.example",
]

WGET_CASES = [
    # Vendor install lines.
    f"^{NV}/12.4.0/local_installers/cuda_12.4.0_550.54.14_linux.run",
    f"-q ^{ROCM}/amdgpu-install/6.0.2/ubuntu/jammy/amdgpu-install_6.0.60002-1_all.deb",
    "^https://us.download.nvidia.com/XFree86/Linux-x86_64/550.54.14/NVIDIA-Linux-x86_64-550.54.14.run",
    "^https://www.mellanox.com/downloads/DOCA/DOCA_v2.6.0/host/doca-host_2.6.0-0.0.1_amd64.deb",
    "-qO- ^https://get.docker.com",
    "-qO - ^https://apt.llvm.org/llvm-snapshot.gpg.key",
    "^https://repo.anaconda.com/miniconda/Miniconda3-latest-Linux-x86_64.sh -O ~/miniconda.sh",
    f"-c ^{V}/ubuntu-22.04.4-live-server-amd64.iso",
    f"--no-verbose --show-progress -O /tmp/a.tar ^{V}/a.tar",
    f"-nv ^{V}/a.tar",
    f"-nc ^{V}/a.tar",
    f"-N ^{V}/a.tar",
    f"-Oout ^{V}/a.tar",
    f"--output-document=out ^{V}/a.tar",
    f"--output-document out ^{V}/a.tar",
    f"-P /tmp/dl ^{V}/a.tar",
    f"--directory-prefix=/tmp/dl ^{V}/a.tar",
    f"-t 3 -T 10 ^{V}/a.tar",
    f"--tries=3 --timeout=10 ^{V}/a.tar",
    f"--progress=dot:giga ^{V}/a.tar",
    f"--no-check-certificate ^{V}/a.tar",
    f"--user-agent=agent/1 ^{V}/a.tar",
    f"-U agent/1 ^{V}/a.tar",
    f"--referer=https://ref.example/ ^{V}/a.tar",
    f"--referer https://ref.example/ ^{V}/a.tar",
    f"--header='Accept: application/octet-stream' ^{V}/a.tar",
    f"--limit-rate=1m ^{V}/a.tar",
    f"-S ^{V}/a.tar",
    f"--spider ^{V}/a.tar",
    f"--max-redirect=5 ^{V}/a.tar",
    f"--max-redirect 5 ^{V}/a.tar",
    f"--retry-connrefused --waitretry=1 ^{V}/a.tar",
    f"--quiet ^{V}/a.tar",
    f"-b ^{V}/a.tar",
    f"-o wget.log ^{V}/a.tar",
    f"-a wget.log ^{V}/a.tar",
    f"-d ^{V}/a.tar",  # debug in wget, not data
    f"--method=GET ^{V}/a.tar",
    f"--method=get ^{V}/a.tar",
    f"--method HEAD ^{V}/a.tar",
    f"--save-cookies jar.txt ^{V}/a.tar",
    f"--no-config ^{V}/a.tar",
    f"--recursive=off ^{V}/a.tar",
    f"--no-recursive ^{V}/a.tar",
    f"-np ^{V}/a.tar",
    f"--no-parent ^{V}/a.tar",
    f"-nH -nd ^{V}/a.tar",
    f"--cut-dirs=2 ^{V}/a.tar",
    f"-l 1 ^{V}/a.tar",
    f"-Y off ^{V}/a.tar",
    f"-Yon ^{V}/a.tar",
    f"--no-proxy ^{V}/a.tar",
    f"--https-only ^{V}/a.tar",
    f"--warc-file=arch ^{V}/a.tar",
    f"--start-pos=10 ^{V}/a.tar",
    f"--no-clobber ^{V}/a.tar",
    f"--content-disposition=off ^{V}/a.tar",
    f"-qc --show-progress ^{V}/a.tar",
    # Options after the URL (getopt permutes).
    f"^{V}/a.tar -O out",
    f"^{V}/a.tar --tries=2",
    f"^{V}/a.tar -e robots=off",
    # -- ends the options.
    f"-q -- ^{V}/a.tar",
    f"-- -O {V}/a.tar",
    # Several URLs: each probed, each hit rewritten.
    f"^{V}/a.tar ^{V}/b.tar",
    f"^{V}/a.tar {V}/miss-b.tar",
    f"-O all.tar ^{V}/a.tar ^{V}/b.tar",
    f"-w 1 ^{V}/a.tar ^{V}/b.tar",
    f"{V}/down-a.tar {V}/b.tar",
    # Without -O the cache URL's name makes wget save what it would from the origin
    # (index.html, a query string): see urls.wget_name.
    f"^{V}/",
    "^https://vendor.example",
    f"'^{V}/get?id=3'",
    f"^{V}/a.tar '^{V}/get?id=3'",
    f"-O get.tar '^{V}/get?id=3'",
    f"-O index.html ^{V}/",
    f"'^{V}/get?' '^{V}/a%20b?x=%2F/y#frag'",
    # ... unless options change how wget names files, or the path ends in a dot segment.
    f"--restrict-file-names=windows '{V}/get?id=3'",
    f"--default-page=start.html {V}/",
    f"--no-iri {V}/a.tar",
    f"--remote-encoding=latin1 {V}/a.tar",
    f"{V}/..",
    f"-O x ^{V}/..",
    f"'{V}/get?x=a%0Ab'",  # the host routes no name with a control byte
    f"'^{V}/get?x=a%7Eb%20'",
    # Bodies and methods.
    f"--post-data=x=1 {V}/a.tar",
    f"--post-file=body.json {V}/a.tar",
    f"--method=PUT --body-data=x {V}/a.tar",
    f"--method=POST {V}/a.tar",
    f"--body-file=x --method=PATCH {V}/a.tar",
    # Credentials and cookies.
    f"--user=u {V}/a.tar",
    f"--password=p {V}/a.tar",
    f"--http-user=u --http-password=p {V}/a.tar",
    f"--ask-password {V}/a.tar",
    f"--header='Authorization: Bearer tok' {V}/a.tar",
    f"--header 'Cookie: a=b' {V}/a.tar",
    f"--header=Host:other.example {V}/a.tar",
    f"--load-cookies cookies.txt {V}/a.tar",
    f"--certificate=client.pem {V}/a.tar",
    f"--private-key=client.key {V}/a.tar",
    "https://user:pw@vendor.example/dl/a.tar",
    f"-O a.tar '{V}/a.tar?access_token=abc'",
    f"-O a.tar '{V}/a.tar?sessionid=1&sig=s'",
    f"-qO- '^{V}/a.tar?sig=s&sv=1&se=2'",
    # Input and config files, executed commands.
    "-i urls.txt",
    "-i-",
    f"--input-file=urls.txt {V}/a.tar",
    f"-e robots=off ^{V}/a.tar",
    f"--execute=use_proxy=off ^{V}/a.tar",
    f"-e 'Use-Proxy = no' -e http_proxy=socks5://p:1 ^{V}/a.tar",
    f"-e http_proxy=socks5://p:1 {V}/a.tar",
    f"-e https_proxy=socks5://p:1 ^{V}/a.tar",
    f"-e no_proxy=cache.lab -e http_proxy=socks5://p:1 ^{V}/a.tar",
    f"-e timestamping=on {V}/a.tar",
    f"-e 'robots' {V}/a.tar",
    f"--config=wgetrc {V}/a.tar",
    # Recursion, mirroring, link conversion.
    f"-r {V}/",
    f"--recursive {V}/a.tar",
    f"-m {V}/",
    f"-p {V}/a.html",
    f"-k {V}/a.html",
    f"-rnp -l2 {V}/",
    # The saved name would come from more than the URL's basename.
    f"-x {V}/a.tar",
    f"--force-directories {V}/a.tar",
    f"--protocol-directories {V}/a.tar",
    f"--content-disposition ?{V}/a.tar",
    f"--content-disposition ^{V}/cd-a.tar",
    f"--content-disposition '^{V}/cd-get?id=3'",
    f"--trust-server-names {V}/a.tar",
    f"-E {V}/a.tar",
    # Ways of reaching the network the probe does not share.
    f"-4 {V}/a.tar",
    f"-6 {V}/a.tar",
    f"--inet6-only {V}/a.tar",
    f"--bind-address=10.0.0.2 {V}/a.tar",
    # Not http(s), or not a URL at all.
    "ftp://ftp.example/pub/a.tar",
    "vendor.example/dl/a.tar",
    "-",
    f"-q {V}/a.tar ftp://ftp.example/b.tar",
    # Informational.
    "-h",
    "--help",
    "-V",
    "--version",
    # What wget itself would reject, or accept only by abbreviation: never guessed.
    f"--output-doc=out {V}/a.tar",
    f"--tri=3 {V}/a.tar",
    f"--frobnicate {V}/a.tar",
    f"--spider=x=1 --no-verbose=on {V}/a.tar",
    f"-C {V}/a.tar",
    f"{V}/a.tar -O",
    "",
    f"{SERVER}/b/aHR0cHM6Ly92/a.tar",
]


def _probes(words: list[str]) -> int:
    """Hits plus misses, up to and including the first unreachable answer."""
    count = 0
    for word in words:
        if word.startswith(("^", "?")) or "/miss-" in word or "/down-" in word:
            count += 1
            if "/down-" in word:
                break
    return count


ROWS = [
    (tool, line, _probes(shlex.split(line)))
    for tool, lines in (("curl", CURL_CASES), ("wget", WGET_CASES))
    for line in lines
]


def test_the_table_has_at_least_150_rows() -> None:
    assert len(ROWS) >= 150


@pytest.mark.parametrize(("tool", "line", "probes"), ROWS, ids=[f"{t}:{c}" for t, c, _ in ROWS])
def test_plan(tool: str, line: str, probes: int, fake_bin, probe) -> None:
    words = shlex.split(line)
    args = [w[1:] if w.startswith(("^", "?")) else w for w in words]
    named = tool == "curl" or any(
        w in ("-O", "-qO-", "-qO") or w.startswith(("-O", "--output-d")) for w in words
    )
    want = [
        (cache_url(SERVER, w[1:]) if named else cache_url(SERVER, w[1:], wget_name(w[1:])))
        if w.startswith("^")
        else w[1:]
        if w.startswith("?")
        else w
        for w in words
    ]
    env = {"PATH": str(fake_bin), "WITHCACHE_SERVER": "cache.lab:3000"}

    result = explain(tool, [f"{tool}withcache", *args], env, probe)

    assert result.real == str(fake_bin / tool)
    assert result.argv == [result.real, *want]
    assert len(probe.asked) == probes, result.reason
    if probes == 0:
        assert result.reason
