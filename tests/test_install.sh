#!/usr/bin/env bash
# Mirror as another program takes it: `meson install` into a temporary directory, then the
# standalone client of examples/client built against that installation with pkg-config and with
# CMake's find_package(Mirror), and run; then the client configured with Mirror as a Meson
# subproject (dependency('mirror', fallback : 'mirror')), which must not set up Mirror's tests.
# Usage: test_install.sh BUILD_DIR SOURCE_DIR
set -u
build=$(cd "$1" && pwd)
source_dir=$(cd "$2" && pwd)
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dest="$work/dest"
meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; echo "FAIL: meson install"; exit 1; }
read -r prefix libdir < <(meson introspect "$build" --buildoptions | python3 -c '
import json, sys
options = {o["name"]: o["value"] for o in json.load(sys.stdin)}
print(options["prefix"], options["libdir"])')
root="$dest$prefix"
echo "installed into $root:"
(cd "$root" && find . -type f ! -name '*.hpp' | sort | sed 's/^/  /'; echo "  $(find . -name '*.hpp' | wc -l) headers under include/mirror")
[ -f "$root/include/mirror/mirror.hpp" ] || fail "no include/mirror/mirror.hpp"
# A CUDA build installs its CUDA module beside libmirror, which loads it from there.
if ls "$build"/libmirror_cuda.so.* >/dev/null 2>&1; then
  ls "$root/$libdir"/libmirror_cuda.so.*.*.* >/dev/null 2>&1 || fail "the CUDA module is not installed beside libmirror"
fi
export LD_LIBRARY_PATH="$root/$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# pkg-config (PKG_CONFIG_SYSROOT_DIR puts the temporary directory in front of the file's paths).
flags=$(PKG_CONFIG_PATH="$root/$libdir/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest" pkg-config --cflags --libs mirror) ||
  fail "pkg-config does not find mirror"
echo "pkg-config --cflags --libs mirror: $flags"
# shellcheck disable=SC2086
if c++ "$source_dir/examples/client/client.cpp" $flags -o "$work/client-pkg-config"; then
  "$work/client-pkg-config" || fail "the client built with pkg-config failed"
else
  fail "the client does not build with pkg-config's flags"
fi

# CMake
if cmake -S "$source_dir/examples/client" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$root" \
     -DCMAKE_BUILD_TYPE=Release >"$work/cmake.log" 2>&1 &&
   cmake --build "$work/cmake-build" >>"$work/cmake.log" 2>&1; then
  "$work/cmake-build/client" || fail "the client built with CMake failed"
else
  cat "$work/cmake.log"
  fail "the client does not build with CMake's find_package(Mirror)"
fi

# A Meson subproject: configured only (building Mirror a second time would take minutes).
mkdir -p "$work/meson-client/subprojects"
cp "$source_dir/examples/client/meson.build" "$source_dir/examples/client/client.cpp" "$work/meson-client/"
ln -s "$source_dir" "$work/meson-client/subprojects/mirror"
if meson setup "$work/meson-client/build" "$work/meson-client" --wrap-mode=forcefallback -Dmirror:cuda=disabled \
     >"$work/subproject.log" 2>&1; then
  grep -Eq "Dependency mirror found: YES .*\(overridden\)" "$work/subproject.log" && grep -q "Executing subproject mirror" "$work/subproject.log" ||
    { cat "$work/subproject.log"; fail "dependency('mirror', fallback : 'mirror') did not take the subproject's"; }
  grep -Eq "^ *tests *: *False" "$work/subproject.log" || fail "Mirror as a subproject would build its tests"
  grep -Eq "^ *benchmarks *: *False" "$work/subproject.log" || fail "Mirror as a subproject would build its benchmarks"
  echo "subproject: the fallback finds Mirror's dependency; tests, benchmarks and examples are off"
else
  cat "$work/subproject.log"
  fail "the client does not configure with Mirror as a subproject"
fi

finish "install (pkg-config, CMake, Meson subproject)"
