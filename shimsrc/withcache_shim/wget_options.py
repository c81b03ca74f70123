"""GNU wget's command-line options as data: every long name getopt knows, and the short letters.

Read off the installed wget 1.21.3: getopt lists every long name when asked for an ambiguous
prefix, and each name's kind is what getopt answers for `--NAME` and `--NAME=x`. Kinds:

- VALUE:    requires a value, as `--NAME=v` or `--NAME v`;
- OPTIONAL: takes a value only when written `--NAME=v` (wget's booleans: `--spider=off`);
- FLAG:     takes nothing.

wget's `--no-NAME` forms are real entries in its getopt table, so they are listed here as they
are, not derived. getopt would also accept unique prefixes of long names; this table does not
model that, so an abbreviation is an unknown option and the command line passes through.
"""

VALUE = "value"
OPTIONAL = "optional"
FLAG = "flag"


def _words(text: str, kind: str) -> dict[str, str]:
    return dict.fromkeys(text.split(), kind)


LONG: dict[str, str] = {
    **_words(
        """
        accept accept-regex append-output base bind-address body-data body-file
        ca-certificate ca-directory certificate certificate-type ciphers compression config
        connect-timeout crl-file cut-dirs default-page directory-prefix dns-timeout domains
        dot-style egd-file exclude-directories exclude-domains execute follow-tags
        ftp-password ftp-user header hsts-file http-passwd http-password http-user ignore-tags
        include-directories input-file level limit-rate load-cookies local-encoding
        max-redirect method no output-document output-file password pinnedpubkey post-data
        post-file prefer-family private-key private-key-type progress proxy-passwd
        proxy-password proxy-user proxy__compat quota random-file read-timeout referer
        regex-type reject reject-regex rejected-log remote-encoding retry-on-http-error
        save-cookies secure-protocol start-pos timeout tries use-askpass user user-agent wait
        waitretry warc-dedup warc-file warc-header warc-max-size warc-tempdir
        """,
        VALUE,
    ),
    **_words(
        """
        adjust-extension ask-password auth-no-challenge background backup-converted backups
        cache check-certificate clobber content-disposition content-on-error continue
        convert-file-only convert-links cookies debug delete-after directories dns-cache
        follow-ftp force-directories force-html ftps-clear-data-connection
        ftps-fallback-to-ftp ftps-implicit ftps-resume-ssl glob host-directories hsts
        html-extension htmlify http-keep-alive https-only if-modified-since ignore-case
        ignore-length inet4-only inet6-only iri keep-badhash keep-session-cookies mirror netrc
        no-clobber no-config no-parent page-requisites parent passive-ftp
        preserve-permissions protocol-directories proxy quiet random-wait recursive relative
        remove-listing report-speed restrict-file-names retr-symlinks retry-connrefused
        retry-on-host-error save-headers server-response show-progress span-hosts spider
        strict-comments timestamping trust-server-names unlink use-server-timestamps verbose
        warc-cdx warc-compression warc-digests warc-keep-log xattr
        """,
        OPTIONAL,
    ),
    **_words(
        """
        dont-remove-listing help version no-adjust-extension no-ask-password
        no-auth-no-challenge no-background no-backup-converted no-backups no-cache
        no-check-certificate no-content-disposition no-content-on-error no-continue
        no-convert-file-only no-convert-links no-cookies no-debug no-delete-after
        no-directories no-dns-cache no-follow-ftp no-force-directories no-force-html
        no-ftps-clear-data-connection no-ftps-fallback-to-ftp no-ftps-implicit
        no-ftps-resume-ssl no-glob no-host-directories no-hsts no-html-extension no-htmlify
        no-http-keep-alive no-https-only no-if-modified-since no-ignore-case no-ignore-length
        no-inet4-only no-inet6-only no-iri no-keep-badhash no-keep-session-cookies no-mirror
        no-netrc no-no-clobber no-no-config no-no-parent no-page-requisites no-passive-ftp
        no-preserve-permissions no-protocol-directories no-proxy no-quiet no-random-wait
        no-recursive no-relative no-remove-listing no-report-speed no-restrict-file-names
        no-retr-symlinks no-retry-connrefused no-retry-on-host-error no-save-headers
        no-server-response no-show-progress no-span-hosts no-spider no-strict-comments
        no-timestamping no-trust-server-names no-unlink no-use-server-timestamps no-verbose
        no-warc-cdx no-warc-compression no-warc-digests no-warc-keep-log no-xattr
        """,
        FLAG,
    ),
}

# Names that exist only in wget builds with optional libraries (metalink, c-ares), absent
# from Debian's 1.21.3. Known here so that using one is recognised (and passed through).
OPTIONAL_BUILD: dict[str, str] = {
    "input-metalink": VALUE,
    "metalink-index": VALUE,
    "metalink-over-http": OPTIONAL,
    "no-metalink-over-http": FLAG,
    "preferred-location": VALUE,
    "bind-dns-address": VALUE,
    "dns-servers": VALUE,
}
LONG.update(OPTIONAL_BUILD)

# letter -> (long name, takes a value). Stored rather than derived: `-Y` needs a value although
# its long form `--proxy` is an OPTIONAL boolean, and `-n` bundles its own letters (`-nv`).
SHORT: dict[str, tuple[str, bool]] = {
    "4": ("inet4-only", False),
    "6": ("inet6-only", False),
    "a": ("append-output", True),
    "A": ("accept", True),
    "b": ("background", False),
    "B": ("base", True),
    "c": ("continue", False),
    "d": ("debug", False),
    "D": ("domains", True),
    "e": ("execute", True),
    "E": ("adjust-extension", False),
    "F": ("force-html", False),
    "h": ("help", False),
    "H": ("span-hosts", False),
    "i": ("input-file", True),
    "I": ("include-directories", True),
    "k": ("convert-links", False),
    "K": ("backup-converted", False),
    "l": ("level", True),
    "L": ("relative", False),
    "m": ("mirror", False),
    "n": ("no", True),
    "N": ("timestamping", False),
    "o": ("output-file", True),
    "O": ("output-document", True),
    "p": ("page-requisites", False),
    "P": ("directory-prefix", True),
    "q": ("quiet", False),
    "Q": ("quota", True),
    "r": ("recursive", False),
    "R": ("reject", True),
    "S": ("server-response", False),
    "t": ("tries", True),
    "T": ("timeout", True),
    "U": ("user-agent", True),
    "v": ("verbose", False),
    "V": ("version", False),
    "w": ("wait", True),
    "x": ("force-directories", False),
    "X": ("exclude-directories", True),
    "Y": ("proxy", True),
}
