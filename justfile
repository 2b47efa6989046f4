# The cluster workbook. `just` lists the recipes; each one is a short name
# for a plain cargo or mdbook command (README.md has the table).

set positional-arguments
set shell := ['bash', '-euo', 'pipefail', '-c']

# A lesson number as the package names spell it: 8 → 08, 08 → 08.
nn := '^([1-9])$'

# List the recipes
[private]
default:
    @just --list --unsorted

# Run lesson NN (8 or 08); flags after the number go to the lesson
[group('learn')]
lesson NN *ARGS: (_check NN)
    @cargo run -q -p lesson-{{ replace_regex(NN, nn, '0$1') }} -- "${@:2}"

# Replay lesson NN's scripted scenario and show its transcript live
[group('learn')]
scenario NN: (_check NN)
    @cargo build -q -p lesson-{{ replace_regex(NN, nn, '0$1') }}
    @cargo run -q -p scenarios --bin scenario -- {{ replace_regex(NN, nn, '0$1') }}

# List every exercise and where you stand; with NN [K], build your lesson NN and grade exercise K (or all of NN's)
[group('learn')]
[no-exit-message]
exercise *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    if [[ $# -eq 0 ]]; then
        exec cargo run -q -p scenarios --bin exercise
    fi
    "{{ just_executable() }}" _check "$1"
    lesson=$(printf '%02d' "$((10#$1))")
    cargo build -q -p "lesson-$lesson"
    exec cargo run -q -p scenarios --bin exercise -- "$lesson" "${@:2}"

# Apply the reference solution of exercise NN K to your working tree (refuses over your uncommitted changes)
[group('learn')]
[no-exit-message]
solution NN K: (_check NN)
    @cargo run -q -p scenarios --bin exercise -- --solution {{ replace_regex(NN, nn, '0$1') }} {{ K }}

# Serve the book at http://localhost:3000 and open it (lessons use 8000)
[group('learn')]
book:
    @mdbook serve book --open

# Run every test: unit, integration, scenario snapshots, workbook checks
[group('check')]
test *ARGS:
    cargo test --workspace "$@"

# Check formatting without changing files
[group('check')]
fmt-check:
    cargo fmt --all --check

# Lint every target; warnings are errors
[group('check')]
clippy:
    cargo clippy --workspace --all-targets -- -D warnings

# Build the book into book/book
[group('check')]
book-build:
    mdbook build book

# Compile the benchmarks without running them
[group('check')]
bench-build:
    cargo bench --workspace --no-run

# Everything CI checks, in CI's order (.ci/run does the same on a fresh machine)
[group('check')]
ci: fmt-check clippy test book-build bench-build

# Run the criterion benchmarks (slow; close other programs first)
[group('measure')]
bench *ARGS:
    cargo bench --workspace "$@"

# Run lesson NN's Node twin and the Rust lesson under the same scripts, side by side
[group('measure')]
compare NN *ARGS: (_check NN)
    @cargo build --release -q -p lesson-{{ replace_regex(NN, nn, '0$1') }} -p scenarios
    @target/release/compare {{ replace_regex(NN, nn, '0$1') }} --out book/measured/{{ replace_regex(NN, nn, '0$1') }}-compare.md "${@:2}"

# Measure lesson 04's strategies side by side (rr, shared, reuseport × new, keep-alive)
[group('measure')]
bench-lb *ARGS:
    @cargo build --release -q -p lesson-04 -p scenarios
    @target/release/bench-lb "$@"

# Measure lesson 08's rolling restart: requests/s during a rollout vs at rest, failures
[group('measure')]
bench-rollout *ARGS:
    @cargo build --release -q -p lesson-08 -p scenarios
    @target/release/bench-rollout "$@"

# Install what is missing: just, mdbook, and redis-server and nginx on Debian/Ubuntu
[group('setup')]
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    for tool in just mdbook; do
        if command -v "$tool" >/dev/null; then
            echo "$tool: already installed"
        else
            echo "$tool: installing with cargo install --locked (takes a few minutes)"
            cargo install --locked "$tool"
        fi
    done
    # nginx lives in /usr/sbin, which a user's PATH may not hold.
    for package in redis-server nginx; do
        if command -v "$package" >/dev/null || [[ -x /usr/sbin/$package ]]; then
            echo "$package: already installed"
        elif [[ -f /etc/debian_version ]]; then
            sudo=''
            if [[ $(id -u) -ne 0 ]]; then sudo='sudo'; fi
            $sudo apt-get update
            $sudo apt-get install -y "$package"
        else
            echo "$package: not found; install it with your package manager (lessons 07, 10 and 12 use redis-server, lesson 10 nginx)"
        fi
    done

# Stop with one line unless NN names a lesson that exists
[private]
[no-exit-message]
_check NN:
    #!/usr/bin/env bash
    set -euo pipefail
    if [[ ! $1 =~ ^0?([1-9]|1[0-2])$ ]]; then
        echo "error: no lesson '$1': lessons are numbered 01 to 12 (8 and 08 both work)" >&2
        exit 2
    fi
    lesson=$(printf '%02d' "$((10#$1))")
    if ! compgen -G "lessons/$lesson-*" >/dev/null; then
        echo "error: lesson $lesson is planned but not written yet (there is no lessons/$lesson-* folder)" >&2
        exit 2
    fi

# Draw lesson 08's rolling restart from a real run, one lane per worker (book/measured/08-timeline.svg)
[group('draw')]
timeline *ARGS:
    @cargo build --release -q -p lesson-08 -p scenarios
    @target/release/timeline --out book/measured/08-timeline.svg "$@"

# Regenerate the book's diagrams from their Graphviz sources (book/diagrams/*.dot → *.svg)
[group('draw')]
diagrams:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v dot >/dev/null; then
        echo "error: no Graphviz 'dot': install it (apt-get install graphviz); the committed SVGs need nothing" >&2
        exit 2
    fi
    for source in book/diagrams/*.dot; do
        # Inline in the book: no XML prolog, no blank line, as wide as the page.
        dot -Tsvg "$source" \
            | sed -n '/^<svg/,$p' \
            | sed -E '1s/ width="[^"]*" height="[^"]*"/ width="100%"/' \
            | sed '/^[[:space:]]*$/d' > "${source%.dot}.svg"
        echo "${source%.dot}.svg"
    done
