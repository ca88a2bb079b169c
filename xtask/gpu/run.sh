#!/usr/bin/env bash
# The GPU half of `cargo xtask gpu-test`: run on the GPU host from the repository root, with the
# bundle made by `cargo xtask gpu-test --bundle DIR` (DIR/bin: kiln, xtask, the CUDA test binaries).
# Makes the models it needs with `xtask synth`, runs every GPU test, compute-sanitizer, the CLI
# checks (--gpu-memory, generate --json's ledger) and prints one table at the end. Logs go to
# /tmp/kiln-gpu-logs, and as logs.tgz to $OUT when it is set.
# Usage: bash xtask/gpu/run.sh DIR [tests|sanitizer|cli|trace|bench|serve|llamacpp|all]...
set -u
B=$(realpath "$1")/bin; shift
WHAT=${*:-all}
LOGS=/tmp/kiln-gpu-logs; mkdir -p "$LOGS"
M=/tmp/kiln-gpu-models; mkdir -p "$M"
export KILN_FIXTURES=$PWD/crates/kiln-model/tests/fixtures KILN_CACHE=/tmp/kiln-cache
declare -a ROWS
row() { ROWS+=("$(printf '| %-34s | %-6s | %s |' "$1" "$2" "$3")"); }
has() { [[ " $WHAT " == *" all "* || " $WHAT " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader | tee "$LOGS/gpu.txt"

# llama.cpp as the peer (LLAMACPP=path of shared/reference/llamacpp_gpu.sh's `pack` tarball, with the
# script beside it): built in the background while the tests run, benchmarked after kiln.
if has llamacpp && [ -n "${LLAMACPP:-}" ]; then
  bash "$(dirname "$LLAMACPP")/llamacpp_gpu.sh" build "$LLAMACPP" >"$LOGS/llamacpp-build.log" 2>&1 &
  LCPP_PID=$!
fi

synth() { # name args...
  local n=$1; shift
  [ -s "$M/$n.gguf" ] || "$B/xtask" synth "$@" --out "$M/$n.gguf" >"$LOGS/synth-$n.log" 2>&1 || echo "synth $n failed"
}
synth tiny-gptoss gpt-oss --preset tiny
synth tiny-llama llama
if has tests || has cli || has bench || has trace; then synth g20 gpt-oss --preset 20b; fi
# SmolLM2 travels in parts (each under the carry limit), left in /tmp by earlier calls.
[ -s "$M/smollm2.gguf" ] || { ls /tmp/smollm2.part? >/dev/null 2>&1 && cat /tmp/smollm2.part? >"$M/smollm2.gguf"; }
[ -s "$M/smollm2.gguf" ] && export KILN_GPU_SMOLLM2=$M/smollm2.gguf
export KILN_GPU_20B=$M/g20.gguf

if has tests; then
  for t in cuda_ops cuda_oom cuda_e2e; do
    s=$(date +%s)
    "$B/$t" --test-threads=1 --nocapture >"$LOGS/$t.log" 2>&1; rc=$?
    cases=$(grep -c '^CASE' "$LOGS/$t.log"); fails=$(grep -c 'FAIL\|panicked' "$LOGS/$t.log")
    row "test $t" "$([ $rc = 0 ] && echo ok || echo FAIL)" "$cases checks, $fails failing, $(( $(date +%s) - s )) s; $(grep -E '^test result' "$LOGS/$t.log" | tail -1)"
  done
fi

if has sanitizer; then
  for m in tiny-gptoss tiny-llama; do
    # --report-api-errors no: kiln probes each kernel's parameter count with cuFuncGetParamInfo
    # until it answers "invalid value" (past the last one); memory errors are still reported.
    compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 "$B/kiln" generate -m "$M/$m.gguf" --device cuda \
      --temperature 0 -n 8 "The quick brown fox" >"$LOGS/memcheck-$m.log" 2>&1; rc=$?
    row "compute-sanitizer memcheck $m" "$([ $rc = 0 ] && echo ok || echo FAIL)" "$(grep -E 'ERROR SUMMARY' "$LOGS/memcheck-$m.log" | tail -1)"
  done
fi

if has cli; then
  "$B/kiln" generate -m "$M/g20.gguf" --device cuda --gpu-memory 24GiB --ctx 131072 --temperature 0 -n 16 --json \
    "The quick brown fox" >"$LOGS/g20-24gib.json" 2>"$LOGS/g20-24gib.err"; rc=$?
  row "20b, --gpu-memory 24GiB --ctx 131072" "$([ $rc = 0 ] && echo ok || echo FAIL)" \
    "$(python3 -c "import json,sys;d=json.load(open('$LOGS/g20-24gib.json'));g=d['gpu'];print(len(d['generated_ids']),'tokens; ledger',round(g['ledger_bytes']/2**30,2),'GiB;',', '.join(f\"{e['name']} {e['bytes']/2**30:.2f}\" for e in g['ledger'][:4]))" 2>&1 | tail -1)"
  "$B/kiln" generate -m "$M/g20.gguf" --device cuda --gpu-memory 14GiB --ctx 131072 -n 4 "x" >/dev/null 2>"$LOGS/g20-14gib.err"; rc=$?
  row "20b, 14GiB cap, 131072 ctx refused" "$([ $rc = 2 ] && echo ok || echo FAIL)" "exit $rc: $(tail -c 300 "$LOGS/g20-14gib.err" | tr '\n' ' ')"
fi

if has trace; then # layer-by-layer: CPU vs CUDA on the 20b layout, one forward of the prompt
  rm -rf /tmp/tr-cpu /tmp/tr-gpu; mkdir -p /tmp/tr-cpu /tmp/tr-gpu
  KILN_TRACE=/tmp/tr-cpu "$B/kiln" generate -m "$M/g20.gguf" --temperature 0 -n 1 "The quick brown fox jumps over the lazy dog" >/dev/null 2>&1
  KILN_TRACE=/tmp/tr-gpu "$B/kiln" generate -m "$M/g20.gguf" --device cuda --temperature 0 -n 1 "The quick brown fox jumps over the lazy dog" >/dev/null 2>&1
  python3 xtask/gpu/trace_diff.py /tmp/tr-cpu /tmp/tr-gpu attn_norm Qcur Kcur Vcur kqv_out attn_out ffn_inp attn_post_norm ffn_moe_out l_out >"$LOGS/trace-diff.txt" 2>&1
  row "20b CPU vs CUDA by layer" "-" "$(awk '$1<=1 || $2=="l_out"' "$LOGS/trace-diff.txt" | tr '\n' ';' | tr -s ' ' | cut -c1-1500)"
fi

if has bench; then
  "$B/kiln" bench -m "$M/g20.gguf" --device cuda -p 512 -n 128 -r 3 >"$LOGS/bench-g20.txt" 2>&1
  row "kiln bench 20b pp512/tg128" "-" "$(grep -E 'pp512|tg128' "$LOGS/bench-g20.txt" | awk -F'|' '{printf "%s %s;", $4, $5}')"
fi

if has serve && [ -n "${KILN_GPU_SMOLLM2:-}" ]; then
  # `kiln serve --device cuda`: concurrent greedy streams under --batch-invariant equal a solo
  # `kiln generate --device cuda --batch-invariant` of the same prompt; then a load test per mode.
  PROMPTS=("The capital of France is" "Rust is a language that" "Once upon a time" "def fibonacci(n):" "The H200 has" "Water boils at")
  for i in "${!PROMPTS[@]}"; do
    "$B/kiln" generate -m "$KILN_GPU_SMOLLM2" --device cuda --batch-invariant --temperature 0 -n 24 "${PROMPTS[$i]}" >"$LOGS/solo-$i.txt" 2>/dev/null
  done
  for mode in --batch-invariant ""; do
    "$B/kiln" serve -m "$KILN_GPU_SMOLLM2" --device cuda $mode --listen 127.0.0.1:50071 --metrics-listen 127.0.0.1:9171 >"$LOGS/serve$mode.out" 2>"$LOGS/serve$mode.err" &
    SP=$!
    for _ in $(seq 120); do grep -q 50071 "$LOGS/serve$mode.out" 2>/dev/null && break; sleep 0.5; done
    if [ -n "$mode" ]; then
      CPIDS=()
      for i in "${!PROMPTS[@]}"; do
        "$B/kiln" client --addr http://127.0.0.1:50071 -n 24 --temperature 0 "${PROMPTS[$i]}" >"$LOGS/served-$i.txt" 2>"$LOGS/served-$i.err" &
        CPIDS+=($!)
      done
      wait "${CPIDS[@]}"
      same=0; for i in "${!PROMPTS[@]}"; do cmp -s "$LOGS/solo-$i.txt" "$LOGS/served-$i.txt" && same=$((same+1)); done
      row "serve --device cuda: 6 streams = solo" "$([ $same = ${#PROMPTS[@]} ] && echo ok || echo FAIL)" "$same of ${#PROMPTS[@]} equal to generate --device cuda --batch-invariant"
    fi
    "$B/kiln" loadtest --addr http://127.0.0.1:50071 --requests 500 --concurrency 64 >"$LOGS/loadtest$mode.txt" 2>&1
    curl -s 127.0.0.1:9171/metrics >"$LOGS/metrics$mode.txt" 2>/dev/null
    kill -TERM $SP; wait $SP; rc=$?
    row "serve --device cuda ${mode:-default}: loadtest" "$([ $rc = 0 ] && echo ok || echo FAIL)" "exit $rc after SIGTERM; $(grep -iE 'req/s|throughput|tok/s' "$LOGS/loadtest$mode.txt" | tr -s ' ' | tr '\n' ';' | cut -c1-400)"
  done
fi

if [ -n "${LCPP_PID:-}" ]; then
  wait "$LCPP_PID"
  /tmp/lcpp/b/bin/llama-bench -m "$M/g20.gguf" -ngl 99 -fa 1 -p 512 -n 128 -r 3 >"$LOGS/llama-bench-g20.txt" 2>&1
  row "llama.cpp b11434 llama-bench 20b" "-" "$(grep -E 'pp512|tg128' "$LOGS/llama-bench-g20.txt" | awk -F'|' '{printf "%s %s;", $(NF-2), $(NF-1)}')"
fi

echo; grep -h '^CASE' "$LOGS"/cuda_*.log 2>/dev/null | grep -v ' ok$' | head -40
echo "| check | result | detail |"; echo "| --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
[ -n "${OUT:-}" ] && tar -czf "$OUT/logs.tgz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
