#!/usr/bin/env bash
# Build this package (interfaces aapt_ros/msg/* + the Python package aapt_ros +
# launcher scripts + share/) with colcon on top of the pip-installed ROS 2 of a
# virtual environment. See tools/INTERFACES.md.
#
# Usage:   tools/build_interfaces.sh [extra colcon build args...]
# Env:     VENV=path   virtual environment to use (default: the active one,
#                      $VIRTUAL_ENV, else <repo>/.venv)
#          BUILD_ROOT  (default <repo>/build/colcon) -> {build,install,log}
#          CMAKE_BUILD_PARALLEL_LEVEL  (default: number of CPUs)
#          QUIET=1     show the build output only on failure (always kept
#                      in <BUILD_ROOT>/build_interfaces.log)
#          AAPT_ROS_LINK_WHEEL_INCLUDES=1  see below
# Installs nothing: the venv must already hold the pip packages listed in
# tools/INTERFACES.md (setup.py extra "colcon").
# Output:  <BUILD_ROOT>/install/aapt_ros/...; at the end it prints the
#          environment needed to use the install space (same as
#          tools/colcon_env.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-${VIRTUAL_ENV:-$ROOT/.venv}}"
VENV="$(cd "$VENV" && pwd)"
PY="$VENV/bin/python"
BUILD_ROOT="${BUILD_ROOT:-$ROOT/build/colcon}"

die() { echo "build_interfaces.sh: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no python at $PY (set VENV=path or activate the venv)"
[ -x "$VENV/bin/colcon" ] || die "colcon is not installed in $VENV (pip install the 'colcon' extra, see tools/INTERFACES.md)"
[ -f "$VENV/share/ament_cmake/cmake/ament_cmakeConfig.cmake" ] \
  || die "ament_cmake not found in $VENV/share (pip install ros-kilted-ament-cmake ...)"
[ -f "$VENV/share/rosidl_default_generators/cmake/rosidl_default_generatorsConfig.cmake" ] \
  || die "rosidl_default_generators not found in $VENV/share (pip install ros-kilted-rosidl-default-generators)"
command -v cmake >/dev/null || die "cmake not found (apt-get install cmake, or pip install cmake)"
command -v cc >/dev/null || command -v gcc >/dev/null || die "no C compiler (apt-get install build-essential)"

mkdir -p "$BUILD_ROOT"
BUILD_ROOT="$(cd "$BUILD_ROOT" && pwd)"
# colcon must only see the package at the repo root: never the ROS packages
# under the venv's share/ nor anything in build/.
touch "$ROOT/build/COLCON_IGNORE" 2>/dev/null || true
touch "$BUILD_ROOT/COLCON_IGNORE"
case "$VENV/" in "$ROOT"/*) touch "$VENV/COLCON_IGNORE" ;; esac

# The pip wheels' exported CMake targets name include folders of the machine
# they were built on (/opt/python/cpXY-cpXY/...). CMakeLists.txt replaces them
# (option AAPT_ROS_FIX_WHEEL_INCLUDES, ON by default), so no link is needed.
# With AAPT_ROS_LINK_WHEEL_INCLUDES=1 this script instead creates links at
# those paths (only when absent; needs write access to /opt, e.g. root).
link_wheel_includes() {
  local want target pyinc npinc
  pyinc="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  npinc="$("$PY" -c 'import numpy; print(numpy.get_include())')"
  grep -h -o '/opt/python/[^";]*' "$VENV"/share/*/cmake/*Export.cmake 2>/dev/null | sort -u |
  while read -r want; do
    [ -e "$want" ] && continue
    case "$want" in
      */include/python3.*)      target="$pyinc" ;;
      */numpy/_core/include|*/numpy/core/include) target="$npinc" ;;
      *) echo "  (not linking unknown path $want)"; continue ;;
    esac
    echo "  link $want -> $target"
    mkdir -p "$(dirname "$want")" && ln -sfn "$target" "$want"
  done
}
FIX_INCLUDES=ON
if [ "${AAPT_ROS_LINK_WHEEL_INCLUDES:-0}" = 1 ]; then
  link_wheel_includes
  FIX_INCLUDES=OFF
fi

# Environment for the build: only the venv's ROS (no /opt/ros underlay).
export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH"
export COLCON_HOME="$BUILD_ROOT/.colcon_home"   # no ~/.colcon defaults/mixins
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
unset COLCON_PREFIX_PATH COLCON_CURRENT_PREFIX || true

# CMake generator: keep the one of an existing build folder (CMake refuses to
# switch), else $CMAKE_GENERATOR if set, else Ninja when installed, else Make.
GEN=()
CACHE="$BUILD_ROOT/build/aapt_ros/CMakeCache.txt"
if [ -f "$CACHE" ]; then
  GEN=(-G "$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$CACHE")")
elif [ -z "${CMAKE_GENERATOR:-}" ] && command -v ninja >/dev/null; then
  GEN=(-G Ninja)
fi

cd "$ROOT"
start=$(date +%s)
LOG="$BUILD_ROOT/build_interfaces.log"
# colcon's console output also goes to $LOG; QUIET=1 shows it only on failure.
set +e
"$VENV/bin/colcon" --log-base "$BUILD_ROOT/log" build \
  --paths "$ROOT" \
  --build-base "$BUILD_ROOT/build" \
  --install-base "$BUILD_ROOT/install" \
  "$@" \
  --cmake-args \
    "${GEN[@]}" \
    -DPython3_EXECUTABLE="$PY" \
    -DPython3_FIND_VIRTUALENV=ONLY \
    -DBUILD_TESTING=OFF \
    -DAAPT_ROS_FIX_WHEEL_INCLUDES="$FIX_INCLUDES" \
  2>&1 | if [ "${QUIET:-0}" = 1 ]; then cat > "$LOG"; else tee "$LOG"; fi
rc=${PIPESTATUS[0]}
set -e
# keep only the 3 newest colcon log folders
# (names are build_YYYY-MM-DD_HH-MM-SS: sorting by name is sorting by time)
find "$BUILD_ROOT/log" -mindepth 1 -maxdepth 1 -type d -name "build_*" 2>/dev/null | sort -r | tail -n +4 | xargs -r rm -rf || true
if [ "$rc" -ne 0 ]; then
  [ "${QUIET:-0}" = 1 ] && tail -n 60 "$LOG" >&2
  die "colcon build failed (exit $rc); full output in $LOG"
fi
echo "build_interfaces.sh: built in $(( $(date +%s) - start )) s -> $BUILD_ROOT/install"

echo
echo "# Environment to use the install space (eval \"\$(tools/colcon_env.sh)\"):"
VENV="$VENV" BUILD_ROOT="$BUILD_ROOT" "$ROOT/tools/colcon_env.sh"
