#!/usr/bin/env bash
# Type-checks and lints the workspace for macOS (x86_64 and aarch64) from Linux: `cargo clippy
# -D warnings` with the standard library rebuilt for each target. Nothing is linked, so no Apple
# SDK is needed; this proves the macOS code paths compile and are lint-clean, not that they run.
#
# Toolchain: Debian's rustc-web / cargo-web / rust-web-clippy (a second, Debian-built Rust) plus
# rust-web-src, whose sources `-Zbuild-std` compiles (RUSTC_BOOTSTRAP=1 unlocks that flag on a
# stable compiler). Installed with apt when missing. Output goes to target/cross (shared with
# scripts/windows-test.sh) so it never mixes with the host build.
#
# Usage: scripts/macos-check.sh            (clippy, both targets)
#        MACOS_TARGETS=aarch64-apple-darwin MACOS_SUBCOMMAND=check scripts/macos-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

targets=${MACOS_TARGETS:-x86_64-apple-darwin aarch64-apple-darwin}
subcommand=${MACOS_SUBCOMMAND:-clippy}
packages=(rustc-web cargo-web rust-web-src rust-web-clippy)

need=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if ((${#need[@]})); then
  echo "macos-check: installing ${need[*]} with apt" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# /usr/bin first, so that `cargo clippy` finds the Debian clippy, not the rustup one.
export PATH=/usr/bin:$PATH RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
# Shared with windows-test.sh: the host proc-macro crates (same Debian rustc) are built once.
export CARGO_TARGET_DIR="$PWD/target/cross"
cargo=/usr/bin/cargo
# No debug info in target/cross (the same settings as windows-test.sh, so that the host's proc
# macros and build scripts built here are reused there).
nodebug=(--config profile.dev.debug=0 --config 'profile.dev.package."*".debug=0')

# C code of dependencies (ring, under the TLS and gRPC features) is not compiled for macOS:
# there is no Apple toolchain here, and nothing is linked, so clippy needs the Rust metadata
# only. A stub compiler writes an empty object wherever asked, and `ar` archives those.
stub_dir=$(mktemp -d)
trap 'rm -rf "$stub_dir"' EXIT
cat >"$stub_dir/cc" <<'STUB'
#!/bin/sh
# Says "clang" to cc-rs's compiler detection (a probe preprocessed with -E; MSVC is tried with
# -?, refused here), so the flags it passes are clang's; writes an empty file for every -o.
for a in "$@"; do
  case "$a" in
    -E) echo clang; echo clang >&2; exit 0 ;;
    '-?') exit 1 ;;
  esac
done
while [ $# -gt 0 ]; do
  if [ "$1" = -o ]; then : >"$2"; fi
  shift
done
STUB
chmod +x "$stub_dir/cc"
for t in $targets; do
  export "CC_${t//-/_}=$stub_dir/cc" "AR_${t//-/_}=ar"
done

status=0
for target in $targets; do
  echo "macos-check: $($cargo --version), $subcommand --target $target" >&2
  $cargo "$subcommand" -Zbuild-std=std,panic_abort --target "$target" --workspace --all-targets \
    "${nodebug[@]}" -- -D warnings || status=$?
done
exit $status
