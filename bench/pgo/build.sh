#!/usr/bin/env bash
# A profile-guided release build of `silverback`: an instrumented build runs the training
# workload (bench/pgo/train.sh), and the release build then uses the profile it wrote. Both
# builds use the release profile (fat LTO, one codegen unit) in their own target directories
# under PGO_DIR, so repeat runs only rebuild what changed. Prints the optimized binary's path.
#
# Needs what train.sh needs, and rustup's llvm-tools component (for llvm-profdata; added
# here when missing). Usage: bench/pgo/build.sh   (PGO_DIR defaults to ~/.cache/silverback/pgo)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${PGO_DIR:-$HOME/.cache/silverback/pgo}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
HOST=$(rustc -vV | awk '/^host:/ {print $2}')
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
if [ ! -x "$PROFDATA" ]; then
  rustup component add llvm-tools >&2
fi
rm -rf "$OUT/profiles"
mkdir -p "$OUT/profiles"
cd "$ROOT"
# (--target: the flags apply to the binary's crates only, not to build scripts and proc
# macros, which would write profiles of their own while building)
RUSTFLAGS="-Cprofile-generate=$OUT/profiles" CARGO_TARGET_DIR="$OUT/gen" \
  cargo build -q --release --locked --target "$HOST" -p silverback >&2
"$ROOT/bench/pgo/train.sh" "$OUT/gen/$HOST/release/silverback" >&2
"$PROFDATA" merge -o "$OUT/merged.profdata" "$OUT/profiles" >&2
# cargo tracks RUSTFLAGS, not the file they name: the profile's path carries its hash, so a
# new profile rebuilds every crate with it
SUM=$(sha256sum "$OUT/merged.profdata" | cut -c1-16)
rm -f "$OUT"/profile-*.profdata
mv "$OUT/merged.profdata" "$OUT/profile-$SUM.profdata"
RUSTFLAGS="-Cprofile-use=$OUT/profile-$SUM.profdata" CARGO_TARGET_DIR="$OUT/use" \
  cargo build -q --release --locked --target "$HOST" -p silverback >&2
echo "$OUT/use/$HOST/release/silverback"
