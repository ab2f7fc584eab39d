#!/usr/bin/env bash
# Inside the cgroup v2 VM (see cgroup2-tests.sh): checks that the host really is
# cgroup2-only with every controller, then runs each test binary given as DIR=BINARY
# (libtest harness, in DIR, two threads, captured output shown at the end so that any
# "skipped" line is visible), and prints one summary. Exit status 0 only when the host
# check passed and every binary passed.
set -uo pipefail

fail=0
if grep -q ' - cgroup ' /proc/self/mountinfo; then
  echo "run-suites: a cgroup v1 hierarchy is mounted; this is not a v2-only host" >&2
  exit 1
fi
ctl=$(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null) || {
  echo "run-suites: no cgroup2 hierarchy at /sys/fs/cgroup" >&2
  exit 1
}
for c in cpuset cpu io memory hugetlb pids; do
  case " $ctl " in
    *" $c "*) ;;
    *) echo "run-suites: controller $c missing from the cgroup2 root ($ctl)" >&2; exit 1 ;;
  esac
done
echo "run-suites: cgroup2 only, controllers: $ctl; kernel $(uname -r); in $(cut -d: -f3 /proc/self/cgroup)"

per_binary_timeout=${BERTH_VM_SUITE_TIMEOUT:-900}
log=$(mktemp)
passed=0 failed=0 ignored=0 suites=0 bad=()
for arg in "$@"; do
  dir=${arg%%=*}
  bin=${arg#*=}
  name=$(basename "$bin")
  name=${name%-*}
  echo "run-suites: === $name (in $dir)"
  start=$SECONDS
  (cd "$dir" && timeout -k 10 "$per_binary_timeout" "$bin" --test-threads=2 --show-output) 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  suites=$((suites + 1))
  # The captured output of passing tests: report every skip, with its test's name.
  awk '/^---- .* stdout ----$/ { t = $2 } tolower($0) ~ /^skip/ { print "run-suites: " t ": " $0 }' "$log"
  line=$(grep -a 'test result:' "$log" | tail -n 1 | sed 's/\x1b\[[0-9;]*m//g; s/\x1b(B//g')
  p=$(sed -n 's/.* \([0-9]*\) passed.*/\1/p' <<<"$line")
  f=$(sed -n 's/.* \([0-9]*\) failed.*/\1/p' <<<"$line")
  i=$(sed -n 's/.* \([0-9]*\) ignored.*/\1/p' <<<"$line")
  passed=$((passed + ${p:-0})) failed=$((failed + ${f:-0})) ignored=$((ignored + ${i:-0}))
  echo "run-suites: $name: ${p:-?} passed, ${f:-?} failed, status $rc, $((SECONDS - start))s"
  if [ "$rc" != 0 ]; then
    fail=1
    bad+=("$name")
  fi
done
rm -f "$log"
echo "run-suites: SUMMARY $suites binaries: $passed passed, $failed failed, $ignored ignored${bad:+; failing: ${bad[*]}}"
exit "$fail"
