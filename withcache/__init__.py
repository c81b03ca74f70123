"""withcache: a URL-keyed cache-host for big vendor downloads (ccache for HTTP artifacts)."""

__version__ = "0.3.0.dev0"
