#!/usr/bin/env bash
# Runs a command with the compilers of concurrent builds paused (SIGSTOP, then SIGCONT on
# exit), so that a benchmark measures a quieter machine. Usage: bench/quiet.sh CMD...
sig() { for n in cargo rustc cc cc1 ld collect2 ld.bfd cargo-nextest; do pkill -"$1" -x "$n" 2>/dev/null; done; }
trap 'sig CONT' EXIT
sig STOP
"$@"
