# Sourced by the bench scripts that run the binaries against mock-gemini (needs ROOT, TMP,
# note and die): builds puzzlegen and mock-gemini in release mode and sets PUZZLEGEN and MOCK
# to their paths.
note "building (release): puzzlegen, mock-gemini"
if ! cargo build --release -p puzzlegen -p mock-gemini >"$TMP/build.log" 2>&1; then
  tail -n 40 "$TMP/build.log" >&2
  die "cargo build --release -p puzzlegen -p mock-gemini failed (log above)"
fi
# cargo builds into CARGO_TARGET_DIR when it is set (relative paths are from the root).
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
PUZZLEGEN=$TARGET_DIR/release/puzzlegen
MOCK=$TARGET_DIR/release/mock-gemini
[ -x "$PUZZLEGEN" ] || die "$PUZZLEGEN missing after build"
[ -x "$MOCK" ] || die "$MOCK missing after build"
