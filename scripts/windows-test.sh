#!/usr/bin/env bash
# windows-test.sh — builds lapce-ipc for x86_64-pc-windows-gnu and runs its tests (unit,
# integration incl. the cross-process suite, doc) under Wine. `.ci/run` builds the library's
# tests with it (failing on any compiler warning), lints the CLI with it (clippy), then runs the
# library's suite.
#
# Usage:  scripts/windows-test.sh [cargo test args...]   e.g.  -p lapce-ipc --test suite -- cross_process:: --nocapture
#         WINDOWS_TEST_SUBCOMMAND=clippy scripts/windows-test.sh -p lapce-ipc --all-targets -- -D warnings
#         scripts/windows-test.sh --prepare   (packages, Wine prefix and shim only; `.ci/run` does
#                                              this in the background while the host stages build)
#
# (Adapted from the team's shared recipe, ../shared/tools/windows-test.sh.)
#
# How: rustup here cannot add targets, so this uses Debian's rustc-web/cargo-web
# (1.96) + rust-web-src and rebuilds std for the target with -Zbuild-std
# (RUSTC_BOOTSTRAP=1), links with mingw-w64 gcc, and runs the .exe files with
# Wine 8 (wine64). Rust std >= 1.78 imports ProcessPrng from bcryptprimitives.dll,
# which Wine 8 lacks, so a tiny shim DLL is built and put in the private prefix.
# Idempotent: installs missing apt packages, creates the Wine prefix once.
#
# Env knobs: CARGO_TARGET_DIR (default <workspace>/target/cross, shared with macos-check.sh so
#   the host's proc-macro crates, built by the same Debian rustc, are built once),
#   WINDOWS_TEST_WINEPREFIX (default ~/.cache/windows-test-wineprefix),
#   WINEDEBUG (default -all), WINDOWS_TEST_SUBCOMMAND (default test).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-pc-windows-gnu
PKGS=(rustc-web cargo-web rust-web-src gcc-mingw-w64-x86-64 wine64)
[ "${WINDOWS_TEST_SUBCOMMAND:-test}" = clippy ] && PKGS+=(rust-web-clippy)
WINE=/usr/lib/wine/wine64
WINESERVER=/usr/lib/wine/wineserver

log() { printf '[windows-test] %s\n' "$*" >&2; }

# --- 1. apt packages -------------------------------------------------------
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  log "installing: ${missing[*]} (~2 GB on disk, ~1 min)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. toolchain env (Debian rustc 1.96, not the rustup shims) -------------
export PATH=/usr/bin:$PATH
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export RUSTC_BOOTSTRAP=1   # needed for -Zbuild-std (and std's own #![feature]s)
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=$WINE
CARGO=/usr/bin/cargo

if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  # separate dir so the rustup-1.95 host build and this 1.96 build never mix
  manifest=$("$CARGO" locate-project --workspace --message-format plain)
  export CARGO_TARGET_DIR="$(dirname "$manifest")/target/cross"
fi

# --- 3. Wine prefix (private, created once, ~10 s) -------------------------
export WINEPREFIX=${WINDOWS_TEST_WINEPREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/windows-test-wineprefix}
export WINEDEBUG=${WINEDEBUG:--all}
export WINEDLLOVERRIDES=${WINEDLLOVERRIDES:-mscoree,mshtml=}   # no Mono/Gecko prompts
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  log "creating Wine prefix $WINEPREFIX"
  mkdir -p "$WINEPREFIX"
  "$WINE" wineboot --init >/dev/null 2>&1 || true
  "$WINESERVER" -w
  [ -f "$WINEPREFIX/system.reg" ] || { log "wineboot failed"; exit 1; }
fi

# --- 4. bcryptprimitives.dll shim (only where Wine does not ship one) ------
SYS32="$WINEPREFIX/drive_c/windows/system32"
if [ ! -e /usr/lib/x86_64-linux-gnu/wine/x86_64-windows/bcryptprimitives.dll ] &&
   [ ! -s "$SYS32/bcryptprimitives.dll" ]; then
  log "building bcryptprimitives.dll shim (ProcessPrng -> RtlGenRandom)"
  tmp=$(mktemp -d)
  cat >"$tmp/shim.c" <<'EOF'
/* Wine 8 lacks bcryptprimitives.dll; Rust std >= 1.78 imports ProcessPrng from it. */
#include <windows.h>
__declspec(dllimport) BOOLEAN WINAPI SystemFunction036(PVOID buf, ULONG len); /* RtlGenRandom */
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n; len -= n;
    }
    return TRUE;
}
EOF
  printf 'LIBRARY bcryptprimitives.dll\nEXPORTS\n    ProcessPrng\n' >"$tmp/shim.def"
  x86_64-w64-mingw32-gcc -O2 -shared -s -o "$tmp/bcryptprimitives.dll" "$tmp/shim.c" "$tmp/shim.def" -ladvapi32
  mkdir -p "$SYS32"
  cp "$tmp/bcryptprimitives.dll" "$SYS32/bcryptprimitives.dll"
  rm -rf "$tmp"
fi

if [ "${1:-}" = --prepare ]; then
  log "prepared: packages, Wine prefix $WINEPREFIX"
  exit 0
fi

# --- 5. build + run --------------------------------------------------------
SUB=${WINDOWS_TEST_SUBCOMMAND:-test}
log "$("$CARGO" -V); target $TARGET; target dir $CARGO_TARGET_DIR"
# Features are unified over the whole workspace whatever `-p` selects (unstable, unlocked by
# RUSTC_BOOTSTRAP like -Zbuild-std): `.ci/run` builds `-p lapce-ipc -p lapce-ipc-cli`, then runs
# `-p lapce-ipc`, which would otherwise rebuild tokio and lapce-ipc with fewer features (~3 min).
# No debug info (panics still name file and line): with it, this build (every test binary
# linked with mingw) took 264 s cold here, without it 216 s. The same settings as
# macos-check.sh, which shares target/cross, so the host's proc macros are built once.
exec "$CARGO" "$SUB" -Zbuild-std=std,panic_abort -Zfeature-unification \
  --config 'resolver.feature-unification="workspace"' \
  --config profile.dev.debug=0 --config 'profile.dev.package."*".debug=0' \
  --target "$TARGET" "$@"
