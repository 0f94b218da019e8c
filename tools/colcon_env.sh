#!/usr/bin/env bash
# Environment that makes the colcon install space of this package usable from
# the virtual environment's Python (pip-installed ROS 2).
#
#   tools/colcon_env.sh              print `export VAR=...` lines:
#                                      eval "$(tools/colcon_env.sh)"
#   tools/colcon_env.sh CMD ARGS...  run CMD with that environment, e.g.
#                                      tools/colcon_env.sh python -m pytest tests
#   tools/colcon_env.sh --source-first [CMD ARGS...]
#                                    same, but the repository root comes first
#                                    on PYTHONPATH: our modules are imported from
#                                    the source tree (never a stale installed
#                                    copy) and only aapt_ros.msg comes from the
#                                    install space (aapt_ros/__init__.py extends
#                                    its __path__ with pkgutil.extend_path).
#
# Env: VENV (default: $VIRTUAL_ENV, else <repo>/.venv),
#      BUILD_ROOT (default <repo>/build/colcon; the install space is
#      $BUILD_ROOT/install, colcon's default isolated layout).
#
# Sets (prepending to what is already there, without duplicates):
#   PATH               $VENV/bin
#   PYTHONPATH         <install>/aapt_ros/lib/pythonX.Y/site-packages
#                      (generated aapt_ros.msg + installed aapt_ros package)
#   LD_LIBRARY_PATH    <install>/aapt_ros/lib (typesupport libraries; also
#                      found through RPATH, this is belt and braces)
#   AMENT_PREFIX_PATH  <install>/aapt_ros:$VENV (ament index: package share
#                      folders, get_package_share_directory, type support lookup)
# The venv's ros_wheels_bootstrapper .pth re-executes Python once to add the
# venv's ROS library folders to LD_LIBRARY_PATH; it keeps the entries set here.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-${VIRTUAL_ENV:-$ROOT/.venv}}"
VENV="$(cd "$VENV" && pwd)"
BUILD_ROOT="${BUILD_ROOT:-$ROOT/build/colcon}"
[ -d "$BUILD_ROOT" ] && BUILD_ROOT="$(cd "$BUILD_ROOT" && pwd)"
PREFIX="$BUILD_ROOT/install/aapt_ros"
SOURCE_FIRST=0
if [ "${1:-}" = "--source-first" ]; then SOURCE_FIRST=1; shift; fi

if [ ! -d "$PREFIX" ]; then
  echo "colcon_env.sh: $PREFIX does not exist; run tools/build_interfaces.sh first" >&2
  exit 1
fi

# Python install dir of the install space (lib/python3.X/site-packages).
SITE=""
for d in "$PREFIX"/lib/python3*/site-packages "$PREFIX"/local/lib/python3*/dist-packages; do
  [ -d "$d/aapt_ros" ] && SITE="$d" && break
done
[ -n "$SITE" ] || { echo "colcon_env.sh: no aapt_ros Python package under $PREFIX/lib" >&2; exit 1; }

# prepend VALUE to the colon-separated list VAR, dropping an existing copy
prepend() {
  local var="$1" val="$2" cur out="" p
  cur="${!var:-}"
  IFS=: read -r -a parts <<< "$cur"
  for p in "${parts[@]:-}"; do
    [ -n "$p" ] && [ "$p" != "$val" ] && out="${out:+$out:}$p"
  done
  printf -v "$var" '%s' "$val${out:+:$out}"
  export "${var?}"
}

prepend AMENT_PREFIX_PATH "$VENV"
prepend AMENT_PREFIX_PATH "$PREFIX"
prepend LD_LIBRARY_PATH "$PREFIX/lib"
prepend PYTHONPATH "$SITE"
[ "$SOURCE_FIRST" = 1 ] && prepend PYTHONPATH "$ROOT"
prepend PATH "$VENV/bin"

if [ $# -gt 0 ]; then
  exec "$@"
fi
for v in PATH PYTHONPATH LD_LIBRARY_PATH AMENT_PREFIX_PATH; do
  printf 'export %s=%q\n' "$v" "${!v}"
done
