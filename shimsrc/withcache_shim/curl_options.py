"""curl's command-line options as data: every long name, its kind, and the short letters.

The 7.88 names and kinds were read off the installed curl 7.88.1 (`curl --help all`, plus the
hidden names its parser also accepts, each checked by what curl answers for `--NAME` and
`--no-NAME`); the names curl 8.x added carry the version that added them. Kinds:

- VALUE: takes the next argument (or, for a short letter, the rest of the bundle);
- BOOL:  takes nothing and may be negated as `--no-NAME`;
- FLAG:  takes nothing and may not be negated.

curl has no `--name=value` syntax. curl 7.x also accepts unique prefixes of long names; 8.x does
not, and neither does this table: an abbreviation is an unknown option, and unknown means the
shim passes the command line through untouched.
"""

VALUE = "value"
BOOL = "bool"
FLAG = "flag"


def _words(text: str, kind: str) -> dict[str, str]:
    return dict.fromkeys(text.split(), kind)


LONG: dict[str, str] = {
    **_words(
        """
        abstract-unix-socket alt-svc aws-sigv4 cacert capath cert cert-type ciphers config
        connect-timeout connect-to continue-at cookie cookie-jar create-file-mode crlfile curves
        data data-ascii data-binary data-raw data-urlencode delegation dns-interface
        dns-ipv4-addr dns-ipv6-addr dns-servers doh-url dump-header egd-file engine etag-compare
        etag-save expect100-timeout form form-string ftp-account ftp-alternative-to-user
        ftp-method ftp-port ftp-ssl-ccc-mode happy-eyeballs-timeout-ms header hostpubmd5
        hostpubsha256 hsts interface json keepalive-time key key-type krb krb4 libcurl
        limit-rate local-port login-options mail-auth mail-from mail-rcpt max-filesize
        max-redirs max-time netrc-file noproxy oauth2-bearer output output-dir parallel-max pass
        pinnedpubkey preproxy proto proto-default proto-redir proxy proxy-cacert proxy-capath
        proxy-cert proxy-cert-type proxy-ciphers proxy-crlfile proxy-header proxy-key
        proxy-key-type proxy-pass proxy-pinnedpubkey proxy-service-name proxy-tls13-ciphers
        proxy-tlsauthtype proxy-tlspassword proxy-tlsuser proxy-user proxy1.0 pubkey quote
        random-file range rate referer request request-target resolve retry retry-delay
        retry-max-time sasl-authzid service-name socks4 socks4a socks5 socks5-gssapi-service
        socks5-hostname speed-limit speed-time stderr telnet-option tftp-blksize time-cond
        tls-max tls13-ciphers tlsauthtype tlspassword tlsuser trace trace-ascii unix-socket
        upload-file url url-query user user-agent write-out
        """,
        VALUE,
    ),
    # Several of these are the positive halves of names that --help lists only negated
    # (--no-buffer, --no-clobber, --no-keepalive, --no-progress-meter, --no-sessionid, ...).
    **_words(
        """
        alpn anyauth append basic buffer cert-status clobber compressed compressed-ssh
        create-dirs crlf digest disable disable-eprt disable-epsv disallow-username-in-url
        doh-cert-status doh-insecure eprt epsv fail fail-early fail-with-body false-start
        form-escape ftp-create-dirs ftp-pasv ftp-pret ftp-skip-pasv-ip ftp-ssl ftp-ssl-ccc
        ftp-ssl-control ftp-ssl-reqd get globoff haproxy-protocol head help http0.9
        ignore-content-length include insecure junk-session-cookies keepalive list-only
        location location-trusted mail-rcpt-allowfails manual metalink negotiate netrc
        netrc-optional npn ntlm ntlm-wb parallel parallel-immediate path-as-is post301 post302
        post303 progress-bar progress-meter proxy-anyauth proxy-basic proxy-digest
        proxy-insecure proxy-negotiate proxy-ntlm proxy-ssl-allow-beast
        proxy-ssl-auto-client-cert proxytunnel raw remote-header-name remote-name
        remote-name-all remote-time remove-on-error retry-all-errors retry-connrefused sasl-ir
        sessionid show-error silent socks5-basic socks5-gssapi socks5-gssapi-nec ssl
        ssl-allow-beast ssl-auto-client-cert ssl-no-revoke ssl-reqd ssl-revoke-best-effort
        styled-output suppress-connect-headers tcp-fastopen tcp-nodelay test-event
        tftp-no-options tr-encoding trace-time use-ascii verbose version xattr
        """,
        BOOL,
    ),
    **_words(
        """
        http1.0 http1.1 http2 http2-prior-knowledge http3 http3-only ipv4 ipv6 next
        proxy-tlsv1 sslv2 sslv3 tlsv1 tlsv1.0 tlsv1.1 tlsv1.2 tlsv1.3
        """,
        FLAG,
    ),
}

# Names added by curl 8.x, with the release that added each. Their flags are entered as FLAG
# even where 8.x may allow a --no- form: refusing a negation only costs a pass-through.
SINCE_8: dict[str, tuple[str, str]] = {
    "proxy-http2": (FLAG, "8.1.0"),
    "ca-native": (FLAG, "8.2.0"),
    "proxy-ca-native": (FLAG, "8.2.0"),
    "trace-ids": (FLAG, "8.2.0"),
    "haproxy-clientip": (VALUE, "8.2.0"),
    "trace-config": (VALUE, "8.3.0"),
    "variable": (VALUE, "8.3.0"),
    "ipfs-gateway": (VALUE, "8.4.0"),
    "mptcp": (FLAG, "8.7.0"),
    "ech": (VALUE, "8.8.0"),
    "ip-tos": (VALUE, "8.9.0"),
    "vlan-priority": (VALUE, "8.9.0"),
    "keepalive-cnt": (VALUE, "8.9.0"),
    "skip-existing": (FLAG, "8.10.0"),
    "dump-ca-embed": (FLAG, "8.10.0"),
    "tls-earlydata": (FLAG, "8.11.0"),
    "ssl-sessions": (VALUE, "8.12.0"),
    "upload-flags": (VALUE, "8.13.0"),
    "sigalgs": (VALUE, "8.14.0"),
    "follow": (FLAG, "8.16.0"),
    "out-null": (FLAG, "8.16.0"),
    "parallel-max-host": (VALUE, "8.16.0"),
    "knownhosts": (VALUE, "8.17.0"),
}
LONG.update((name, kind) for name, (kind, _since) in SINCE_8.items())

# curl 8.3 lets any option that takes a value be written `--expand-NAME` to expand {{variables}}
# in that value first.
EXPAND_PREFIX = "expand-"

SHORT: dict[str, str] = {
    "0": "http1.0",
    "1": "tlsv1",
    "2": "sslv2",
    "3": "sslv3",
    "4": "ipv4",
    "6": "ipv6",
    ":": "next",
    "#": "progress-bar",
    "a": "append",
    "A": "user-agent",
    "b": "cookie",
    "B": "use-ascii",
    "c": "cookie-jar",
    "C": "continue-at",
    "d": "data",
    "D": "dump-header",
    "e": "referer",
    "E": "cert",
    "f": "fail",
    "F": "form",
    "g": "globoff",
    "G": "get",
    "h": "help",
    "H": "header",
    "i": "include",
    "I": "head",
    "j": "junk-session-cookies",
    "J": "remote-header-name",
    "k": "insecure",
    "K": "config",
    "l": "list-only",
    "L": "location",
    "m": "max-time",
    "M": "manual",
    "n": "netrc",
    "N": "buffer",
    "o": "output",
    "O": "remote-name",
    "p": "proxytunnel",
    "P": "ftp-port",
    "q": "disable",
    "Q": "quote",
    "r": "range",
    "R": "remote-time",
    "s": "silent",
    "S": "show-error",
    "t": "telnet-option",
    "T": "upload-file",
    "u": "user",
    "U": "proxy-user",
    "v": "verbose",
    "V": "version",
    "w": "write-out",
    "x": "proxy",
    "X": "request",
    "y": "speed-time",
    "Y": "speed-limit",
    "z": "time-cond",
    "Z": "parallel",
}


def short_takes_value(letter: str) -> bool:
    """A short letter takes a value exactly when its long name does (curl has no exception)."""
    return LONG[SHORT[letter]] == VALUE
