#!/usr/bin/env bash
# Side-by-side inference speed of triage's own runtime and llama.cpp's
# llama-bench, on the same GGUF, thread count, prompt length and context depth.
#
# Each round runs both, alternating which goes first, and measures:
# - prompt processing speed (P tokens),
# - generation speed at depth 0 and at depth P (GEN tokens each),
# - peak resident memory of the process doing the generation.
# At the end it prints the medians, the ratios triage/llama.cpp and the
# targets (prompt >= 0.8x, generation >= 1.0x at both depths, RSS <= 1.2x).
# Below that, triage's own workload figures from the same runs: time to
# first token with a cached system prompt against cold (target <= 0.5x),
# and 8 concurrent generations against one stream (target >= 3x).
#
# llama-bench is built once, from the llama.cpp that the llama-cpp-python
# sdist vendors, into target/llama.cpp/build (a Python venv supplies cmake
# and ninja; a C/C++ compiler is needed), for the host CPU as llama.cpp
# builds by default. Later runs reuse it. Where that build dies on an AMX
# instruction, others follow (see "llama-bench" below).
#
# --avx2-only measures both as a CPU with AVX2 but no AVX-512 would run them
# (AMD Zen 3, say), on this CPU: triage built for x86-64-v3 (sixteen vector
# registers, no AVX-512) with its AVX2 kernels, against llama.cpp built with
# GGML_NATIVE=OFF (AVX2, FMA, F16C, BMI2). The instruction sets match such a
# machine; its caches, memory and cores do not.
#
# Environment:
#   TRIAGE_BENCH_CMD  command to run instead of target/release/triage (split
#                     on spaces; `bench runtime ...` is appended), e.g.
#                     "cargo run --release -p triage --", or a stub for tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/common.sh

LLAMA_CPP_PYTHON_VERSION=0.3.36
MODEL_NAME=smollm2-135m-instruct
dir=target/llama.cpp
cores=$(nproc)

usage() {
  cat <<EOF
Usage: $0 [options]

Compares triage's runtime with llama.cpp's llama-bench on the same model.

Options:
  --model PATH         GGUF to run in both (default: triage's $MODEL_NAME);
                       triage gets it with \`bench runtime --gguf PATH\`
  --threads N          compute threads for both (default: 2, at most $cores)
  --rounds R           measurement rounds; medians are reported (default: 5)
  --prompt-tokens P    prompt length, and the depth of the second generation
                       measurement (default: 200)
  --gen-tokens N       tokens generated per generation measurement (default: 64)
  --avx2-only          run both as on a CPU with AVX2 but no AVX-512 (such as
                       AMD Zen 3): triage built for x86-64-v3 into
                       target/x86-64-v3 and run with TRIAGE_KERNELS=avx2,
                       llama.cpp built with GGML_NATIVE=OFF (AVX2, FMA, F16C,
                       BMI2) into target/llama.cpp/build-avx2
  --json               print one JSON object instead of the table
  -h, --help           print this help
EOF
}

# --- options ------------------------------------------------------------------

model=""
threads=2
rounds=5
prompt_tokens=200
gen_tokens=64
json=0
avx2_only=0

# Reads an option's value from "--opt=V" or "--opt V"; sets $value and $shift.
take_value() {
  local opt=$1 arg=$2
  shift 2
  if [[ $arg == *=* ]]; then
    value=${arg#*=}
    shift=1
  elif (($# > 0)); then
    value=$1
    shift=2
  else
    usage_error "$opt needs a value"
  fi
}

positive() {
  [[ $2 =~ ^[1-9][0-9]*$ ]] || usage_error "$1 must be a positive integer, not '$2'"
}

while (($# > 0)); do
  case $1 in
  --model | --model=*)
    take_value --model "$@"
    model=$value
    ;;
  --threads | --threads=*)
    take_value --threads "$@"
    positive --threads "$value"
    threads=$value
    ;;
  --rounds | --rounds=*)
    take_value --rounds "$@"
    positive --rounds "$value"
    rounds=$value
    ;;
  --prompt-tokens | --prompt-tokens=*)
    take_value --prompt-tokens "$@"
    positive --prompt-tokens "$value"
    prompt_tokens=$value
    ;;
  --gen-tokens | --gen-tokens=*)
    take_value --gen-tokens "$@"
    positive --gen-tokens "$value"
    gen_tokens=$value
    ;;
  --json)
    json=1
    shift=1
    ;;
  --avx2-only)
    avx2_only=1
    shift=1
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  *) usage_error "unknown option '$1'" ;;
  esac
  shift "$shift"
done

if ((threads > cores)); then
  usage_error "--threads $threads is more than the $cores cores of this machine (nproc);" \
    "oversubscribed threads would measure contention, not the runtimes"
fi
# triage's bench needs at least 2 of each.
((prompt_tokens >= 2)) || usage_error "--prompt-tokens must be at least 2"
((gen_tokens >= 2)) || usage_error "--gen-tokens must be at least 2"
[[ $model == "" || -f $model ]] || die "no such model file: $model"
if ((avx2_only)); then
  cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null) "
  for flag in avx2 fma f16c bmi2; do
    [[ $cpu_flags == *" $flag "* ]] || die "--avx2-only needs a CPU with AVX2, FMA, F16C and BMI2;" \
      "this one lacks $flag (/proc/cpuinfo)"
  done
  # triage's AVX2 kernels, whatever else this CPU has.
  export TRIAGE_KERNELS=avx2
fi

# --- triage -------------------------------------------------------------------

# cargo build is quick when nothing changed, and keeps a stale binary from
# being measured.
if [[ -n ${TRIAGE_BENCH_CMD:-} ]]; then
  read -r -a triage_cmd <<<"$TRIAGE_BENCH_CMD"
  triage_build="TRIAGE_BENCH_CMD"
elif ((avx2_only)); then
  triage_cmd=(target/x86-64-v3/release/triage)
  triage_build="x86-64-v3"
  say "building triage for x86-64-v3 (target/x86-64-v3; the first time takes several minutes)"
  RUSTFLAGS="-C target-cpu=x86-64-v3" cargo build --quiet --release -p triage \
    --target-dir target/x86-64-v3 >&2
else
  triage_cmd=(target/release/triage)
  triage_build="native"
  say "building triage (cargo build --release -p triage)"
  cargo build --quiet --release -p triage >&2
fi

# The GGUF that triage runs: `triage models path` where this triage has it,
# else the directory from `triage models list --json`, else the usual cache.
gguf_in() { # prints the file, or the single .gguf in the directory, or nothing
  if [[ -d $1 ]]; then
    local files=("$1"/*.gguf)
    if [[ ${#files[@]} == 1 && -f ${files[0]} ]]; then echo "${files[0]}"; fi
  elif [[ -f $1 ]]; then
    echo "$1"
  fi
}

triage_model() {
  local found="" help
  help=$("${triage_cmd[@]}" models --help 2>/dev/null || true)
  if grep -Eq '^[[:space:]]+path([[:space:]]|$)' <<<"$help"; then
    found=$(gguf_in "$("${triage_cmd[@]}" models path "$MODEL_NAME" 2>/dev/null || true)")
  fi
  if [[ -z $found ]]; then
    found=$(gguf_in "$("${triage_cmd[@]}" models list --json 2>/dev/null | python3 -c '
import json, sys
try:
    for m in json.load(sys.stdin)["models"]:
        if m["name"] == sys.argv[1]:
            print(m["path"])
except Exception:
    pass
' "$MODEL_NAME" || true)")
  fi
  if [[ -z $found ]]; then
    found=$(gguf_in "$HOME/.cache/triage/models/$MODEL_NAME/0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf")
  fi
  echo "$found"
}

# A model given with --model reaches triage too (`bench runtime --gguf`).
gguf_arg=()
if [[ -z $model ]]; then
  model=$(triage_model)
  [[ -n $model ]] ||
    die "cannot find the $MODEL_NAME GGUF; fetch it with: target/release/triage models pull $MODEL_NAME"
else
  gguf_arg=(--gguf "$model")
fi

# --- llama-bench ----------------------------------------------------------------

# Builds llama-bench into the folder $1, of CMake build type $2, with extra
# C/C++ flags $3, for the host CPU (GGML_NATIVE $4, default ON).
build_llama_bench() {
  local build=$1 type=$2 flags=${3:-} native=${4:-ON}
  local venv=$dir/venv
  local sdist=llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION
  local src=$dir/$sdist/vendor/llama.cpp
  say "building llama-bench into $build ($type; once, several minutes)"
  mkdir -p "$dir"
  command -v c++ >/dev/null || die "building llama.cpp needs a C/C++ compiler (c++, cc)"

  if [[ ! -x $venv/bin/pip ]]; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >&2; then
      rm -rf "$venv"
      if ! python3 -c 'import ensurepip' 2>/dev/null; then
        die "python3 -m venv failed: this python3 lacks ensurepip; install python3-venv" \
          "(Debian/Ubuntu: apt-get install python3-venv) and run again"
      fi
      die "python3 -m venv $venv failed"
    fi
  fi
  local pip=("$venv/bin/pip" --disable-pip-version-check --quiet)
  if [[ ! -x $venv/bin/cmake || ! -x $venv/bin/ninja ]]; then
    "${pip[@]}" install cmake ninja >&2
  fi

  # The sdist vendors llama.cpp. --no-binary for this one package only:
  # `--no-binary :all:` would also build cmake from source to read its metadata.
  if [[ ! -f $dir/$sdist.tar.gz ]]; then
    "${pip[@]}" download --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$dir" >&2
    [[ -f $dir/$sdist.tar.gz ]] || die "pip download did not leave $dir/$sdist.tar.gz"
  fi
  if [[ ! -f $src/CMakeLists.txt ]]; then
    tar -xzf "$dir/$sdist.tar.gz" -C "$dir"
  fi

  # The venv's cmake, with its ninja first on PATH.
  local cmake=$PWD/$venv/bin/cmake
  PATH="$PWD/$venv/bin:$PATH" "$cmake" -S "$src" -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE="$type" -DGGML_NATIVE="$native" -DLLAMA_CURL=OFF \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DBUILD_SHARED_LIBS=OFF >&2
  PATH="$PWD/$venv/bin:$PATH" "$cmake" --build "$build" --target llama-bench -j "$cores" >&2
  [[ -x $build/bin/llama-bench ]] || die "the build finished without $build/bin/llama-bench"
}

# llama.cpp as it builds by default: Release, for the host CPU. Two kinds
# of machine here die in it on an AMX instruction (SIGILL):
# - a VM that lists AMX but does not let programs use the tile registers;
# - a Sapphire Rapids VM that does run them, where this llama.cpp's Release
#   build (GCC 12, -O3) executes `tilezero` in its Q4_1 AMX kernel without
#   a tile configuration, while its RelWithDebInfo build (-O2) runs AMX
#   fine: there AMX gives llama.cpp about 2.5x its prompt speed and 2x its
#   generation speed.
# So on SIGILL try the -O2 build, then one without AMX; the first that runs
# is the one compared, and the report names it.
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
# folder | CMake build type | extra flags | GGML_NATIVE | name in the report
candidates=(
  "build|Release||ON|native"
  "build-o2|RelWithDebInfo||ON|native, RelWithDebInfo (-O2)"
  "build-no-amx|Release|$no_amx|ON|native without AMX"
)
if ((avx2_only)); then
  # Without GGML_NATIVE, ggml builds for AVX, AVX2, BMI2, FMA and F16C, and
  # no AVX-512 or AMX: what it builds natively on an AVX2-only CPU.
  candidates=("build-avx2|Release||OFF|AVX2 only, GGML_NATIVE=OFF")
fi
# Before the builds were kept apart, build/ could hold the one without AMX
# (marked no-amx): build it again as llama.cpp's default.
if [[ -f $dir/build/no-amx ]]; then
  say "$dir/build holds a llama-bench without AMX; building it again for this CPU"
  rm -rf "$dir/build"
fi
smoke() { "$llama_bench" -m "$model" -t 1 -r 1 -p 8 -n 0 -o json >/dev/null 2>&1; }
llama_bench="" llama_variant=""
for candidate in "${candidates[@]}"; do
  IFS='|' read -r folder type flags native name <<<"$candidate"
  llama_bench=$dir/$folder/bin/llama-bench
  [[ -x $llama_bench ]] || build_llama_bench "$dir/$folder" "$type" "$flags" "$native"
  rc=0
  smoke || rc=$?
  if ((rc == 0)); then
    llama_variant=$name
    break
  fi
  ((rc == 132)) || die "llama-bench fails on $model (exit $rc); run it by hand: $llama_bench -m $model -p 8 -n 0"
  say "llama-bench ($name) stopped on an illegal instruction"
done
[[ -n $llama_variant ]] || die "every llama-bench build stops on an illegal instruction on $model;" \
  "run one by hand: $llama_bench -m $model -p 8 -n 0"

# --- measurement rounds ------------------------------------------------------------

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs a command and writes its peak RSS (KiB, Linux ru_maxrss) to the file
# given first; passes stdout through and keeps the exit status.
rss_py='
import resource, subprocess, sys
rc = subprocess.run(sys.argv[2:]).returncode
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(rc)
'

# Prints the end of a log and stops.
failed() {
  say "error: $1 failed; the end of its output:"
  tail -n 20 "$2" >&2
  exit 1
}

run_llama() {
  local r=$1 log=$work/llama.log
  say "round $r/$rounds: llama.cpp"
  "$llama_bench" -m "$model" -t "$threads" -r 1 -o json -p "$prompt_tokens" -n 0 \
    >"$work/llama-prompt-$r.json" 2>>"$log" || failed llama-bench "$log"
  python3 -c "$rss_py" "$work/llama-rss-$r" \
    "$llama_bench" -m "$model" -t "$threads" -r 1 -o json -p 0 -n "$gen_tokens" \
    -d "0,$prompt_tokens" >"$work/llama-gen-$r.json" 2>>"$log" || failed llama-bench "$log"
}

run_triage() {
  local r=$1 log=$work/triage.log
  say "round $r/$rounds: triage"
  "${triage_cmd[@]}" bench runtime --threads "$threads" --prompt-tokens "$prompt_tokens" \
    --gen-tokens "$gen_tokens" --rounds 1 --no-baseline --json "${gguf_arg[@]}" \
    >"$work/triage-$r.json" 2>>"$log" || failed "triage bench runtime" "$log"
}

say "model $model, $threads threads, $rounds rounds," \
  "prompt $prompt_tokens tokens, generation $gen_tokens tokens"
# Both runtimes spin their threads at barriers: with other work on the same
# cores, speeds fall apart (llama.cpp to a few tok/s), so say so.
read -r load _ </proc/loadavg
if awk -v l="$load" 'BEGIN { exit !(l >= 0.5) }'; then
  say "warning: load average $load: other processes compete for the cores;" \
    "the figures are only meaningful on an idle machine"
fi
for ((r = 1; r <= rounds; r++)); do
  # Alternate who goes first, so neither always runs on a warmer (or hotter) machine.
  if ((r % 2)); then
    run_llama "$r"
    run_triage "$r"
  else
    run_triage "$r"
    run_llama "$r"
  fi
done

# --- report ---------------------------------------------------------------------------

python3 - "$work" "$rounds" "$prompt_tokens" "$gen_tokens" "$threads" "$model" "$json" "$llama_variant" \
  "$triage_build" <<'PY'
import json, statistics, sys

work, rounds, p, gen, threads, model, as_json, variant, triage_build = sys.argv[1:]
rounds, p, gen, threads = int(rounds), int(p), int(gen), int(threads)

# (key, label, unit, target ratio, higher is better)
METRICS = [
    ("prompt_tokens_per_s", f"prompt ({p} tokens)", "tok/s", 0.8, True),
    ("generation_tokens_per_s_depth0", "generation, depth 0", "tok/s", 1.0, True),
    ("generation_tokens_per_s_depth_prompt", f"generation, depth {p}", "tok/s", 1.0, True),
    ("peak_rss_mb", "peak RSS", "MB", 1.2, False),
]
# triage's own figures for what a multi-specialist workload offers (no
# llama.cpp counterpart): (section, label, target, higher is better).
WORKLOAD = [
    ("ttft", "first token with the system prompt cached / cold", 0.5, False),
    ("batched", "generation, {concurrency} concurrent / one stream", 3.0, True),
]


def load(name):
    with open(f"{work}/{name}") as f:
        return f.read()


def bench_json(name):
    text = load(name)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        sys.exit(f"error: llama-bench printed no JSON result ({name} begins {text[:200]!r})")


def bench_speed(results, n_prompt, n_gen, n_depth):
    for t in results:
        if (t["n_prompt"], t["n_gen"], t.get("n_depth", 0)) == (n_prompt, n_gen, n_depth):
            return t["avg_ts"]
    sys.exit(f"error: llama-bench printed no result for prompt {n_prompt}, "
             f"generation {n_gen}, depth {n_depth}")


def triage_object(text):
    # The last line that holds a JSON object, in case anything else reached stdout.
    for line in reversed(text.splitlines()):
        if line.strip().startswith("{"):
            return json.loads(line)
    sys.exit("error: triage bench runtime printed no JSON object")


llama, triage = [], []
build = kernels = None
for r in range(1, rounds + 1):
    pp = bench_json(f"llama-prompt-{r}.json")
    tg = bench_json(f"llama-gen-{r}.json")
    build = build or pp[0].get("build_commit")
    llama.append({
        "prompt_tokens_per_s": bench_speed(pp, p, 0, 0),
        "generation_tokens_per_s_depth0": bench_speed(tg, 0, gen, 0),
        "generation_tokens_per_s_depth_prompt": bench_speed(tg, 0, gen, p),
        # ru_maxrss is in KiB; triage reports VmHWM (KiB) / 1024 as MB, likewise.
        "peak_rss_mb": int(load(f"llama-rss-{r}")) / 1024,
    })
    t = triage_object(load(f"triage-{r}.json"))
    missing = [k for k, *_ in METRICS if k not in t]
    if missing:
        sys.exit(f"error: triage's JSON lacks {', '.join(missing)}")
    kernels = kernels or t.get("kernels", "unknown")
    if r == 1 and t.get("threads", threads) != threads:
        print(f"warning: triage reports {t['threads']} threads, not {threads}", file=sys.stderr)
    triage.append({k: t[k] for k, *_ in METRICS})
    for section, *_ in WORKLOAD:
        if "ratio" not in t.get(section, {}):
            sys.exit(f"error: triage's JSON lacks {section}.ratio")
        triage[-1][section] = t[section]["ratio"]
        if section == "batched":
            concurrency = t[section].get("concurrency", 8)


def medians(rows):
    return {k: statistics.median(row[k] for row in rows) for k, *_ in METRICS}


ours, theirs = medians(triage), medians(llama)
workload = {}
for section, label, target, higher in WORKLOAD:
    ratio = statistics.median(row[section] for row in triage)
    met = ratio >= target if higher else ratio <= target
    workload[section] = {"ratio": ratio, ("min_ratio" if higher else "max_ratio"): target, "met": met}
ratios = {k: (ours[k] / theirs[k] if theirs[k] else None) for k, *_ in METRICS}
targets = {}
for k, _, _, target, higher in METRICS:
    met = ratios[k] is not None and (ratios[k] >= target if higher else ratios[k] <= target)
    targets[k] = {("min_ratio" if higher else "max_ratio"): target, "met": met}

if as_json == "1":
    print(json.dumps({
        "model": model,
        "threads": threads,
        "triage_kernels": kernels,
        "triage_build": triage_build,
        "rounds": rounds,
        "prompt_tokens": p,
        "gen_tokens": gen,
        "triage": {"per_round": triage, "median": ours},
        "llama_cpp": {"build_commit": build, "variant": variant, "per_round": llama, "median": theirs},
        "ratios": ratios,  # triage / llama.cpp
        "targets": targets,
        "workload": workload,  # triage alone: medians of its per-round ratios
    }, indent=2))
    sys.exit(0)

header = ["measure", "triage", "llama.cpp", "triage/llama.cpp", "target", ""]
rows = []
for k, label, unit, target, higher in METRICS:
    fmt = (lambda v: f"{v:.1f} {unit}") if unit == "tok/s" else (lambda v: f"{v:.0f} {unit}")
    ratio = "n/a" if ratios[k] is None else f"{ratios[k]:.2f}x"
    if not higher:
        ratio += " (lower is better)"
    rows.append([label, fmt(ours[k]), fmt(theirs[k]), ratio,
                 f"{'>=' if higher else '<='} {target:.1f}x",
                 "pass" if targets[k]["met"] else "MISS"])
widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
print(f"{model}\n{threads} threads, median of {rounds} rounds, "
      f"generation of {gen} tokens; triage's {kernels} kernels ({triage_build} build), "
      f"llama.cpp build {build} ({variant})")
for row in [header] + rows:
    print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())

header = ["triage alone", "ratio", "target", ""]
rows = []
for section, label, target, higher in WORKLOAD:
    w = workload[section]
    rows.append([label.format(concurrency=concurrency), f"{w['ratio']:.2f}x",
                 f"{'>=' if higher else '<='} {target:.1f}x", "pass" if w["met"] else "MISS"])
widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
print()
for row in [header] + rows:
    print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
PY
