#!/usr/bin/env bash
# Runs the runtime's CPU kernel tests on an emulated CPU with AVX-512 VNNI,
# for machines that lack one (some of this project's have AVX2 only).
#
# The emulator is Bochs 2.7 (Debian's package) as an Ice Lake laptop CPU
# (corei7_icelake_u: AVX-512 F/BW/VL/VNNI and more). QEMU would be faster,
# but its TCG does not emulate AVX-512. Bochs boots Debian's cloud kernel
# into a busybox initramfs whose /init runs a test binary and powers off;
# this script reads the guest's serial console.
#
# The test binaries are built statically (glibc, crt-static) for x86-64-v3
# into target/bochs/cargo, so they need nothing from the bare initramfs and
# use no instruction of the host CPU that the emulated one lacks.
#
# Two kernel arguments work around Bochs: `clearcpuid=pku,ospke,xsavec,xsaves`
# (Bochs reports XSAVE state the kernel finds inconsistent, and the kernel
# then turns XSAVE, and with it AVX, off), and `clearcpuid=fsrm,erms` (with
# those, the kernel's patched memmove copies far past its end under Bochs
# and the boot hangs at the first security-module log line).
#
# Needs Debian's apt (packages are installed when missing, as root) and a
# C linker with glibc's static libraries (libc6-dev). Output and work files
# go to target/bochs/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/common.sh

work=$PWD/target/bochs
model_name=smollm2-135m-instruct
timeout=1800
with_model=0
# The model tests that exercise every kernel a generation uses: greedy
# output against llama.cpp's, and batched and prefix-cached generation
# against solo runs.
model_tests=(
  greedy_output_matches_llama_cpp_for_the_first_16_tokens
  concurrent_generations_are_batched_and_each_matches_its_solo_run
  a_cached_system_prompt_changes_nothing_but_the_work
)
# Printed by the VNNI test when the CPU lacks AVX-512 VNNI.
skipped="this CPU has no AVX-512 VNNI"

usage() {
  cat <<EOF
Usage: $0 [options]

Runs triage-runtime's CPU kernel tests (cpu::) on an emulated Ice Lake CPU
with AVX-512 VNNI (Bochs), and fails unless they pass there with the VNNI
kernels running.

Options:
  --with-model     also run SmolLM2's tests in the emulator (greedy output
                   against llama.cpp's, batched and prefix-cached generation
                   against solo runs): the VNNI kernels under the whole
                   model. Slow: an hour or more;
                   fetches the model with triage's own fetcher
  --timeout S      give up on a boot after S seconds (default: $timeout)
  -h, --help       print this help
EOF
}

while (($# > 0)); do
  case $1 in
  --with-model) with_model=1 ;;
  --timeout)
    (($# > 1)) || usage_error "--timeout needs a value"
    [[ $2 =~ ^[1-9][0-9]*$ ]] || usage_error "--timeout must be a positive number of seconds, not '$2'"
    timeout=$2
    shift
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  *) usage_error "unknown option '$1'" ;;
  esac
  shift
done

[[ $(uname -m) == x86_64 ]] || die "this runs x86-64 test binaries; this machine is $(uname -m)"
command -v apt-get >/dev/null || die "needs Debian's apt-get to fetch Bochs and a kernel"

# --- the emulator and the guest's parts ---------------------------------------

packages=(bochs bochs-term bochsbios vgabios isolinux syslinux-common xorriso cpio)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  ((EUID == 0)) || die "missing Debian packages: ${missing[*]} (install them, or run as root)"
  say "installing ${missing[*]}"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$work/debs"
# Downloaded and unpacked, not installed: a kernel for the guest only, and
# busybox for its user space.
fetch_deb() {
  local name=$1
  local deb
  deb=$(ls "$work/debs/${name}"_*.deb 2>/dev/null | head -n 1 || true)
  if [[ -z $deb ]]; then
    (cd "$work/debs" && apt-get download "$name" >&2) || die "apt-get download $name failed"
    deb=$(ls "$work/debs/${name}"_*.deb | head -n 1)
  fi
  echo "$deb"
}
if [[ ! -f $work/vmlinuz ]]; then
  kernel=$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-cloud-amd64-unsigned$' |
    awk '{print $1}' | sort -V | tail -n 1)
  [[ -n $kernel ]] || die "apt knows no linux-image-*-cloud-amd64-unsigned package (run apt-get update?)"
  rm -rf "$work/kernel" && dpkg-deb -x "$(fetch_deb "$kernel")" "$work/kernel"
  cp "$(ls "$work"/kernel/boot/vmlinuz-* | head -n 1)" "$work/vmlinuz"
fi
if [[ ! -x $work/busybox ]]; then
  rm -rf "$work/bb" && dpkg-deb -x "$(fetch_deb busybox-static)" "$work/bb"
  cp "$work/bb/bin/busybox" "$work/busybox"
fi

# --- the test binaries --------------------------------------------------------

# Builds a static test binary of triage-runtime; prints its path.
build_tests() {
  RUSTFLAGS="-C target-cpu=x86-64-v3 -C target-feature=+crt-static" \
    CARGO_TARGET_DIR="$work/cargo" \
    cargo test --release -p triage-runtime "$@" --no-run \
    --target x86_64-unknown-linux-gnu --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])'
}

say "building the kernel tests (static, x86-64-v3)"
kernel_tests=$(build_tests --lib)
[[ -n $kernel_tests ]] || die "cargo built no test binary for triage-runtime's library"

# --- one boot -----------------------------------------------------------------

# boot NAME TAKES BINARY ARGS [EXTRA-DIR]: runs BINARY ARGS as the guest's
# /test (TAKES: how long, roughly); the guest's console ends up in
# $work/NAME.console.
boot() {
  local name=$1 takes=$2 binary=$3 args=$4 extra=${5:-}
  local root=$work/$name.root iso=$work/$name.iso
  rm -rf "$root" "$iso.d" && mkdir -p "$root"/{bin,proc,sys,dev} "$iso.d/isolinux"
  cp "$work/busybox" "$root/bin/busybox"
  cp "$binary" "$root/test"
  [[ -z $extra ]] || cp -a "$extra"/. "$root/"
  cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin TRIAGE_HOME=/triage HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "=== cpu: \$(grep -o 'avx512_vnni' /proc/cpuinfo | head -n 1)"
echo "=== running tests"
/test $args
echo "=== tests exited with \$?"
# Let the serial line drain before the machine goes.
sleep 3
poweroff -f
EOF
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$iso.d/initrd.gz"
  cp "$work/vmlinuz" "$iso.d/vmlinuz"
  cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso.d/isolinux/"
  cat >"$iso.d/isolinux/isolinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0,115200 clearcpuid=pku,ospke,xsavec,xsaves,fsrm,erms mitigations=off nosmp nokaslr panic=-1 quiet
EOF
  xorriso -as mkisofs -quiet -o "$iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table "$iso.d" 2>/dev/null || die "xorriso could not build the boot image"
  local megs=512
  [[ -z $extra ]] || megs=1536
  cat >"$work/$name.bochsrc" <<EOF
megs: $megs
cpu: model=corei7_icelake_u, count=1, ips=100000000, reset_on_triple_fault=0
clock: sync=none, time0=local
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
display_library: term
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path=$iso, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev=$work/$name.console
log: $work/$name.bochs.log
panic: action=fatal
error: action=report
info: action=ignore
debug: action=ignore
mouse: enabled=0
EOF
  # Debian's Bochs is built with its debugger: `c` starts the machine.
  echo c >"$work/rc"
  rm -f "$work/$name.console"
  say "booting the emulated Ice Lake to run the $name tests (about $takes)"
  # The term display needs a terminal, which script(1) gives it, and input
  # that stays open, which `tail` gives it for as long as `keeper` lives.
  sleep $((timeout + 60)) &
  local keeper=$! start=$SECONDS
  tail -f /dev/null --pid="$keeper" | TERM=xterm script -q -e -c \
    "timeout -s KILL $timeout bochs-bin -q -f $work/$name.bochsrc -rc $work/rc" \
    /dev/null >"$work/$name.term" 2>&1 &
  local runner=$!
  while kill -0 "$runner" 2>/dev/null; do
    if grep -q "=== tests exited with" "$work/$name.console" 2>/dev/null; then
      sleep 2
      break
    fi
    sleep 2
  done
  # Bochs ignores SIGTERM.
  pkill -KILL -f "bochs-bin -q -f $work/$name.bochsrc" 2>/dev/null || true
  kill "$keeper" 2>/dev/null || true
  wait "$runner" "$keeper" 2>/dev/null || true
  say "$name: the guest ran for $((SECONDS - start)) s"
}

# check NAME: the tests' verdict from the guest's console.
check() {
  local name=$1
  local console=$work/$name.console
  [[ -f $console ]] || die "$name: Bochs wrote no console output (see $work/$name.term and $work/$name.bochs.log)"
  grep -q "=== running tests" "$console" ||
    die "$name: the guest never reached user space within $timeout s (see $console)"
  grep -q "=== cpu: avx512_vnni" "$console" ||
    die "$name: the guest's CPU has no AVX-512 VNNI, or its kernel turned it off (see $console)"
  local output
  output=$(sed -n '/=== running tests/,/=== tests exited/p' "$console" | grep -v '^\[ *[0-9.]*\]')
  if grep -q "=== tests exited with 0" <<<"$output"; then
    grep -E '^(running|test )' <<<"$output" >&2
  else
    echo "$output" >&2
    die "$name: tests failed or did not finish in the emulated CPU (see $console)"
  fi
  if grep -q "$skipped" <<<"$output"; then
    die "$name: the VNNI kernels did not run in the guest ('$skipped')"
  fi
}

boot kernels "2 minutes" "$kernel_tests" "cpu:: --test-threads=1 --show-output"
check kernels

if ((with_model)); then
  say "fetching $model_name with triage's fetcher"
  cargo run --release -q -p triage -- models pull "$model_name" >&2
  # The cache's root, and the model's folder under it.
  {
    read -r home
    read -r model_dir
  } < <(cargo run --release -q -p triage -- models list --json | python3 -c '
import json, os, sys
listing = json.load(sys.stdin)
m = next(m for m in listing["models"] if m["name"] == sys.argv[1])
print(listing["home"])
print(os.path.relpath(m["path"], listing["home"]))' "$model_name")
  [[ -n $home && -n $model_dir ]] || die "triage models list gave no folder for $model_name"
  model_tests_bin=$(build_tests --test smollm2)
  [[ -n $model_tests_bin ]] || die "cargo built no test binary for triage-runtime's smollm2 tests"
  extra=$work/model.extra
  rm -rf "$extra" && mkdir -p "$extra/triage/$model_dir" "$extra$PWD/tests"
  cp -a "$home/$model_dir/." "$extra/triage/$model_dir/"
  # The tests read their reference data from the checkout's path.
  cp -a tests/data "$extra$PWD/tests/"
  boot model "an hour or more" "$model_tests_bin" "${model_tests[*]} --test-threads=1 --show-output" "$extra"
  check model
fi

say "passed: the kernel tests$( ((with_model)) && echo " and SmolLM2's reference tests") on an emulated CPU with AVX-512 VNNI"
