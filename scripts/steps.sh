# One line per step on the terminal, every command's own output in a log
# file. Source it; do not run it.
# shellcheck shell=bash
#
#   steps_init NAME     log to target/logs/NAME-<date>.log (path printed once;
#                       the newest 10 of NAME are kept);
#                       a script run by another one that called it reuses
#                       that log ($STEPS_LOG) and prints nothing
#   step LABEL CMD...   run CMD with its stdout and stderr in the log; print
#                       "[time] LABEL: N s", or on failure the exit code, the
#                       step's last 30 lines of log and its path; returns
#                       CMD's status (CMD runs in a `||` list: a shell
#                       function CMD must not rely on set -e)
#   Settings, given as assignments before `step` and not passed on to CMD:
#   STEP_TICK=0         no heartbeat: by default a step that runs longer than
#                       30 s prints a line every 30 s saying it still does
#   STEP_PROGRESS=FN    ... with FN's output (e.g. `progress_cargo`); FN may
#                       read this step's output so far with `step_output`
#   STEP_SHOW=ERE       lines of CMD's output matching ERE reach the terminal
#                       too (cargo test's "test result:" lines)
#   STEP_REST=ERE       from the first line matching ERE, every line does
#   STEP_STDOUT=1       CMD's stdout reaches the terminal whole (STEP_SHOW
#                       then filters its stderr only)
#   step_e2e LABEL CMD...   a step running the scripts/e2e harness: its
#                       stdout (the cases' tables) whole; of its stderr the
#                       [e2e]/[mock] step lines and the results table on
#   step_capture VAR LABEL CMD...   a step whose stdout's last line goes to
#                       VAR (a path a script prints), its stderr to the log

STEPS_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

steps_init() {
  if [ -n "${STEPS_LOG:-}" ] && [ -f "$STEPS_LOG" ]; then
    return 0
  fi
  mkdir -p "$STEPS_REPO/target/logs"
  # Keep the newest 10 logs of NAME.
  find "$STEPS_REPO/target/logs" -maxdepth 1 -name "$1-*.log" -printf '%T@ %p\n' | sort -rn |
    tail -n +10 | cut -d' ' -f2- | while IFS= read -r old; do rm -f "$old"; done
  STEPS_LOG="$STEPS_REPO/target/logs/$1-$(date +%Y%m%d-%H%M%S).log"
  : >"$STEPS_LOG"
  export STEPS_LOG
  echo "log: $STEPS_LOG"
}

# steps_ticker LABEL PID PROGRESS_FN: the 30 s heartbeat of a running step;
# ends when the script PID does.
steps_ticker() {
  local label="$1" parent="$2" progress="$3" n=0 extra
  while sleep 5; do
    kill -0 "$parent" 2>/dev/null || return 0
    n=$((n + 5))
    [ $((n % 30)) = 0 ] || continue
    extra=""
    if [ -n "$progress" ]; then extra="$("$progress" 2>/dev/null || true)"; fi
    printf '[%s]   ... %s: %s s%s\n' "$(date +%H:%M:%S)" "$label" "$n" "${extra:+, $extra}"
  done
}

# This step's output so far (for STEP_PROGRESS functions).
step_output() { tail -n "+${STEP_FROM:-1}" "$STEPS_LOG"; }
# Progress of a cargo build, of an apt-get install.
progress_cargo() { echo "$(step_output | grep -c '^ *Compiling ') crates compiled"; }
progress_apt() {
  local out total
  out="$(step_output)"
  total="$(sed -n 's/.* \([0-9]*\) newly installed.*/\1/p' <<<"$out" | tail -1)"
  echo "${total:-?} packages: $(grep -c '^Unpacking ' <<<"$out") unpacked, $(grep -c '^Setting up ' <<<"$out") set up"
}

# steps_filter SHOW REST: pass the lines of stdin that match ERE SHOW, and
# every line from the first one matching ERE REST on.
steps_filter() {
  # Through the environment: awk -v would treat the backslashes as escapes.
  # mawk (Debian's awk) reads a pipe a block at a time: without -W
  # interactive a heartbeat line reached the terminal only once 4 KiB of
  # output had followed it (a kernel build's progress showed minutes late).
  local line=()
  if awk -W version 2>/dev/null | grep -q '^mawk'; then line=(-W interactive); fi
  STEPS_SHOW="$1" STEPS_REST="$2" awk "${line[@]}" '
    BEGIN { show = ENVIRON["STEPS_SHOW"]; rest = ENVIRON["STEPS_REST"] }
    on { print; fflush(); next }
    rest != "" && $0 ~ rest { on = 1; print; fflush(); next }
    show != "" && $0 ~ show { print; fflush() }'
}

step() {
  local label="$1" t0=$SECONDS rc=0 ticker
  shift
  # The settings are this step's: the commands it runs (which may be
  # scripts with steps of their own) must not inherit them.
  local show="${STEP_SHOW:-}" rest="${STEP_REST:-}" stdout="${STEP_STDOUT:-0}"
  local progress="${STEP_PROGRESS:-}" tick="${STEP_TICK:-1}"
  unset STEP_SHOW STEP_REST STEP_STDOUT STEP_PROGRESS STEP_TICK
  STEP_FROM=$(($(wc -l <"$STEPS_LOG") + 1))
  local from=$STEP_FROM
  printf '\n===== %s (%s): %s\n' "$label" "$(date '+%F %T')" "$*" >>"$STEPS_LOG"
  ticker=""
  if [ "$tick" != 0 ]; then
    steps_ticker "$label" "$$" "$progress" &
    ticker=$!
  fi
  if [ "$stdout" = 1 ]; then
    # stdout: to the log and the terminal; stderr: to the log, and what the
    # filter keeps straight to the terminal (fd 4), not through stdout's tee.
    { { "$@" 2>&1 1>&3 3>&- | tee -a "$STEPS_LOG" | steps_filter "$show" "$rest" >&4; } 3>&1 |
      tee -a "$STEPS_LOG"; } 4>&1 || rc=$?
  else
    "$@" 2>&1 | tee -a "$STEPS_LOG" | steps_filter "$show" "$rest" || rc=${PIPESTATUS[0]}
  fi
  if [ -n "$ticker" ]; then
    kill "$ticker" 2>/dev/null || true
    wait "$ticker" 2>/dev/null || true
  fi
  if [ "$rc" = 0 ]; then
    printf '[%s] %s: %s s\n' "$(date +%H:%M:%S)" "$label" "$((SECONDS - t0))"
    return 0
  fi
  printf '[%s] %s: FAILED (exit %s) after %s s\n' "$(date +%H:%M:%S)" "$label" "$rc" "$((SECONDS - t0))"
  echo "---- last 30 lines of this step in $STEPS_LOG ----"
  tail -n "+$from" "$STEPS_LOG" | tail -n 30
  echo "---- full log: $STEPS_LOG"
  return "$rc"
}

steps_to_file() {
  local file="$1"
  shift
  "$@" >"$file"
}

step_capture() {
  local var="$1" label="$2" out rc=0
  shift 2
  out="$(mktemp)"
  step "$label" steps_to_file "$out" "$@" || rc=$?
  printf -v "$var" '%s' "$(tail -n 1 "$out")"
  rm -f "$out"
  return "$rc"
}

step_e2e() {
  # No heartbeat: the harness logs its own steps (and kernel build progress).
  STEP_STDOUT=1 STEP_TICK=0 STEP_SHOW='^\[(e2e|mock)[] ]|^(PASS|FAIL) ' \
    STEP_REST='^==== e2e results ====' step "$@"
}
