#!/usr/bin/env bash
# Runs every cargo-fuzz (libFuzzer) target of otpd for a bounded time:
#
#   bash fuzz/run.sh [SECONDS]        # SECONDS per target, default 60
#   bash fuzz/run.sh 300 radius_codec # only the targets named
#
# Works on the stable toolchain (RUSTC_BOOTSTRAP=1 lets it take the -Z
# flags cargo-fuzz passes) and installs cargo-fuzz when it is missing. Each
# target starts from its seeds in fuzz/corpus/<target>/ and writes what it
# discovers to fuzz/work/<target>/ (not committed), so the seeds stay few.
# Exits 1 when a target crashes (or hangs, or runs out of memory), naming
# it and the input that did it (saved under fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
    echo "usage: bash fuzz/run.sh [SECONDS] [TARGET...]" >&2
    exit 2
fi
all=(radius_codec radius_handler config_parser validity_date token_import pin_otp_split local_socket)
targets=("${@:-${all[@]}}")

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    for attempt in 1 2 3; do
        if cargo install cargo-fuzz --locked; then
            break
        fi
        if ((attempt == 3)); then
            echo "cannot install cargo-fuzz" >&2
            exit 1
        fi
        echo "cargo install cargo-fuzz failed (attempt $attempt); retrying in 10 s" >&2
        sleep 10
    done
fi
cargo fuzz --version

# Build every target once; `cargo fuzz run` below then finds them built.
cargo fuzz build

# The handler's store lives in a temporary directory that a target never
# removes (it lives as long as the process): keep those in one place.
work=$PWD/fuzz/work
mkdir -p "$work"
export TMPDIR=$work/tmp
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"

# Larger inputs where the format allows them: RADIUS packets are up to
# 4096 bytes (plus padding), import files hold many lines.
max_len() {
    case $1 in
        radius_codec | radius_handler) echo 4200 ;;
        token_import) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

failed=()
summary=()
for target in "${targets[@]}"; do
    echo "=== fuzzing $target for ${seconds}s"
    mkdir -p "$work/$target" "fuzz/artifacts/$target"
    log=$work/$target.log
    flags=(
        "-max_total_time=$seconds"
        "-max_len=$(max_len "$target")"
        -rss_limit_mb=2048
        -timeout=30
        -print_final_stats=1
        "-artifact_prefix=fuzz/artifacts/$target/"
    )
    if [[ -f fuzz/dicts/$target.dict ]]; then
        flags+=("-dict=fuzz/dicts/$target.dict")
    fi
    # The outer timeout only guards against a target that ignores
    # -max_total_time (a hang inside libFuzzer itself).
    status=0
    timeout $((seconds + 300)) cargo fuzz run "$target" "$work/$target" "fuzz/corpus/$target" -- "${flags[@]}" \
        2>&1 | tee "$log" | grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse)' || status=${PIPESTATUS[0]}
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1 || true)
    if ((status != 0)); then
        failed+=("$target")
        summary+=("$target: FAILED (exit $status)")
        echo "*** $target failed (exit $status); inputs that did it:" >&2
        ls -l "fuzz/artifacts/$target/" >&2 || true
    else
        summary+=("$target: ok, ${done_line:-no final line}")
    fi
done
rm -rf "$TMPDIR"

echo "=== fuzzing summary (${seconds}s per target)"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]} > 0)); then
    echo "fuzz targets that crashed: ${failed[*]}" >&2
    echo "reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/<file>" >&2
    exit 1
fi
