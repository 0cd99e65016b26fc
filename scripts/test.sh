#!/usr/bin/env bash
# Runs every check and test of the workspace. The README's test command; CI runs it too.
set -euo pipefail
cd "$(dirname "$0")/.."
# One full run builds every crate once: incremental caches would only take disk space.
export CARGO_INCREMENTAL=0

step() { printf '\n== %s\n' "$*"; }

step "formatting"
cargo fmt --all --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "the Docker extension example, a workspace of its own: formatting, lints, its own tests"
(
    cd examples/docker-extension
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
    cargo test --workspace --locked
)

step "the core stays free of runtimes, sockets and OS randomness"
forbidden=$(cargo tree -p latchkey -e normal --prefix none --locked \
    | grep -E '^(tokio|smol|async-[a-z-]+|mio|getrandom|rand|rand_[a-z]+) v' || true)
if [ -n "$forbidden" ]; then
    echo "latchkey's normal dependencies must not include:" >&2
    echo "$forbidden" >&2
    exit 1
fi
echo "latchkey depends on $(cargo tree -p latchkey -e normal --prefix none --locked | sed "s/ (\*)//" | sort -u | wc -l) crates (itself included), none forbidden"

step "interop tools: oidc-provider and playwright-core (npm), Chromium, redis-server, tmux, gnome-keyring and podman (Debian)"
if ! command -v node >/dev/null; then
    echo "Node.js 20 or later is required for the interop tests (Debian: apt-get install nodejs)" >&2
    exit 1
fi
if ! (cd tests/interop && npm ls --all >/dev/null 2>&1); then
    (cd tests/interop && npm ci --no-audit --no-fund)
fi
missing=""
command -v chromium >/dev/null || missing="$missing chromium"
command -v redis-server >/dev/null || missing="$missing redis-server"
command -v tmux >/dev/null || missing="$missing tmux"
# The OS-keyring tests: gnome-keyring on a private D-Bus session bus, read back with secret-tool and gdbus.
command -v dbus-daemon >/dev/null || missing="$missing dbus"
command -v gnome-keyring-daemon >/dev/null || missing="$missing gnome-keyring"
command -v secret-tool >/dev/null || missing="$missing libsecret-tools"
command -v gdbus >/dev/null || missing="$missing libglib2.0-bin"
# The Docker extension's image test: podman builds the extension's Dockerfile (no daemon).
command -v podman >/dev/null || missing="$missing podman"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        # shellcheck disable=SC2086 # one package name per word
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "The browser, shared-store, terminal, keyring and container-image tests need Debian's$missing: run apt-get install$missing as root" >&2
        exit 1
    fi
fi
echo "node $(node --version), oidc-provider $(node -p "require('./tests/interop/node_modules/oidc-provider/package.json').version"), $(chromium --version 2>/dev/null | grep -o 'Chromium [0-9.]*'), $(redis-server --version | grep -o 'v=[0-9.]*' | sed 's/v=/redis-server /'), $(gnome-keyring-daemon --version | sed -n 's/^gnome-keyring-daemon: /gnome-keyring /p'), $(podman --version)"

step "tests"
cargo test --workspace --locked

# FUZZ_SECONDS shortens runs locally; CI leaves it unset and fuzzes each target for 45 s.
fuzz_seconds="${FUZZ_SECONDS:-45}"
step "fuzz smoke: every target for ${fuzz_seconds} s"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
(
    cd fuzz
    cargo +nightly fuzz build
    # New inputs go to a scratch corpus; the committed seeds in fuzz/corpus/ stay as they are.
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    for target in $(cargo +nightly fuzz list); do
        mkdir -p "$scratch/$target"
        # A crash or a failed check exits non-zero (reproducer in fuzz/artifacts/$target/).
        cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
            -max_total_time="$fuzz_seconds" -print_final_stats=1
    done
)

step "the demo, on both drivers"
cargo run --quiet --locked -p latchkey-cli -- demo
cargo run --quiet --locked -p latchkey-cli -- demo --runtime tokio
