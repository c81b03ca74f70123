#!/usr/bin/env bash
# Refresh the operator UI's vendored front-end assets from their npm packages.
#
#   scripts/vendor-assets.sh
#
# `npm pack` fetches each pinned tarball (no node_modules tree); the one file the UI needs and
# the package's licence are copied into withcache/web/static/. Pages never load anything from
# another host, so these copies are all the UI has. Bump a version here, run, commit the result.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

HTMX=2.0.11  # the stable 2.x line; npm's `latest` for htmx.org is 4.x, which the UI is not for
PICO=2.1.1
STATIC=withcache/web/static
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "htmx.org@$HTMX" "@picocss/pico@$PICO" >/dev/null)
tar -xzf "$work/htmx.org-$HTMX.tgz" -C "$work" package/dist/htmx.min.js package/LICENSE
cp "$work/package/dist/htmx.min.js" "$STATIC/htmx.min.js"
cp "$work/package/LICENSE" "$STATIC/htmx.LICENSE"
rm -rf "$work/package"
tar -xzf "$work/picocss-pico-$PICO.tgz" -C "$work" package/css/pico.min.css package/LICENSE.md
cp "$work/package/css/pico.min.css" "$STATIC/pico.min.css"
cp "$work/package/LICENSE.md" "$STATIC/pico.LICENSE.md"
printf 'htmx.org %s (0BSD): htmx.min.js, htmx.LICENSE\n@picocss/pico %s (MIT): pico.min.css, pico.LICENSE.md\n' \
    "$HTMX" "$PICO" > "$STATIC/VERSIONS"
echo "vendored htmx.org $HTMX and @picocss/pico $PICO into $STATIC"
