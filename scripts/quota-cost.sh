#!/usr/bin/env bash
# What the quota check costs a verification, in instructions: `scripts/instructions.sh` run
# on HEAD's release build and on the same code built without the check (the verdict of
# a key that passed every other check answered `valid` at once), alternately, ROUNDS times
# (default 3); prints each run and the medians of POST /v1/internal/verify-key.
#
# Both are built from a temporary worktree of HEAD (commit first what you want measured), the
# baseline with that one line changed.
#
# Usage: scripts/quota-cost.sh   (env: ROUNDS, REQUESTS as for instructions.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d)
trap 'git -C "$ROOT" worktree remove --force "$WORK/tree" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

git worktree add --quiet --detach "$WORK/tree" HEAD
# Both builds from HEAD, in a target directory of their own (this tree's release binary is
# left as it is), seeded from this tree's release dependencies when it is new.
export CARGO_TARGET_DIR="$ROOT/target/quota-cost"
[[ -d $CARGO_TARGET_DIR/release || ! -d $ROOT/target/release/deps ]] || { mkdir -p "$CARGO_TARGET_DIR" && cp -a "$ROOT/target/release" "$CARGO_TARGET_DIR/"; }
build() { (cd "$WORK/tree" && cargo build --release --quiet --bin account-api 2>"$WORK/build.log") || { cat "$WORK/build.log" >&2; exit 1; }; cp "$CARGO_TARGET_DIR/release/account-api" "$WORK/$1"; }
build with-quota
file="$WORK/tree/crates/domain/src/service/verify.rs"
# The quota's arm of verify_key's verdict (from `_ => match self.quota_admission(` to its `},`).
python3 - "$file" <<'PY' || { echo "quota-cost.sh: the quota's arm is not in verify.rs as expected: update this script" >&2; exit 1; }
import re, sys
path = sys.argv[1]
text, found = re.subn(r"_ => match self\.quota_admission\(&principal\) \{.*?\n\s*\},\n", "_ => VerificationCode::Valid,\n",
                      open(path).read(), count=1, flags=re.S)
assert found == 1
open(path, "w").write(text)
PY
# (Its warnings, of the check's code now unused, are expected.)
build without-quota

measure() { scripts/instructions.sh "$1" | tee -a "$WORK/$2.log"; }
for _ in $(seq 1 "$ROUNDS"); do
    echo -n "without the check: "; measure "$WORK/without-quota" without
    echo -n "with the check:    "; measure "$WORK/with-quota" with
done
median() { grep -o 'verify-key [0-9]*' "$WORK/$1.log" | cut -d' ' -f2 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
w=$(median with); wo=$(median without)
echo "POST /v1/internal/verify-key, median of $ROUNDS: without the quota check $wo, with it $w: $((w - wo)) more ($(python3 -c "print(f'{($w - $wo) / $wo:.2%}')"))"
