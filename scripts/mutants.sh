#!/usr/bin/env bash
# Mutation testing of the pure modules with their unit tests: cargo-mutants changes one operator,
# guard or return value at a time and checks that some unit test fails. Not part of CI (about
# 11 minutes on two cores after a first build of its own); it is how the next person checks that
# the unit tests still bite. Every mutant that survives must be killed by a new assertion or be
# an equivalent mutant listed in docs/development.md. Extra arguments go to cargo-mutants (e.g.
# `--iterate` to test only what survived the last run, `-f src/breaker.rs` for one file).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants > /dev/null || cargo install --locked cargo-mutants
files=(src/breaker.rs src/selector.rs src/retry_budget.rs src/routing.rs src/edge/chunked.rs
       src/edge/head.rs src/failure_rate.rs)
args=()
case " $* " in
  *" -f "* | *" --file "*) ;;
  *) for file in "${files[@]}"; do args+=(-f "$file"); done ;;
esac
args+=("$@")
# --lib: the unit tests are the ones that cover these modules; no debug info keeps each build short.
CARGO_PROFILE_DEV_DEBUG=0 exec cargo mutants --jobs 2 --timeout 60 --cargo-arg --lib "${args[@]}"
