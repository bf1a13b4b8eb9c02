#!/bin/sh
# tests/run_all.sh — runs every C test binary and the Lua suites of one build, then prints the
# total as the last line: "N passed, N failed". Exits non-zero on any failure.
# Usage: BUILD=build sh tests/run_all.sh
BUILD=${BUILD:-build}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    echo "== $t"
    "$t" 2>&1 | tee -a "$log" || status=1
    # a crashed binary prints no summary: count it as a failure
    tail -n 1 "$log" | grep -q 'passed, [0-9]* failed' || { echo "$(basename "$t"): 0 passed, 1 failed" | tee -a "$log"; status=1; }
done
echo "== lua suites ($BUILD/cunet)"
CUNET_EXE="$BUILD/cunet" "$BUILD/cunet" tests/lua/run.lua < /dev/null 2>&1 | tee -a "$log"
lua_status=$(tail -n 1 "$log" | grep -c 'passed, [0-9]* failed')
[ "$lua_status" = 1 ] || { echo "lua: 0 passed, 1 failed" | tee -a "$log"; status=1; }
grep -q '^lua: [0-9]* passed, 0 failed' "$log" || status=1
passed=$(grep -Eo '[0-9]+ passed, [0-9]+ failed' "$log" | awk '{p += $1} END {print p + 0}')
failed=$(grep -Eo '[0-9]+ passed, [0-9]+ failed' "$log" | awk '{f += $3} END {print f + 0}')
[ "$failed" = 0 ] || status=1
echo "$passed passed, $failed failed"
exit $status
