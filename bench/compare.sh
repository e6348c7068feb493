#!/usr/bin/env bash
# bench/compare.sh: otpd against FreeRADIUS (PAP from a users file) and
# pam_otpd against pam_oath, on this machine, in one run.
#
# It installs what it needs (freeradius, freeradius-utils, libpam-oath,
# oathtool, pamtester, jq, fio), builds otpd, otpd-load and pam_otpd in release
# mode, starts a private FreeRADIUS 3 and a private `otpd serve` on loopback
# ports from a temporary directory, drives both with the same generator
# (otpd-load), times PAM logins through pamtester, times the disk's own
# fdatasync with fio (the floor under a durable login's latency), and prints
# a table with the issue's targets marked met or missed. Everything it starts is stopped
# and its temporary files and /etc/pam.d/otpd-bench-* are removed on exit.
#
# Run as root (it installs packages and writes /etc/pam.d), from anywhere:
#   sudo bench/compare.sh [--users N] [--duration SECONDS] [--outstanding N]
#                         [--out FILE] [--pam-logins N]
# The same settings as environment variables: N, DURATION, OUTSTANDING, OUT,
# PAM_LOGINS; further ones: PIN_USERS (50), TOTP_WINDOW (5), TOTP_USERS
# (computed), THREADS (generator threads, 1), SOCKETS (4), FR_PORT (28120),
# OTPD_PORT (28121; the next free port is taken when one is busy),
# DURABILITY (written into otpd.toml when set), ENROLL=init (enroll with one
# `otpd token init` a token even when `otpd token import` exists), KEEP=1
# (keep the temp dir), BIG_TOKENS (1000000: the store is filled up to this
# many tokens for the last HOTP run, with otpd restarted to read its peak
# RSS; 0 skips it), ROUNDS (3: FreeRADIUS PAP accept and otpd HOTP accept,
# each at its peak and at half of it, and otpd TOTP accept are run this many
# times, alternating; the HOTP and TOTP targets take the median of the
# rounds' ratios and the p99 target the median of the rounds' tails, so that
# the machine's drift from minute to minute falls on both servers alike;
# each TOTP round has users of its own: tuserK in round 1, tRuserK in round R).
# Exit status: 0 when every run and login behaved (targets missed or not),
# 1 when something failed (wrong answers, failed logins), 2 on bad usage.

set -euo pipefail

N=${N:-1000}
DURATION=${DURATION:-10}
OUTSTANDING=${OUTSTANDING:-64}
OUT=${OUT:-}
PAM_LOGINS=${PAM_LOGINS:-200}
PIN_USERS=${PIN_USERS:-50}
TOTP_WINDOW=${TOTP_WINDOW:-5}
TOTP_USERS=${TOTP_USERS:-}
THREADS=${THREADS:-1}
SOCKETS=${SOCKETS:-4}
FR_PORT=${FR_PORT:-28120}
OTPD_PORT=${OTPD_PORT:-28121}
DURABILITY=${DURABILITY:-}
KEEP=${KEEP:-}
ENROLL=${ENROLL:-}
BIG_TOKENS=${BIG_TOKENS:-1000000}
ROUNDS=${ROUNDS:-3}

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
    --users) N=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --outstanding) OUTSTANDING=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --pam-logins) PAM_LOGINS=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for var in N DURATION OUTSTANDING PAM_LOGINS PIN_USERS THREADS SOCKETS FR_PORT OTPD_PORT ROUNDS ${TOTP_USERS:+TOTP_USERS}; do
    if ! [[ ${!var} =~ ^[1-9][0-9]*$ ]]; then
        echo "compare.sh: $var must be a positive whole number, not '${!var}'" >&2
        exit 2
    fi
done
if ! [[ $TOTP_WINDOW =~ ^[0-9]+$ ]]; then
    echo "compare.sh: TOTP_WINDOW must be a whole number of steps, not '$TOTP_WINDOW'" >&2
    exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "compare.sh: run as root (it installs packages and writes /etc/pam.d)" >&2
    exit 2
fi

# RFC 4226's test key, for every token; otpd-load and oathtool compute codes from it.
KEY=3132333435363738393031323334353637383930
SECRET=testing123
PAP_PASSWORD=bench-password
PIN=1234
# Raised on the tokens of the reject runs: the default (10) would lock them
# after a few requests and the runs would measure the cheaper locked path.
MAX_FAIL=1000000000
ROOT=$(cd "$(dirname "$0")/.." && pwd)

log() { printf '%s\n' "== $*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }

# Problems found on the way; reported at the end, they make the exit status 1.
PROBLEMS=()
problem() {
    PROBLEMS+=("$*")
    printf 'compare.sh: PROBLEM: %s\n' "$*" >&2
}

retry() {
    local try
    for try in 1 2 3; do
        "$@" && return 0
        log "failed (try $try of 3): $*"
        sleep $((try * 5))
    done
    return 1
}

# --- what the script needs --------------------------------------------------

install_packages() {
    local pam_oath_ok=
    dpkg-query -W -f='${Status}' libpam-oath 2>/dev/null | grep -q 'ok installed' && pam_oath_ok=1
    if command -v freeradius >/dev/null && command -v radclient >/dev/null && command -v oathtool >/dev/null \
        && command -v pamtester >/dev/null && command -v jq >/dev/null && command -v fio >/dev/null \
        && [ -n "$pam_oath_ok" ]; then
        return
    fi
    log "installing freeradius freeradius-utils libpam-oath oathtool pamtester jq fio"
    export DEBIAN_FRONTEND=noninteractive
    retry apt-get update -q || die "apt-get update failed"
    retry apt-get install -y -q freeradius freeradius-utils libpam-oath oathtool pamtester jq fio \
        || die "apt-get install failed"
}

build() {
    local cargo
    cargo=$(command -v cargo || true)
    [ -n "$cargo" ] || [ ! -x "$HOME/.cargo/bin/cargo" ] || cargo=$HOME/.cargo/bin/cargo
    [ -n "$cargo" ] || die "cargo not found (install Rust, e.g. with rustup)"
    log "building otpd, otpd-load and pam_otpd (release)"
    (cd "$ROOT" && "$cargo" build --release -q -p otpd -p pam_otpd) || die "cargo build failed"
    local dir
    dir=$(cd "$ROOT" && "$cargo" metadata --format-version 1 --no-deps | jq -r .target_directory)/release
    OTPD=$dir/otpd
    LOAD=$dir/otpd-load
    PAM_OTPD=$dir/libpam_otpd.so
    for f in "$OTPD" "$LOAD" "$PAM_OTPD"; do [ -e "$f" ] || die "the build made no $f"; done
}

# --- processes, ports, cleanup ----------------------------------------------

FR_PID=
OTPD_PID=
WORK=
cleanup() {
    local pid
    for pid in $FR_PID $OTPD_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $FR_PID $OTPD_PID; do
        wait "$pid" 2>/dev/null || true
    done
    rm -f /etc/pam.d/otpd-bench-oath /etc/pam.d/otpd-bench-otpd /etc/pam.d/otpd-bench-local /etc/pam.d/otpd-bench-permit
    if [ -n "$WORK" ]; then
        if [ -n "$KEEP" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Whether a UDP port is bound on any address (from /proc, no tools needed).
port_busy() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v h=":$hex" 'FNR > 1 && substr($2, length($2) - 4) == h { found = 1 } END { exit !found }' \
        /proc/net/udp /proc/net/udp6 2>/dev/null
}

free_port() {
    local port=$1 avoid=${2:-0}
    while port_busy "$port" || [ "$port" -eq "$avoid" ]; do port=$((port + 1)); done
    echo "$port"
}

# Waits until `pid` has bound UDP `port` (10 s at most).
wait_bound() {
    local pid=$1 port=$2 name=$3 log_file=$4
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { tail -20 "$log_file" >&2; die "$name exited at startup"; }
        port_busy "$port" && return
        sleep 0.1
    done
    tail -20 "$log_file" >&2
    die "$name did not bind port $port within 10 s"
}

# --- FreeRADIUS --------------------------------------------------------------

# A copy of the packaged configuration (/etc/freeradius/3.0) with these changes:
# * paths (raddbdir, logdir, run_dir) point into the temp dir, and the server
#   stays root (user/group commented out): it reads files in a root-only dir;
#   dropping privileges does not change the work per request.
# * the default virtual server's listen sections (*:1812, *:1813, [::]) are
#   removed and one auth listener on 127.0.0.1:FR_PORT feeds the same server;
#   inner-tunnel (EAP only, port 18120) is disabled.
# * clients.conf: one client, 127.0.0.1, secret testing123, and
#   require_message_authenticator = yes, as otpd requires by default.
# * post-auth adds Message-Authenticator to every reply, the BlastRADIUS
#   mitigation otpd applies (FreeRADIUS 3.2.5 and later do it themselves,
#   3.2.1 of Debian 12 does not); otpd-load insists on it.
# * reject_delay = 0 (packaged: 1): FreeRADIUS holds every Access-Reject back
#   for a second, so a reject run would measure the delay (outstanding / 1 s),
#   not the work; otpd sends rejects at once (failcounters lock guessed tokens).
# * the users file (mods-config/files/authorize) holds the N users only, all
#   with the same password.
# The default site's authorize/authenticate/post-auth modules are untouched
# (chap, mschap, digest, suffix, eap, files, expiration, logintime, pap);
# auth logging is off as packaged, and no accounting is sent, so the detail
# and linelog modules never run.
setup_freeradius() {
    local raddb=$WORK/raddb
    cp -a /etc/freeradius/3.0 "$raddb"
    mkdir -p "$WORK/fr-log" "$WORK/fr-run"
    sed -i -e "s|^raddbdir = .*|raddbdir = $raddb|" \
        -e "s|^logdir = .*|logdir = $WORK/fr-log|" \
        -e "s|^run_dir = .*|run_dir = $WORK/fr-run|" \
        -e 's/^\(\s*\)\(user\|group\) = freerad/\1#\2 = freerad/' \
        -e 's/^\(\s*\)reject_delay = .*/\1reject_delay = 0/' "$raddb/radiusd.conf"
    grep -q '^\s*\(user\|group\) = ' "$raddb/radiusd.conf" && die "could not make FreeRADIUS stay root"
    grep -q '^\s*reject_delay = 0$' "$raddb/radiusd.conf" || die "could not set FreeRADIUS's reject_delay to 0"
    rm -f "$raddb/sites-enabled/inner-tunnel" "$raddb/sites-enabled/default"
    # Drop every listen { ... } block (braces counted outside comments).
    awk '
        function braces(s) { sub(/#.*/, "", s); return gsub(/\{/, "{", s) - gsub(/\}/, "}", s) }
        !skip && /^[ \t]*listen[ \t]*\{/ { skip = 1; depth = braces($0); if (depth <= 0) skip = 0; next }
        skip { depth += braces($0); if (depth <= 0) skip = 0; next }
        { print }
    ' "$raddb/sites-available/default" >"$raddb/sites-enabled/default"
    grep -q '^[[:space:]]*listen[[:space:]]*{' "$raddb/sites-enabled/default" \
        && die "could not remove the listen sections of the FreeRADIUS default site"
    # Message-Authenticator on accepts (post-auth) and rejects (Post-Auth-Type REJECT).
    sed -i -e 's|^post-auth {|&\n\tupdate reply {\n\t\t\&Message-Authenticator := 0x00\n\t}|' \
        -e 's|^\(\s*\)Post-Auth-Type REJECT {|&\n\1\tupdate reply {\n\1\t\t\&Message-Authenticator := 0x00\n\1\t}|' \
        "$raddb/sites-enabled/default"
    [ "$(grep -c 'Message-Authenticator := 0x00' "$raddb/sites-enabled/default")" -eq 2 ] \
        || die "could not add Message-Authenticator to the FreeRADIUS replies"
    cat >"$raddb/sites-enabled/bench-listen" <<EOF
listen {
	type = auth
	ipaddr = 127.0.0.1
	port = $FR_PORT
	virtual_server = default
}
EOF
    cat >"$raddb/clients.conf" <<EOF
client bench {
	ipaddr = 127.0.0.1
	secret = $SECRET
	require_message_authenticator = yes
}
EOF
    awk -v n="$N" -v pw="$PAP_PASSWORD" 'BEGIN { for (i = 0; i < n; i++) printf "user%d Cleartext-Password := \"%s\"\n", i, pw }' \
        >"$raddb/mods-config/files/authorize"
    freeradius -C -d "$raddb" >"$WORK/freeradius-check.log" 2>&1 \
        || { tail -20 "$WORK/freeradius-check.log" >&2; die "the FreeRADIUS configuration does not load"; }
}

start_freeradius() {
    # -f: foreground; -l stdout: log to stdout (not -X: debug output is far too slow).
    freeradius -f -d "$WORK/raddb" -l stdout >"$WORK/freeradius.log" 2>&1 &
    FR_PID=$!
    wait_bound "$FR_PID" "$FR_PORT" FreeRADIUS "$WORK/freeradius.log"
}

# --- otpd ----------------------------------------------------------------------

CONF=
otpd_cli() { "$OTPD" --config "$CONF" "$@"; }

setup_otpd() {
    local dir=$WORK/otpd
    mkdir -p "$dir"
    CONF=$dir/otpd.toml
    {
        echo 'database = "otpd.db"'
        echo 'key_file = "otpd.key"'
        [ -z "$DURABILITY" ] || echo "durability = \"$DURABILITY\""
        cat <<EOF
# The reject runs measure the store path: without this, each user's 11th
# failure in a minute would be refused by the rate limit before the store.
[rate_limit]
failures_per_user = 0
failures_per_source = 0

[radius]
listen = ["127.0.0.1:$OTPD_PORT"]

[[radius.clients]]
name = "lo"
address = "127.0.0.1/32"
secret = "$SECRET"

[[realms]]
name = "corp"
default = true
resolvers = ["u"]

[[resolvers]]
name = "u"
type = "passwdfile"
path = "users"

# The PAM user has a realm of its own, with a userstore of one line as
# pam_oath's users file has: a PAM login is a process of its own that
# reads its userstore whole, and the load runs' thousands of users are
# not part of the comparison.
[[realms]]
name = "pam"
resolvers = ["p"]

[[resolvers]]
name = "p"
type = "passwdfile"
path = "pam-users"

# pam_otpd asks the running daemon over this socket (README, "PAM"); the
# in-process PAM run uses this file without it.
[pam]
socket = "pam.sock"
EOF
    } >"$CONF"
    {
        awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "user%d:*\n", i }'
        awk -v n="$PIN_USERS" 'BEGIN { for (i = 0; i < n; i++) printf "puser%d:*\n", i }'
    } >"$dir/users"
    echo 'pamuser:*' >"$dir/pam-users"
    if [ "$ENROLL" != init ] && otpd_cli token import --help >/dev/null 2>&1; then
        IMPORT=1
        log "enrolling tokens with 'otpd token import'"
    else
        IMPORT=
        log "enrolling tokens one 'otpd token init' at a time ('otpd token import' is not available)"
    fi
    enroll hotp H user "$N"
    enroll hotp P puser "$PIN_USERS"
    enroll hotp PAM pamuser 1 pam
    # PINs for the puser tokens; failcounters that never lock for the reject runs.
    log "setting PINs and maxfail"
    {
        awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "H-user%d\n", i }' | sed 's/$/ --max-fail '"$MAX_FAIL"'/'
        awk -v n="$PIN_USERS" 'BEGIN { for (i = 0; i < n; i++) printf "P-puser%d\n", i }' \
            | sed 's/$/ --max-fail '"$MAX_FAIL"' --pin '"$PIN"'/'
    } | xargs -L 1 "$OTPD" --config "$CONF" token set >/dev/null \
        || die "otpd token set failed"
}

# enroll TYPE SERIAL_PREFIX USER_PREFIX COUNT [REALM]: tokens SERIAL_PREFIX-USERk for
# users USERk (k = 0..COUNT-1) of the default realm, or with REALM one token for
# user USER_PREFIX of that realm.
enroll() {
    local type=$1 sp=$2 up=$3 count=$4 realm=${5:-} timestep="" csv=$WORK/otpd/import-$2.csv
    [ "$type" = totp ] && timestep=30
    if [ -n "$realm" ]; then
        printf '%s-%s,%s,%s,6,%s,%s,%s\n' "$sp" "$up" "$KEY" "$type" "$timestep" "$up" "$realm" >"$csv"
    else
        awk -v n="$count" -v sp="$sp" -v up="$up" -v key="$KEY" -v type="$type" -v ts="$timestep" \
            'BEGIN { for (i = 0; i < n; i++) printf "%s-%s%d,%s,%s,6,%s,%s%d,\n", sp, up, i, key, type, ts, up, i }' >"$csv"
    fi
    if [ -n "$IMPORT" ]; then
        otpd_cli token import "$csv" >/dev/null || die "otpd token import $csv failed"
    else
        # serial,key,type,digits,timestep,user,realm -> token init arguments.
        awk -F, '{ printf "--serial %s --otpkey %s --type %s --digits %s%s --user %s%s\n", $1, $2, $3, $4, ($5 == "" ? "" : " --timestep " $5), $6, ($7 == "" ? "" : " --realm " $7) }' "$csv" \
            | xargs -L 1 "$OTPD" --config "$CONF" token init >/dev/null \
            || die "otpd token init failed"
    fi
}

start_otpd() {
    (cd "$WORK/otpd" && exec "$OTPD" --config "$CONF" serve) >"$WORK/otpd.log" 2>&1 &
    OTPD_PID=$!
    wait_bound "$OTPD_PID" "$OTPD_PORT" otpd "$WORK/otpd.log"
}

# --- load runs -------------------------------------------------------------------

declare -A RATE P50 P99 CPU SENT ACCEPT REJECT TIMEOUT BAD LABEL
RUNS=()

# run NAME LABEL EXPECT(accept|reject|any) PORT PID [otpd-load flags...]
run() {
    local name=$1 label=$2 expect=$3 port=$4 pid=$5
    shift 5
    local json=$WORK/run-$name.json
    log "run $name: $label"
    "$LOAD" --server "127.0.0.1:$port" --secret "$SECRET" --server-pid "$pid" --json \
        --threads "$THREADS" "$@" >"$json" 2>"$WORK/run-$name.log" \
        || { tail -5 "$WORK/run-$name.log" >&2; die "otpd-load failed in run $name"; }
    RUNS+=("$name")
    LABEL[$name]=$label
    RATE[$name]=$(jq -r '.requests_per_s' "$json")
    P50[$name]=$(jq -r '.latency_us.p50' "$json")
    P99[$name]=$(jq -r '.latency_us.p99' "$json")
    CPU[$name]=$(jq -r '.server_cpu_us_per_request // 0' "$json")
    SENT[$name]=$(jq -r '.sent' "$json")
    ACCEPT[$name]=$(jq -r '.accept' "$json")
    REJECT[$name]=$(jq -r '.reject' "$json")
    TIMEOUT[$name]=$(jq -r '.timeout' "$json")
    BAD[$name]=$(jq -r '.bad' "$json")
    printf '   %.0f requests/s, p50 %s, p99 %s, accept %s, reject %s, timeout %s, bad %s\n' \
        "${RATE[$name]}" "$(ms "${P50[$name]}")" "$(ms "${P99[$name]}")" "${ACCEPT[$name]}" \
        "${REJECT[$name]}" "${TIMEOUT[$name]}" "${BAD[$name]}" >&2
    [ "${BAD[$name]}" -eq 0 ] || problem "run $name: ${BAD[$name]} answers failed verification"
    case $expect in
    accept) [ "${REJECT[$name]}" -eq 0 ] || problem "run $name: ${REJECT[$name]} rejects in an accept run" ;;
    reject) [ "${ACCEPT[$name]}" -eq 0 ] || problem "run $name: ${ACCEPT[$name]} accepts in a reject run" ;;
    esac
    [ "$expect" = any ] || [ "${TIMEOUT[$name]}" -eq 0 ] || problem "run $name: ${TIMEOUT[$name]} timeouts"
    [ "$((ACCEPT[$name] + REJECT[$name]))" -gt 0 ] || problem "run $name: no answers"
}

# µs -> "0.42 ms"
ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }
# a / b with two decimals ("-" when b is 0)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
# Whether a >= b (floats).
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
ceil_div() { echo $((($1 + $2 - 1) / $2)); }
# The median of the numbers given as arguments.
median() {
    printf '%s\n' "$@" | sort -g \
        | awk '{ r[NR] = $1 } END { print NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2 }'
}

# --- the disk ----------------------------------------------------------------------

# The disk's own fdatasync, timed by fio for 5 s in the work directory (the
# file system otpd's store is on): 8 KiB appended and synced at a time, about
# what one commit group adds to the WAL. A durable login waits for one such
# sync, so its p99 cannot be far below the disk's. Sets SYNC_P50/SYNC_P99 (µs)
# and SYNC_RATE (syncs a second).
probe_disk() {
    local json=$WORK/fio.json
    fio --name=fdatasync --directory="$WORK" --filename=fio.dat --rw=write --bs=8k --size=64m \
        --ioengine=psync --fdatasync=1 --runtime=5 --time_based --output-format=json >"$json" 2>"$WORK/fio.log" \
        || die "fio failed (see $WORK/fio.log)"
    rm -f "$WORK/fio.dat"
    SYNC_P50=$(jq -r '.jobs[0].sync.lat_ns.percentile["50.000000"] / 1000' "$json")
    SYNC_P99=$(jq -r '.jobs[0].sync.lat_ns.percentile["99.000000"] / 1000' "$json")
    SYNC_RATE=$(jq -r '.jobs[0].sync.lat_ns.N / .jobs[0].job_runtime * 1000 | floor' "$json")
    log "disk: fdatasync p50 $(ms "$SYNC_P50"), p99 $(ms "$SYNC_P99"), $SYNC_RATE syncs/s"
}

# --- PAM ---------------------------------------------------------------------------

# Times PAM_LOGINS rounds of pamtester logins as USER, one login through each
# SERVICE:FIRST:STRIDE a round, interleaved so that the machine's drift from
# minute to minute falls on every service alike. Round R's login uses the HOTP
# code of counter FIRST + (R-1) * STRIDE (two services sharing a token take
# turns: 0:2 and 1:2). Sets PAM_MS[SERVICE] (ms per login) and counts failures.
declare -A PAM_MS
time_pam() {
    local user=$1 spec service first stride round code start end
    shift
    local -A codes total failures
    for spec in "$@"; do
        IFS=: read -r service first stride <<<"$spec"
        codes[$service]=$(oathtool --hotp -c "$first" -w "$(((PAM_LOGINS - 1) * stride))" "$KEY" \
            | awk -v s="$stride" '(NR - 1) % s == 0')
        [ "$(wc -l <<<"${codes[$service]}")" -eq "$PAM_LOGINS" ] || die "oathtool gave too few codes"
        total[$service]=0 failures[$service]=0
    done
    for ((round = 1; round <= PAM_LOGINS; round++)); do
        for spec in "$@"; do
            service=${spec%%:*}
            code=$(sed -n "${round}p" <<<"${codes[$service]}")
            start=${EPOCHREALTIME/./}
            # A here-string, not a pipe: pam_permit never reads the code, and with
            # pipefail a writer killed by SIGPIPE would count as a failed login.
            if ! pamtester "$service" "$user" authenticate <<<"$code" >/dev/null 2>>"$WORK/pam-$service.log"; then
                failures[$service]=$((failures[$service] + 1))
            fi
            end=${EPOCHREALTIME/./}
            total[$service]=$((total[$service] + end - start))
        done
    done
    for spec in "$@"; do
        service=${spec%%:*}
        PAM_MS[$service]=$(awk -v us="${total[$service]}" -v n="$PAM_LOGINS" 'BEGIN { printf "%.2f", us / n / 1e3 }')
        [ "${failures[$service]}" -eq 0 ] \
            || problem "PAM $service: ${failures[$service]} of $PAM_LOGINS logins failed (see $WORK/pam-$service.log)"
        log "PAM $service: ${PAM_MS[$service]} ms per login, ${failures[$service]} failures"
    done
}

bench_pam() {
    local pam_dir=$WORK/pam
    mkdir -p "$pam_dir"
    printf 'HOTP pamuser - %s\n' "$KEY" >"$pam_dir/users.oath"
    chown root:root "$pam_dir/users.oath"
    chmod 0600 "$pam_dir/users.oath"
    echo "auth required pam_oath.so usersfile=$pam_dir/users.oath window=20" >/etc/pam.d/otpd-bench-oath
    echo "auth required $PAM_OTPD config=$CONF realm=pam" >/etc/pam.d/otpd-bench-otpd
    # The same configuration without [pam] socket: the module opens the store itself.
    local local_conf
    local_conf=$(dirname "$CONF")/otpd-local.toml
    sed '/^# pam_otpd asks the running daemon/,$d' "$CONF" >"$local_conf"
    echo "auth required $PAM_OTPD config=$local_conf realm=pam" >/etc/pam.d/otpd-bench-local
    # pamtester's own cost (process start, libpam, the conversation), for reference.
    echo "auth required pam_permit.so" >/etc/pam.d/otpd-bench-permit
    # otpd-bench-otpd and -local share the token: they take turns with its codes.
    time_pam pamuser otpd-bench-permit:0:1 otpd-bench-oath:0:1 otpd-bench-otpd:0:2 otpd-bench-local:1:2
    grep -q 'pam: user=pamuser' "$WORK/otpd.log" || problem "pam_otpd did not ask the daemon (no PAM line in $WORK/otpd.log)"
    PAM_PERMIT_MS=${PAM_MS[otpd-bench-permit]}
    PAM_OATH_MS=${PAM_MS[otpd-bench-oath]}
    PAM_OTPD_MS=${PAM_MS[otpd-bench-otpd]}
    PAM_LOCAL_MS=${PAM_MS[otpd-bench-local]}
}

# --- the report ----------------------------------------------------------------------

TARGETS=()
target() { # target TEXT MET(0|1|2: measured, no threshold here)
    local mark=missed
    [ "$2" -eq 1 ] && mark=met
    [ "$2" -eq 2 ] && mark=measured
    TARGETS+=("$1|$mark")
}

report() {
    local name base line md
    md=$WORK/report.md
    {
        echo "otpd $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?') against $(freeradius -v 2>/dev/null | head -1 | sed 's/^radiusd: //; s/, for host.*//')," \
            "$(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(date -u +%Y-%m-%d)."
        echo "$N users, $DURATION s per run, $OUTSTANDING outstanding over $SOCKETS sockets, generator threads $THREADS;" \
            "otpd durability ${DURABILITY:-default (power-loss, fsync per commit)}; TOTP window ±$TOTP_WINDOW steps over $TOTP_USERS users a round."
        echo
        echo "| run | requests/s | p50 | p99 | server CPU µs/request | timeouts | vs FreeRADIUS |"
        echo "|---|---|---|---|---|---|---|"
        for name in "${RUNS[@]}"; do
            base=-
            case $name in
            c | d | g | recovered | big) base=$(ratio "${RATE[$name]}" "${RATE[a]}")x ;;
            c[0-9]* | d[0-9]*) base=$(ratio "${RATE[$name]}" "${RATE[a${name#?}]}")x ;;
            e | f) base=$(ratio "${RATE[$name]}" "${RATE[b]}")x ;;
            esac
            printf '| %s | %.0f | %s | %s | %.0f | %s | %s |\n' "${LABEL[$name]}" "${RATE[$name]}" \
                "$(ms "${P50[$name]}")" "$(ms "${P99[$name]}")" "${CPU[$name]}" "${TIMEOUT[$name]}" "$base"
        done
        echo
        echo "PAM, $PAM_LOGINS pamtester logins each, interleaved one of each a round (HOTP, no PIN): pam_oath $PAM_OATH_MS ms per login," \
            "pam_otpd $PAM_OTPD_MS ms per login through the daemon's [pam] socket ($(ratio "$PAM_OTPD_MS" "$PAM_OATH_MS")x pam_oath)," \
            "$PAM_LOCAL_MS ms in-process without it ($(ratio "$PAM_LOCAL_MS" "$PAM_OATH_MS")x);" \
            "pamtester with pam_permit alone: $PAM_PERMIT_MS ms."
        echo
        echo "The disk (fio, 8 KiB written and fdatasync'd at a time, 5 s): fdatasync p50 $(ms "$SYNC_P50")," \
            "p99 $(ms "$SYNC_P99"), $SYNC_RATE syncs/s. Each durable login waits for one."
        echo
        echo "| target | result |"
        echo "|---|---|"
        for line in "${TARGETS[@]}"; do
            printf '| %s | %s |\n' "${line%|*}" "${line##*|}"
        done
    } >"$md"
    echo
    cat "$md"
    if [ -n "$OUT" ]; then
        cp "$md" "$OUT"
        log "markdown written to $OUT"
    fi
}

# --- main ----------------------------------------------------------------------------

install_packages
build
WORK=$(mktemp -d /tmp/otpd-bench.XXXXXX)
FR_PORT=$(free_port "$FR_PORT")
OTPD_PORT=$(free_port "$OTPD_PORT" "$FR_PORT")
log "work dir $WORK; FreeRADIUS on 127.0.0.1:$FR_PORT, otpd on 127.0.0.1:$OTPD_PORT"
probe_disk

setup_freeradius
setup_otpd
start_freeradius
start_otpd

common=(--duration "${DURATION}s" --outstanding "$OUTSTANDING" --sockets "$SOCKETS")
users=(--user-pattern 'user{n}' --users "$N")
pin_users=(--user-pattern 'puser{n}' --users "$PIN_USERS")

run a "FreeRADIUS PAP accept" accept "$FR_PORT" "$FR_PID" "${common[@]}" "${users[@]}" --password-fixed "$PAP_PASSWORD"
# FreeRADIUS's tail at half its peak: the same measure as otpd's p99 target,
# for what this machine's scheduling alone does to a tail.
fr_half=$(awk -v r="${RATE[a]}" 'BEGIN { printf "%.0f", r / 2 }')
run ah "FreeRADIUS PAP accept at half peak ($fr_half/s)" accept "$FR_PORT" "$FR_PID" "${common[@]}" "${users[@]}" \
    --password-fixed "$PAP_PASSWORD" --rate "$fr_half"
run b "FreeRADIUS PAP reject" reject "$FR_PORT" "$FR_PID" "${common[@]}" "${users[@]}" --password-fixed wrong-password

run c "otpd HOTP accept" accept "$OTPD_PORT" "$OTPD_PID" "${common[@]}" "${users[@]}" --hotp-key "$KEY"
hotp_next=$(ceil_div "${SENT[c]}" "$N")
half=$(awk -v r="${RATE[c]}" 'BEGIN { printf "%.0f", r / 2 }')
run h "otpd HOTP accept at half peak ($half/s)" accept "$OTPD_PORT" "$OTPD_PID" "${common[@]}" "${users[@]}" \
    --hotp-key "$KEY" --hotp-start "$hotp_next" --rate "$half"
hotp_next=$((hotp_next + $(ceil_div "${SENT[h]}" "$N")))

# TOTP: each user logs in with steps now-W .. now+W once each (2W+1 logins a
# user, more only as the clock moves on), so a run needs about
# rate x duration / (2W+1) users not to be capped by them; 1.5x HOTP's rate
# for margin. Each round has users of its own (their window is used up).
if [ -z "$TOTP_USERS" ]; then
    TOTP_USERS=$(awk -v r="${RATE[c]}" -v d="$DURATION" -v w="$TOTP_WINDOW" \
        'BEGIN { n = int(r * 1.5 * d / (2 * w + 1)) + 1; if (n < 100) n = 100; print n }')
fi
# totp_users ROUND: the user prefix of that round's TOTP users.
totp_users() { if [ "$1" = 1 ]; then echo tuser; else echo "t$1user"; fi; }
log "enrolling $TOTP_USERS TOTP users for each of $ROUNDS rounds"
for ((round = 1; round <= ROUNDS; round++)); do
    prefix=$(totp_users "$round")
    awk -v n="$TOTP_USERS" -v p="$prefix" 'BEGIN { for (i = 0; i < n; i++) printf "%s%d:*\n", p, i }' >>"$WORK/otpd/users"
    enroll totp "T$round" "$prefix" "$TOTP_USERS"
done
# run_totp ID ROUND: the TOTP run of that round.
run_totp() {
    local id=$1 prefix
    prefix=$(totp_users "$2")
    run "$id" "otpd TOTP accept${3:+, round $2}" accept "$OTPD_PORT" "$OTPD_PID" "${common[@]}" \
        --user-pattern "$prefix{n}" --users "$TOTP_USERS" --totp-key "$KEY" --totp-window "$TOTP_WINDOW"
    if at_least "${ACCEPT[$id]}" "$(awk -v u="$TOTP_USERS" -v w="$TOTP_WINDOW" 'BEGIN { print u * (2 * w + 1) * 0.95 }')"; then
        problem "run $id: the TOTP users were (nearly) used up; set TOTP_USERS higher"
    fi
}
run_totp d 1

# More rounds of the main pair, each at its peak and at half of the first
# round's, and of TOTP, alternating (runs aR, ahR, cR, hR and dR).
HOTP_RATIOS=("$(ratio "${RATE[c]}" "${RATE[a]}")")
TOTP_RATIOS=("$(ratio "${RATE[d]}" "${RATE[a]}")")
P99S=("${P99[h]}")
FR_P99S=("${P99[ah]}")
for ((round = 2; round <= ROUNDS; round++)); do
    run "a$round" "FreeRADIUS PAP accept, round $round" accept "$FR_PORT" "$FR_PID" "${common[@]}" "${users[@]}" \
        --password-fixed "$PAP_PASSWORD"
    run "ah$round" "FreeRADIUS PAP accept at half peak ($fr_half/s), round $round" accept "$FR_PORT" "$FR_PID" \
        "${common[@]}" "${users[@]}" --password-fixed "$PAP_PASSWORD" --rate "$fr_half"
    run "c$round" "otpd HOTP accept, round $round" accept "$OTPD_PORT" "$OTPD_PID" "${common[@]}" "${users[@]}" \
        --hotp-key "$KEY" --hotp-start "$hotp_next"
    hotp_next=$((hotp_next + $(ceil_div "${SENT[c$round]}" "$N")))
    run "h$round" "otpd HOTP accept at half peak ($half/s), round $round" accept "$OTPD_PORT" "$OTPD_PID" \
        "${common[@]}" "${users[@]}" --hotp-key "$KEY" --hotp-start "$hotp_next" --rate "$half"
    hotp_next=$((hotp_next + $(ceil_div "${SENT[h$round]}" "$N")))
    run_totp "d$round" "$round" round
    HOTP_RATIOS+=("$(ratio "${RATE[c$round]}" "${RATE[a$round]}")")
    TOTP_RATIOS+=("$(ratio "${RATE[d$round]}" "${RATE[a$round]}")")
    P99S+=("${P99[h$round]}")
    FR_P99S+=("${P99[ah$round]}")
done
HOTP_RATIO=$(printf '%.2f' "$(median "${HOTP_RATIOS[@]}")")
TOTP_RATIO=$(printf '%.2f' "$(median "${TOTP_RATIOS[@]}")")
P99_HALF=$(median "${P99S[@]}")
FR_P99_HALF=$(median "${FR_P99S[@]}")
kill "$FR_PID"
wait "$FR_PID" 2>/dev/null || true
FR_PID=

run e "otpd reject, wrong code, no PIN" reject "$OTPD_PORT" "$OTPD_PID" "${common[@]}" "${users[@]}" --password-fixed 000000
# The first check of each PIN runs Argon2id (tens of ms) and otpd remembers the
# verdict; one request per PIN user first, so run f measures the steady state.
"$LOAD" --server "127.0.0.1:$OTPD_PORT" --secret "$SECRET" --json --requests "$PIN_USERS" --outstanding 2 \
    --timeout 10s "${pin_users[@]}" --password-fixed "${PIN}000000" >"$WORK/warm-pins.json" 2>/dev/null \
    || die "otpd-load failed warming up the PIN users"
run f "otpd reject, right PIN, wrong code" reject "$OTPD_PORT" "$OTPD_PID" "${common[@]}" "${pin_users[@]}" --password-fixed "${PIN}000000"
run g "otpd PIN+HOTP accept" accept "$OTPD_PORT" "$OTPD_PID" "${common[@]}" "${pin_users[@]}" --pin "$PIN" --hotp-key "$KEY"

# Overload: wrong codes (no one-shot state to get out of step when requests are
# dropped) offered at twice the reject peak with up to 1024 in flight; what does
# not fit in otpd's receive buffer the kernel drops (otpd logs the count as
# `overloaded`), and the generator counts those as timeouts.
over=$(awk -v r="${RATE[e]}" 'BEGIN { printf "%.0f", r * 2 }')
run overload "otpd overload: wrong codes offered at $over/s, 1024 outstanding" any "$OTPD_PORT" "$OTPD_PID" \
    --duration "${DURATION}s" --outstanding 1024 --sockets 4 --timeout 1s --rate "$over" "${users[@]}" --password-fixed 000000
[ "${TIMEOUT[overload]}" -gt 0 ] || log "note: the overload run had no timeouts (otpd kept up)"
kill -0 "$OTPD_PID" 2>/dev/null || die "otpd died under overload (see $WORK/otpd.log)"
sleep 2
run recovered "otpd HOTP accept right after the overload" accept "$OTPD_PORT" "$OTPD_PID" "${common[@]}" "${users[@]}" \
    --hotp-key "$KEY" --hotp-start "$hotp_next"

if [ "$BIG_TOKENS" -gt 0 ]; then
    # Fill the store with unowned tokens up to BIG_TOKENS, restart otpd (a
    # fresh process for its peak RSS) and log the same users in again.
    have=$(otpd_cli token list --json | jq 'length')
    extra=$((BIG_TOKENS - have))
    if [ "$extra" -gt 0 ]; then
        log "importing $extra unowned tokens (store of $BIG_TOKENS)"
        awk -v n="$extra" -v key="$KEY" 'BEGIN { for (i = 0; i < n; i++) printf "X%07d,%s,hotp\n", i, key }' \
            >"$WORK/otpd/import-big.csv"
        otpd_cli token import "$WORK/otpd/import-big.csv" >/dev/null || die "importing $extra tokens failed"
    fi
    # The later rounds' TOTP users are done with: out of the users file,
    # whose parsed copy otpd keeps in memory (a few hundred bytes a user;
    # 58 000 more users cost 13 MiB), so that the peak RSS is measured with
    # the users of one round, as before TOTP had rounds.
    sed -i -E '/^t[0-9]+user[0-9]+:/d' "$WORK/otpd/users"
    kill "$OTPD_PID"
    wait "$OTPD_PID" 2>/dev/null || true
    start_otpd
    hotp_next=$((hotp_next + $(ceil_div "${SENT[recovered]}" "$N")))
    run big "otpd HOTP accept, $BIG_TOKENS tokens in the store" accept "$OTPD_PORT" "$OTPD_PID" "${common[@]}" \
        "${users[@]}" --hotp-key "$KEY" --hotp-start "$hotp_next"
    BIG_RSS_KB=$(awk '/^VmHWM/ { print $2 }' "/proc/$OTPD_PID/status")
fi

bench_pam

at_least "$HOTP_RATIO" 1.0 && met=1 || met=0
target "HOTP accept ≥ 1.0× PAP accept (median of $ROUNDS rounds: ${HOTP_RATIO}×; rounds: $(printf '%s× ' "${HOTP_RATIOS[@]}" | sed 's/ $//'))" "$met"
at_least "$TOTP_RATIO" 1.0 && met=1 || met=0
target "TOTP accept ≥ 1.0× PAP accept (median of $ROUNDS rounds: ${TOTP_RATIO}×; rounds: $(printf '%s× ' "${TOTP_RATIOS[@]}" | sed 's/ $//'))" "$met"
at_least 2000 "$P99_HALF" && met=1 || met=0
target "p99 ≤ 2 ms at half of peak (median of $ROUNDS rounds: $(ms "$P99_HALF") at $half/s; rounds: $(for p in "${P99S[@]}"; do printf '%s ' "$(ms "$p")"; done | sed 's/ $//'); FreeRADIUS at half its peak, median: $(ms "$FR_P99_HALF"); the disk's own fdatasync p99: $(ms "$SYNC_P99"))" "$met"
at_least "$(ratio "${RATE[e]}" "${RATE[b]}")" 1.0 && met=1 || met=0
target "reject (no PIN) ≥ 1.0× PAP reject ($(ratio "${RATE[e]}" "${RATE[b]}")×)" "$met"
at_least "$(ratio "${RATE[f]}" "${RATE[b]}")" 1.0 && met=1 || met=0
target "reject (PIN tokens) ≥ 1.0× PAP reject ($(ratio "${RATE[f]}" "${RATE[b]}")×)" "$met"
at_least 1.2 "$(ratio "$PAM_OTPD_MS" "$PAM_OATH_MS")" && met=1 || met=0
target "pam_otpd ≤ 1.2× pam_oath per login ($(ratio "$PAM_OTPD_MS" "$PAM_OATH_MS")× through the daemon, $(ratio "$PAM_LOCAL_MS" "$PAM_OATH_MS")× in-process)" "$met"
if [ "$BIG_TOKENS" -gt 0 ]; then
    at_least "$(ratio "${RATE[big]}" "${RATE[c]}")" 0.8 && met=1 || met=0
    target "$BIG_TOKENS tokens: ≥ 0.8× the HOTP accept rate ($(ratio "${RATE[big]}" "${RATE[c]}")×)" "$met"
    [ "$BIG_RSS_KB" -le $((64 * 1024)) ] && met=1 || met=0
    target "$BIG_TOKENS tokens: daemon peak RSS ≤ 64 MiB ($((BIG_RSS_KB / 1024)) MiB)" "$met"
fi
# The PIN path: run g's PIN checks are remembered verdicts (the first check of
# each PIN, Argon2id, was made before the run); criterion's authenticate bench
# measures the first check against a bare Argon2id verification.
target "PIN accept CPU per request vs no-PIN HOTP accept ($(printf '%.0f' "${CPU[g]}") vs $(printf '%.0f' "${CPU[c]}") µs; first check of a PIN: see cargo bench -p otpd-core --bench authenticate)" 2
# Recovered: the run after the overload has every answer, none late or lost, at
# least half of the HOTP peak (the table has the exact figure).
[ "${TIMEOUT[recovered]}" -eq 0 ] && [ "${REJECT[recovered]}" -eq 0 ] \
    && at_least "${RATE[recovered]}" "$(awk -v r="${RATE[c]}" 'BEGIN { print r / 2 }')" && met=1 || met=0
target "keeps answering under overload and recovers (overload: $(printf '%.0f' "${RATE[overload]}")/s answered, ${TIMEOUT[overload]} timeouts counted; after: $(printf '%.0f' "${RATE[recovered]}")/s, no timeouts)" "$met"

report

if [ "${#PROBLEMS[@]}" -gt 0 ]; then
    printf '\ncompare.sh: %d problem(s):\n' "${#PROBLEMS[@]}" >&2
    printf '  %s\n' "${PROBLEMS[@]}" >&2
    exit 1
fi
