#!/usr/bin/env bash
# Installs, starts and stops a one-node Ceph RGW (S3-compatible server) for Skiff's tests and CI.
# Based on /work/shared/backends.md section 4c. See test/backends/README.md.
#
# usage:
#   ceph-rgw.sh install        install radosgw + ceph-mon + ceph-osd with apt (root only) when missing
#   ceph-rgw.sh start [BASE]   start mon + osd + rgw under BASE; prints "S3_ENDPOINT=http://127.0.0.1:PORT"
#   ceph-rgw.sh stop  [BASE]   stop the daemons started from BASE (by pid file) and remove BASE
#
# env: RGW_BASE (/tmp/skiff-ceph)  RGW_PORT (19504)  MON_PORT (19506)  MON2_PORT (19505)
#      RGW_ACCESS_KEY (test)  RGW_SECRET_KEY (testsecret)  OBJECTSTORE (bluestore|memstore)
#      RGW_BLOCK_BYTES (68719476736, sparse)  RGW_REUSE=1  KEEP_CEPH_DATA=1  WITH_MGR=1
#      RGW_WAIT_SECS (120, bound of each readiness wait)  RGW_STOP_WAIT_SECS (10, per daemon)
#
# stdout carries only the S3_ENDPOINT line (start); everything else goes to stderr or $BASE/log.
set -euo pipefail

PACKAGES=(radosgw ceph-mon ceph-osd)
# ceph-common (ceph, ceph-authtool) and ceph-base (monmaptool) are dependencies of these.
REQUIRED_BINS=(radosgw ceph-mon ceph-osd ceph ceph-authtool monmaptool radosgw-admin)

RGW_PORT=${RGW_PORT:-19504}
MON_PORT=${MON_PORT:-19506}
MON2_PORT=${MON2_PORT:-19505}
ACCESS=${RGW_ACCESS_KEY:-test}
SECRET=${RGW_SECRET_KEY:-testsecret}
OBJECTSTORE=${OBJECTSTORE:-bluestore}
BLOCK_BYTES=${RGW_BLOCK_BYTES:-68719476736}
WITH_MGR=${WITH_MGR:-0}
WAIT_SECS=${RGW_WAIT_SECS:-120}
STOP_WAIT_SECS=${RGW_STOP_WAIT_SECS:-10}
MARKER=.skiff-ceph-rgw

T0=$EPOCHREALTIME
log() { printf '[ceph-rgw %5ss] %s\n' "$(awk -v a="$EPOCHREALTIME" -v b="$T0" 'BEGIN { printf "%.1f", a - b }')" "$*" >&2; }
die() { local code=$1; shift; printf 'ceph-rgw: ERROR: %s\n' "$*" >&2; exit "$code"; }

usage() {
  cat >&2 <<EOF
usage: $0 install | start [BASE] | stop [BASE]
  BASE defaults to \${RGW_BASE:-/tmp/skiff-ceph}
EOF
  exit 64
}

# ---------------------------------------------------------------------------------------------------
# helpers

missing_bins() {
  local b out=()
  for b in "${REQUIRED_BINS[@]}"; do command -v "$b" >/dev/null 2>&1 || out+=("$b"); done
  echo "${out[*]:-}"
}

# BASE must be absolute (the daemons chdir to /) and must not be something precious.
resolve_base() {
  local b=${1:-${RGW_BASE:-/tmp/skiff-ceph}}
  [ -n "$b" ] || die 64 "empty BASE"
  b=$(realpath -m -- "$b")
  case "$b" in
    / | /tmp | /var | /var/tmp | /home | /root | /usr | /etc | /work | /work/main) die 64 "refusing to use BASE=$b" ;;
  esac
  echo "$b"
}

# "alive" = exists and is not a zombie (PID 1 here may not reap orphans, pitfall 5 in backends.md).
pid_alive() {
  local pid=$1 state
  [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# The pid in a pid file is ours only if that process runs with our ceph.conf (guards against pid reuse).
pid_is_ours() {
  local pid=$1 base=$2
  pid_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$base/ceph.conf"
}

read_pid() { # file -> pid on stdout, or nothing
  local p
  [ -f "$1" ] || return 0
  p=$(tr -dc '0-9' <"$1" 2>/dev/null || true)
  [ -n "$p" ] && echo "$p"
  return 0
}

# TCP listener on 127.0.0.1:port?
port_busy() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

http_code() {
  curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1/" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------------
# install

cmd_install() {
  local missing
  missing=$(missing_bins)
  if [ -z "$missing" ]; then
    log "ceph binaries present ($(ceph --version 2>/dev/null | awk '{print $3}'))"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    cat >&2 <<EOF
ceph-rgw: ERROR: missing binaries: $missing
  Install them as root (Debian/Ubuntu):
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${PACKAGES[*]}
  or point the tests at an existing S3-compatible server instead, e.g.
    S3_ENDPOINT=http://127.0.0.1:9000
EOF
    exit 2
  fi
  command -v apt-get >/dev/null 2>&1 ||
    die 2 "missing binaries ($missing) and no apt-get; install ${PACKAGES[*]} or set S3_ENDPOINT"
  log "installing ${PACKAGES[*]} with apt-get (missing: $missing)"
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}" >&2
  missing=$(missing_bins)
  if [ -n "$missing" ]; then
    log "still missing: $missing; adding ceph-common ceph-base"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ceph-common ceph-base >&2
    missing=$(missing_bins)
    [ -z "$missing" ] || die 1 "still missing after apt-get install: $missing"
  fi
  log "installed ($(ceph --version | awk '{print $3}'))"
}

# ---------------------------------------------------------------------------------------------------
# stop

# kill the daemons named by BASE/run/*.pid (reverse start order), wait, escalate to SIGKILL.
stop_daemons() {
  local base=$1 run=$1/run f n pid names=() pids=() i deadline survivors=0
  [ -d "$run" ] || return 0
  # explicit order first, then anything else that has a pid file
  for f in "$run/client.rgw.gw.pid" "$run"/osd.*.pid "$run/mgr.x.pid" "$run/mon.a.pid" "$run"/*.pid; do
    [ -f "$f" ] || continue
    n=$(basename "$f" .pid)
    case " ${names[*]:-} " in *" $n "*) continue ;; esac
    pid=$(read_pid "$f")
    names+=("$n")
    pids+=("${pid:-}")
  done
  for i in "${!names[@]}"; do
    n=${names[$i]}
    pid=${pids[$i]}
    if [ -z "$pid" ] || ! pid_is_ours "$pid" "$base"; then
      log "$n: not running"
      rm -f "$run/$n.pid"
      continue
    fi
    log "$n: SIGTERM $pid"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_WAIT_SECS))
    while pid_alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if pid_alive "$pid"; then
      log "$n: still alive after ${STOP_WAIT_SECS}s, SIGKILL $pid"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 5))
      while pid_alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    fi
    if pid_alive "$pid"; then
      printf 'ceph-rgw: ERROR: %s (pid %s) survived SIGKILL\n' "$n" "$pid" >&2
      survivors=$((survivors + 1))
    else
      rm -f "$run/$n.pid"
    fi
  done
  return "$survivors"
}

cmd_stop() {
  local base
  base=$(resolve_base "${1:-}")
  if [ ! -e "$base" ]; then
    log "$base does not exist; nothing to stop"
    return 0
  fi
  if [ ! -f "$base/$MARKER" ] && [ ! -f "$base/ceph.conf" ]; then
    die 1 "$base was not created by this script (no $MARKER); not touching it"
  fi
  stop_daemons "$base" || die 1 "some daemons did not exit; $base kept"
  if [ "${KEEP_CEPH_DATA:-0}" = 1 ]; then
    log "stopped; data kept in $base (KEEP_CEPH_DATA=1)"
  else
    rm -rf -- "$base"
    log "stopped; removed $base"
  fi
}

# ---------------------------------------------------------------------------------------------------
# start

START_OK=0
START_BASE=
on_start_exit() {
  local rc=$?
  [ "$START_OK" = 1 ] && return 0
  [ -n "$START_BASE" ] && [ -d "$START_BASE/run" ] || exit "$rc"
  printf 'ceph-rgw: start failed (exit %s); stopping what was started. Logs: %s/log\n' "$rc" "$START_BASE" >&2
  stop_daemons "$START_BASE" || true
  [ "$rc" = 0 ] && rc=1
  exit "$rc"
}

# fail_wait WHAT: a bounded wait ran out, or a daemon died. Points at the logs and shows their tails.
fail_wait() {
  local f
  printf 'ceph-rgw: ERROR: %s. See the logs in %s/log\n' "$1" "$START_BASE" >&2
  for f in "$START_BASE"/log/*.log "$START_BASE"/log/*.out; do
    [ -s "$f" ] || continue
    printf -- '--- tail %s\n' "$f" >&2
    tail -n 5 "$f" >&2
  done
  exit 1
}

# start_daemon NAME CMD...: run a ceph daemon (it daemonizes itself and writes run/NAME.pid);
# remember its pid. stdout/stderr go to files so "$(ceph-rgw.sh start)" never hangs.
declare -A DAEMON_PID=()
start_daemon() {
  local name=$1 pid
  shift
  timeout 60 "$@" >"$START_BASE/log/$name.out" 2>&1 </dev/null || fail_wait "$name did not start (exit $?)"
  # mon/osd write the pid file before their parent returns; radosgw (daemon(3)) writes it a bit later
  local deadline=$((SECONDS + 15))
  while :; do
    pid=$(read_pid "$START_BASE/run/$name.pid")
    [ -n "$pid" ] && break
    [ $SECONDS -lt $deadline ] || fail_wait "$name wrote no pid file run/$name.pid within 15s (did it exit?)"
    sleep 0.1
  done
  pid_alive "$pid" || fail_wait "$name (pid $pid) exited right after starting"
  DAEMON_PID[$name]=$pid
}

# daemon_died NAME: the daemon we started is gone (ceph removes its pid file when it exits)
daemon_died() {
  ! pid_alive "${DAEMON_PID[$1]}"
}

cmd_start() {
  local base conf code missing f pid deadline osd_id C mon_ready
  base=$(resolve_base "${1:-}")
  case "$OBJECTSTORE" in bluestore | memstore) ;; *) die 64 "OBJECTSTORE must be bluestore or memstore, not '$OBJECTSTORE'" ;; esac
  [[ "$BLOCK_BYTES" =~ ^[0-9]+$ ]] || die 64 "RGW_BLOCK_BYTES must be a number of bytes"
  for f in "$RGW_PORT" "$MON_PORT" "$MON2_PORT" "$WAIT_SECS" "$STOP_WAIT_SECS"; do
    [[ "$f" =~ ^[0-9]+$ ]] || die 64 "ports and RGW_WAIT_SECS / RGW_STOP_WAIT_SECS must be numbers (got '$f')"
  done

  if [ "$WITH_MGR" = 1 ] && ! command -v ceph-mgr >/dev/null 2>&1; then
    die 2 "WITH_MGR=1 needs ceph-mgr: apt-get install --no-install-recommends ceph-mgr (not needed for S3)"
  fi

  # 1. is something already on the RGW port?
  code=$(http_code "$RGW_PORT")
  if [ "$code" = 200 ]; then
    if [ "${RGW_REUSE:-0}" = 1 ]; then
      echo "ceph-rgw: reusing the S3 server already answering on 127.0.0.1:$RGW_PORT (RGW_REUSE=1)" >&2
      echo "S3_ENDPOINT=http://127.0.0.1:$RGW_PORT"
      return 0
    fi
    die 1 "port 127.0.0.1:$RGW_PORT is in use: something already answers HTTP 200 there (an RGW from another run?). Stop it, choose another RGW_PORT, or set RGW_REUSE=1 to use it."
  fi
  for f in "RGW_PORT=$RGW_PORT" "MON_PORT=$MON_PORT" "MON2_PORT=$MON2_PORT"; do
    if port_busy "${f#*=}"; then
      die 1 "port 127.0.0.1:${f#*=} ($f) is in use by another process; stop it or choose another ${f%%=*}"
    fi
  done

  # 2. install if needed (exit 2 when not possible)
  cmd_install

  # 3. fresh BASE; refuse to wipe a directory that is not ours or that still has live daemons
  if [ -e "$base" ]; then
    if [ -n "$(ls -A "$base" 2>/dev/null)" ] && [ ! -f "$base/$MARKER" ]; then
      die 1 "$base exists, is not empty and was not created by this script; choose another BASE"
    fi
    for f in "$base"/run/*.pid; do
      [ -f "$f" ] || continue
      pid=$(read_pid "$f")
      if [ -n "$pid" ] && pid_is_ours "$pid" "$base"; then
        die 1 "$(basename "$f" .pid) (pid $pid) from a previous start in $base is still running; run: $0 stop $base"
      fi
    done
    rm -rf -- "$base"
  fi
  mkdir -p "$base"/{run,log,mon/ceph-a,osd/ceph-0,mgr/ceph-x,rgw}
  touch "$base/$MARKER"
  START_BASE=$base
  trap on_start_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  conf=$base/ceph.conf
  cat >"$conf" <<EOF
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$MON2_PORT,v1:127.0.0.1:$MON_PORT]
public_network = 127.0.0.0/8
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
run_dir = $base/run
admin_socket = $base/run/\$name.asok
pid_file = $base/run/\$name.pid
log_file = $base/log/\$name.log
keyring = $base/keyring
mon_data = $base/mon/\$cluster-\$id
osd_data = $base/osd/\$cluster-\$id
mgr_data = $base/mgr/\$cluster-\$id
osd_objectstore = $OBJECTSTORE
memstore_device_bytes = 4294967296
bluestore_block_size = $BLOCK_BYTES
bluestore_block_create = true
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
mon_data_avail_crit = 1
mon_data_avail_warn = 2
auth_allow_insecure_global_id_reclaim = false
osd_max_object_size = 134217728
ms_bind_ipv6 = false
ms_mon_client_mode = crc secure
ms_mon_cluster_mode = crc secure
ms_mon_service_mode = crc secure
ms_client_mode = crc secure
ms_cluster_mode = crc secure
ms_service_mode = crc secure
[osd]
osd_memory_target = 1073741824
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 2
[client.rgw.gw]
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw_data = $base/rgw
rgw_thread_pool_size = 64
rgw_dns_name = localhost
# Deleted objects' space comes back within a minute, not after RGW's default two hours: a test
# run writes several GiB of layers and deletes each bucket when its test ends.
rgw_gc_obj_min_wait = 30
rgw_gc_processor_period = 30
rgw_gc_processor_max_time = 30
EOF
  local L=$base/log
  # every CLI call is bounded; its output goes to $BASE/log/cli.out
  C() { timeout 60 ceph -c "$conf" --connect-timeout 20 "$@" 2>>"$L/cli.out"; }

  log "mon: mkfs + start (BASE=$base, objectstore=$OBJECTSTORE)"
  ceph-authtool --create-keyring "$base/keyring" --gen-key -n mon. --cap mon 'allow *' >>"$L/cli.out" 2>&1
  ceph-authtool "$base/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >>"$L/cli.out" 2>&1
  monmaptool --create --addv a "[v2:127.0.0.1:$MON2_PORT,v1:127.0.0.1:$MON_PORT]" --fsid "$fsid" "$base/monmap" >>"$L/cli.out" 2>&1
  timeout 60 ceph-mon -c "$conf" --mkfs -i a --monmap "$base/monmap" --keyring "$base/keyring" >"$L/mon-mkfs.out" 2>&1 ||
    fail_wait "ceph-mon --mkfs failed"
  start_daemon mon.a ceph-mon -c "$conf" -i a

  deadline=$((SECONDS + WAIT_SECS))
  mon_ready=0
  while [ $SECONDS -lt $deadline ]; do
    daemon_died mon.a && fail_wait "ceph-mon exited"
    if C mon stat >/dev/null; then mon_ready=1; break; fi
    sleep 0.5
  done
  [ "$mon_ready" = 1 ] || fail_wait "mon not answering after ${WAIT_SECS}s"
  log "mon: up"

  osd_id=$(C osd create) || fail_wait "'ceph osd create' failed"
  [[ "$osd_id" =~ ^[0-9]+$ ]] || fail_wait "'ceph osd create' returned '$osd_id'"
  C osd crush add-bucket node1 host >>"$L/cli.out" || fail_wait "'ceph osd crush add-bucket' failed"
  C osd crush move node1 root=default >>"$L/cli.out" || fail_wait "'ceph osd crush move' failed"
  log "osd.$osd_id: mkfs"
  timeout 120 ceph-osd -c "$conf" -i "$osd_id" --mkfs >"$L/osd-mkfs.out" 2>&1 || fail_wait "ceph-osd --mkfs failed"
  C osd crush add "osd.$osd_id" 1.0 host=node1 >>"$L/cli.out" || fail_wait "'ceph osd crush add' failed"
  start_daemon "osd.$osd_id" ceph-osd -c "$conf" -i "$osd_id"
  if [ "$WITH_MGR" = 1 ]; then
    start_daemon mgr.x ceph-mgr -c "$conf" -i x
  fi
  log "osd.$osd_id: started, waiting for it to be up"
  deadline=$((SECONDS + WAIT_SECS))
  local osd_up=0
  while [ $SECONDS -lt $deadline ]; do
    daemon_died "osd.$osd_id" && fail_wait "ceph-osd exited"
    if C osd stat 2>/dev/null | grep -q " 1 up"; then osd_up=1; break; fi
    sleep 0.5
  done
  [ "$osd_up" = 1 ] || fail_wait "osd.$osd_id not up after ${WAIT_SECS}s"
  log "osd.$osd_id: up"

  # creates its pools on first start (~9 s)
  start_daemon client.rgw.gw radosgw -c "$conf" -n client.rgw.gw
  log "rgw: started, waiting for HTTP 200 on 127.0.0.1:$RGW_PORT"
  deadline=$((SECONDS + WAIT_SECS))
  code=
  while [ $SECONDS -lt $deadline ]; do
    # radosgw exits (and removes its pid file) when it cannot bind its port; report why
    if grep -qE 'failed to bind address|failed initializing frontend' "$L/client.rgw.gw.log" 2>/dev/null; then
      fail_wait "radosgw could not open its frontend on 127.0.0.1:$RGW_PORT ($(grep -m1 -oE 'failed to bind address.*' "$L/client.rgw.gw.log" || echo 'failed initializing frontend'))"
    fi
    daemon_died client.rgw.gw && fail_wait "radosgw exited"
    code=$(http_code "$RGW_PORT")
    [ "$code" = 200 ] && break
    sleep 0.5
  done
  [ "$code" = 200 ] || fail_wait "RGW not answering HTTP 200 on 127.0.0.1:$RGW_PORT after ${WAIT_SECS}s (last: ${code:-no answer})"
  log "rgw: answering; creating user $ACCESS"

  timeout 60 radosgw-admin -c "$conf" -n client.admin user create --uid=test --display-name=test \
    --access-key="$ACCESS" --secret-key="$SECRET" >"$L/user-create.out" 2>&1 || fail_wait "radosgw-admin user create failed"

  for f in mon.a "osd.$osd_id" client.rgw.gw; do
    pid=$(read_pid "$base/run/$f.pid")
    [ -n "$pid" ] && pid_alive "$pid" || fail_wait "$f has no live pid file in $base/run"
  done
  START_OK=1
  trap - EXIT INT TERM
  log "ready"
  echo "S3_ENDPOINT=http://127.0.0.1:$RGW_PORT"
}

# ---------------------------------------------------------------------------------------------------

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  *) usage ;;
esac
