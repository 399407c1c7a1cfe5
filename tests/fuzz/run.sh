#!/usr/bin/env bash
# make fuzz: builds the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang,
# ASan and UBSan, replays the kept reproducers (tests/fuzz/crashes/<target>/),
# then runs each target for SECONDS (default 20) on a temporary copy of its
# seed corpus (tests/fuzz/corpus/<target>/). One line per target, then
# `fuzz: ok`; exits non-zero on any crash, leak, timeout or sanitizer report,
# keeping the input in tests/fuzz/crashes/<target>/ and the log under
# build/fuzz/logs/.
#   tests/fuzz/run.sh [SECONDS]     (or FUZZ_SECONDS=N make fuzz)
#   FUZZ_TARGETS="form util"        only those targets
set -uo pipefail
shopt -s nullglob

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
say() { printf 'fuzz: %s\n' "$*"; }

secs=${1:-${FUZZ_SECONDS:-20}}
[[ $secs =~ ^[0-9]+$ && $secs -ge 1 ]] || { say "SECONDS must be a positive integer"; exit 2; }

# A clang whose libFuzzer runtime is installed (clang-14 on Debian 12).
fuzz_cc() {
	local cc probe
	probe=$(mktemp -d)
	printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}\n' \
		>"$probe/p.c"
	for cc in clang-14 clang; do
		if command -v "$cc" >/dev/null &&
			"$cc" -fsanitize=fuzzer,address,undefined -o "$probe/p" "$probe/p.c" 2>/dev/null; then
			rm -rf "$probe"
			echo "$cc"
			return 0
		fi
	done
	rm -rf "$probe"
	return 1
}

cc=$(fuzz_cc)
if [[ -z $cc ]]; then
	if [[ $(id -u) -ne 0 ]]; then
		say "clang with libFuzzer not found; install clang-14 and libclang-rt-14-dev (as root)"
		exit 1
	fi
	say "installing clang-14 and libclang-rt-14-dev"
	export DEBIAN_FRONTEND=noninteractive
	{ apt-get install -y -q clang-14 libclang-rt-14-dev ||
		{ apt-get update -q && apt-get install -y -q clang-14 libclang-rt-14-dev; }; } >/dev/null ||
		{ say "apt-get install failed"; exit 1; }
	cc=$(fuzz_cc) || { say "clang-14 still cannot link -fsanitize=fuzzer"; exit 1; }
fi

say "building with $cc"
make --no-print-directory -f tests/fuzz/fuzz.mk -j"$(nproc)" FUZZ_CC="$cc" || { say "build failed"; exit 1; }

targets=()
for src in tests/fuzz/fuzz_*.c; do
	name=$(basename "$src" .c)
	name=${name#fuzz_}
	if [[ -n ${FUZZ_TARGETS:-} && " $FUZZ_TARGETS " != *" $name "* ]]; then
		continue
	fi
	targets+=("$name")
done

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:symbolize=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
logs=build/fuzz/logs
mkdir -p "$logs"
work=$(mktemp -d /tmp/dialer-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
failed=()

for t in "${targets[@]}"; do
	bin=build/fuzz/fuzz_$t
	log=$logs/$t.log
	: >"$log"
	# Known reproducers first: each must run clean once its bug is fixed.
	repro=(tests/fuzz/crashes/"$t"/*)
	if ((${#repro[@]} > 0)); then
		if ! "$bin" -timeout=5 -rss_limit_mb=1024 "${repro[@]}" >>"$log" 2>&1; then
			say "$t: a kept reproducer in tests/fuzz/crashes/$t/ still fails; not fuzzed until fixed (log: $log)"
			grep -a -m1 -E '^(==[0-9]+==ERROR|SUMMARY|fuzz invariant failed|.*runtime error)' "$log" |
				sed 's/^/fuzz:   /'
			failed+=("$t")
			continue
		fi
	fi
	corpus=$work/$t
	mkdir -p "$corpus" "$work/$t-artifacts"
	cp tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null
	# A target's dictionary: its own tokens, plus JSON's for the JSON parsers.
	dict=()
	if [[ -f tests/fuzz/dict/$t.dict ]]; then
		cat tests/fuzz/dict/json.dict tests/fuzz/dict/"$t".dict >"$work/$t.dict"
		dict=(-dict="$work/$t.dict")
	fi
	"$bin" -max_total_time="$secs" -timeout=5 -rss_limit_mb=1024 -print_final_stats=1 \
		-artifact_prefix="$work/$t-artifacts/" "${dict[@]}" "$corpus" >>"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
	artifacts=("$work/$t-artifacts"/*)
	# A timeout on a shared, loaded machine may be the machine: it counts
	# only if the input times out again when run alone.
	if ((rc != 0 && ${#artifacts[@]} == 1)) && [[ $(basename "${artifacts[0]}") == timeout-* ]] &&
		"$bin" -timeout=5 -rss_limit_mb=1024 "${artifacts[0]}" >>"$log" 2>&1; then
		say "$t: a timeout did not reproduce when run alone (machine load?); not counted"
		rc=0
		artifacts=()
	fi
	if ((rc != 0 || ${#artifacts[@]} > 0)); then
		mkdir -p tests/fuzz/crashes/"$t"
		for a in "${artifacts[@]}"; do
			cp "$a" tests/fuzz/crashes/"$t"/
		done
		say "$t runs=${runs:-?} FAILED (exit $rc; input kept in tests/fuzz/crashes/$t/, log: $log)"
		grep -a -m1 -E '^(==[0-9]+==ERROR|SUMMARY|fuzz invariant failed|.*runtime error)' "$log" | sed 's/^/fuzz:   /'
		failed+=("$t")
		continue
	fi
	say "$t runs=${runs:-?} ok"
done

if ((${#failed[@]} > 0)); then
	say "failed: ${failed[*]}"
	exit 1
fi
say ok
