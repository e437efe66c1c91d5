#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and fails if any of them finds a crash.
#
#   fuzz/run.sh [SECONDS]        # default 60 s per target
#
# Needs a nightly toolchain (`rustup toolchain list`) and cargo-fuzz
# (`cargo install cargo-fuzz --locked`). Seeds each target's corpus from the test vectors
# (tests/vectors) first; the corpus grows in fuzz/corpus/<target> across runs and crashing
# inputs land in fuzz/artifacts/<target> or fuzz/proto/artifacts/<target> (all ignored by
# git). The codec and session targets are a fuzz project of their own (fuzz/proto), built on
# capf-model and capf-proto alone; the others are in fuzz/. Logs go to
# fuzz/target/run-logs/<target>.log; the summary at the end gives the executions each target
# reached. Environment: CAPF_FUZZ_TARGETS="a b" to run only some targets,
# CAPF_FUZZ_TOOLCHAIN (default nightly).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: fuzz/run.sh [SECONDS]  (a whole number of seconds per target)" >&2
    exit 2
fi
toolchain="${CAPF_FUZZ_TOOLCHAIN:-nightly}"
targets=(${CAPF_FUZZ_TARGETS:-frame_roundtrip session phone_certificate api_request})

if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: no $toolchain toolchain (cargo fuzz needs one; rustup toolchain list)" >&2
    exit 3
fi
if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)" >&2
    exit 3
fi

vectors=../tests/vectors
corpus_root="$PWD/corpus"
# Which fuzz project holds a target.
project_of() {
    case "$1" in
        frame_roundtrip | session) echo proto ;;
        *) echo . ;;
    esac
}
logs=target/run-logs
mkdir -p "$logs"

# --- Seeds -------------------------------------------------------------------------------
# Hex frames and PEM certificates become binary files; perl is part of every Debian base.
seed() { # seed TARGET NAME PREFIX_HEX < bytes
    mkdir -p "corpus/$1"
    { printf '%b' "${3:+\\x$3}"; cat; } >"corpus/$1/seed-$2"
}
frames() { # every frame line of the vector files, as "name hex"
    perl -ne 'if (/^(?:C>S|S>C) ([0-9a-f]+)$/) {
            my $hex = $1;
            (my $name = $ARGV) =~ s{.*/|\.txt$}{}g;
            print "$name-$. $hex\n";
        }' "$vectors"/*.txt
}
unhex() { perl -ne 'chomp; print pack("H*", $_)'; }
certificates() { # DER of every certificate in the PEM files, one base64 line each
    perl -MMIME::Base64 -e '
        for my $file (@ARGV) {
            open(my $fh, "<", $file) or die "$file: $!";
            my ($in, $b64, $n) = (0, "", 0);
            while (<$fh>) {
                if (/-----BEGIN CERTIFICATE-----/) { ($in, $b64) = (1, ""); next }
                if (/-----END CERTIFICATE-----/) {
                    $in = 0; $n++;
                    (my $name = $file) =~ s{.*/|\.pem$}{}g;
                    print "$name-$n ", unpack("H*", decode_base64($b64)), "\n";
                    next;
                }
                $b64 .= $_ if $in;
            }
        }' "$vectors"/certs/*.pem "$vectors"/device/*.pem
}

while read -r name hex; do
    unhex <<<"$hex" | seed frame_roundtrip "$name" ""
    # Mode 0 of phone_certificate takes AUTH_RESPONSE frames (command 2).
    if [[ "$hex" == 5502* ]]; then
        unhex <<<"$hex" | seed phone_certificate "auth-$name" 00
    fi
done < <(frames)
while read -r name hex; do
    unhex <<<"$hex" | seed phone_certificate "cert-$name" 01
    unhex <<<"$hex" | seed phone_certificate "anchors-$name" 03
done < <(certificates)
# Phone public keys (SubjectPublicKeyInfo) of the device certificates, when openssl is here.
if command -v openssl >/dev/null 2>&1; then
    for pem in "$vectors"/device/*.pem; do
        name="$(basename "$pem" .pem)"
        openssl x509 -in "$pem" -pubkey -noout 2>/dev/null |
            openssl pkey -pubin -outform DER 2>/dev/null | seed phone_certificate "spki-$name" 02 || true
    done
fi
printf 'device,operation,auth_mode,auth_string,key,completes_by\nSEP001122334455,install,string,123456,ec-p256,2026-12-31T17:00:00Z\nSEP001122334466,delete,null,,,\n' |
    seed api_request csv 00
printf '{"rows":[{"device":"SEP001122334455","operation":"install","auth_mode":"string","generate_auth_string":true},{"device":"CSFJSMITH","operation":"troubleshoot","auth_mode":"lsc","key":"rsa-2048"}],"dry_run":true}' |
    seed api_request json-rows 01
printf '{"query":{"status":"pending","prefix":"SEP00","lsc_expires_before":"2027-01-01"},"operation":"install","auth_mode":"null","completes_by":"2026-07-01T00:00:00+02:00"}' |
    seed api_request json-query 01
printf 'SEP001122334455\n{"operation":"install","auth_mode":"string","auth_string":1234567,"key":"ec-p384","completes_by":"2026-12-31T17:00:00Z"}' |
    seed api_request schedule 02
printf 'status=pending&operation=install&lsc=absent&limit=50&cursor=SEP0011&lsc_expires_before=2027-01-01T00:00:00Z' |
    seed api_request listing 03
mkdir -p corpus/session

# --- Build once, then run each target ------------------------------------------------------
# -a: debug assertions and overflow checks, so arithmetic overflow is a finding too.
echo "fuzz/run.sh: building the targets ($toolchain; log: fuzz/$logs/build.log)"
if ! { cargo "+$toolchain" fuzz build -a --fuzz-dir . &&
    cargo "+$toolchain" fuzz build -a --fuzz-dir proto; } \
    >"$logs/build.log" 2>&1; then
    tail -n 40 "$logs/build.log" >&2
    echo "fuzz/run.sh: build failed" >&2
    exit 1
fi

failed=()
summary=()
for target in "${targets[@]}"; do
    log="$logs/$target.log"
    echo "fuzz/run.sh: $target for ${seconds}s (log: fuzz/$log)"
    status=0
    # -timeout: one input running 10 s is a finding (a hang); -rss_limit_mb bounds memory.
    project="$(project_of "$target")"
    log_file="$PWD/$log"
    cargo "+$toolchain" fuzz run -a --fuzz-dir "$project" "$target" "$corpus_root/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log_file" 2>&1 || status=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")"
    corp="$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$done_line")"
    if [ "$status" -ne 0 ] || grep -qE '^(==[0-9]+== ?ERROR|SUMMARY: libFuzzer)|panicked at' "$log"; then
        failed+=("$target")
        summary+=("$target: FAILED (exit $status) after ${execs:-?} executions; see fuzz/$log and fuzz/$project/artifacts/$target")
    else
        summary+=("$target: ${execs:-?} executions, ${rate:-?} exec/s, coverage ${cov:-?}, corpus ${corp:-?}")
    fi
done

echo
echo "fuzz/run.sh: ${seconds}s per target, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz/run.sh: findings in: ${failed[*]}" >&2
    exit 1
fi
