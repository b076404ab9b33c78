#!/bin/sh
# Runs `deskgate import apache` on every corpus file and prints one line per file:
# the importer's exit code, whether the written YAML passes `deskgate -t --skip-files`,
# and the count of "NOT TRANSLATED" lines. Outputs go to $OUT (default /tmp/corpus-out).
# Usage: tests/apache/corpus/run-baseline.sh [path/to/deskgate]
set -u
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-target/debug/deskgate}
out=${OUT:-/tmp/corpus-out}
mkdir -p "$out"
cd "$here" || exit 1
for f in [0-9][0-9]-*.conf; do
    n=${f%.conf}
    rm -rf "$out/$n.yaml" "$out/$n.secrets"
    timeout 20 "$bin" import apache "$f" -o "$out/$n.yaml" >"$out/$n.stdout" 2>"$out/$n.stderr"
    rc=$?
    check=-
    if [ -f "$out/$n.yaml" ]; then
        timeout 20 "$bin" -t --skip-files -c "$out/$n.yaml" >"$out/$n.check" 2>&1
        check=$?
    fi
    printf '%s exit=%s check=%s not_translated=%s\n' "$n" "$rc" "$check" \
        "$(grep -c '^NOT TRANSLATED' "$out/$n.stderr")"
done
