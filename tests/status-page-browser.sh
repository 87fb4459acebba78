#!/bin/sh
# status-page-browser.sh - checks that the status page renders in a real
# browser: headless Chromium loads the page and its DOM must show the live
# counters, then a screenshot must come out.
#
#   status-page-browser.sh [-o DIR] [SNAPSHOT.json | http://HOST:PORT/]
#
# Without an argument the page is written for tests/vectors/status-snapshot.json
# by tests/status-page-render; a URL checks the page a daemon's http
# listener serves (only the sections are checked then, its counters being
# unknown here). -o DIR keeps the screenshots there: status-page.png
# (desktop width) and status-page-phone.png. Exits 77 (skipped) without
# chromium. PB_BUILD and PB_SRCDIR name the build and source trees (default:
# this script's parent directory).
set -u

here=$(cd "$(dirname "$0")/.." && pwd)
build=${PB_BUILD:-$here}
src=${PB_SRCDIR:-$here}

keep=
if [ "${1:-}" = "-o" ]; then
    [ $# -ge 2 ] || { echo "usage: $0 [-o DIR] [SNAPSHOT.json | URL]" >&2; exit 2; }
    keep=$2
    shift 2
fi
input=${1:-$src/tests/vectors/status-snapshot.json}

browser=
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then
        browser=$b
        break
    fi
done
if [ -z "$browser" ]; then
    echo "SKIP: no chromium installed (Debian: apt-get install chromium)"
    exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/status-page.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "FAIL: $*"
    exit 1
}

case $input in
http://*|https://*)
    url=$input
    printf '%s\n' 'id="summary"' 'id="workers"' 'id="listeners"' 'id="plugins"' \
        'id="routes"' 'id="metrics"' 'id="errors"' > "$tmp/expected"
    ;;
*)
    "$build/tests/status-page-render" "$input" > "$tmp/page.html" \
        || fail "cannot write the page for $input"
    url="file://$tmp/page.html"
    # Counters of the bundled snapshot: the message count, a plugin, a
    # worker's pid and messages, a queue's name from the plugin metrics,
    # a route, a latency estimate.
    printf '%s\n' '<dd>2578445</dd>' '<td>search</td>' '<td>48211</td>' '<td>1290344</td>' \
        '<td>emails</td>' '<td>8: text/json -&gt; search</td>' '<td>1.77 ms</td>' \
        > "$tmp/expected"
    ;;
esac

# Its own profile, so that runs side by side do not share one; the
# sandbox needs privileges a CI container (root) does not grant.
run_browser() {
    timeout 120 "$browser" --headless --no-sandbox --disable-gpu \
        --user-data-dir="$tmp/profile" --no-first-run --hide-scrollbars "$@" \
        2> "$tmp/browser.err"
}

run_browser --dump-dom "$url" > "$tmp/dom.html" \
    || { cat "$tmp/browser.err"; fail "$browser --dump-dom failed"; }
grep -q '<h1>Plugboard</h1>' "$tmp/dom.html" \
    || { head -c 2000 "$tmp/dom.html"; fail "no page in the DOM"; }
while IFS= read -r want; do
    grep -qF "$want" "$tmp/dom.html" || fail "the DOM lacks $want"
done < "$tmp/expected"

shots=${keep:-$tmp}
mkdir -p "$shots" || exit 1
run_browser --window-size=1280,1500 --screenshot="$shots/status-page.png" "$url" \
    || { cat "$tmp/browser.err"; fail "the desktop screenshot failed"; }
run_browser --window-size=390,1700 --screenshot="$shots/status-page-phone.png" "$url" \
    || { cat "$tmp/browser.err"; fail "the phone screenshot failed"; }
for png in "$shots/status-page.png" "$shots/status-page-phone.png"; do
    # A PNG's signature, and more than a blank page's few bytes.
    [ "$(head -c 8 "$png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] \
        || fail "$png is no PNG"
    [ "$(wc -c < "$png")" -gt 20000 ] || fail "$png is nearly empty"
done
echo "PASS: $browser rendered $url${keep:+; screenshots in $keep}"
