#!/usr/bin/env bash
# connmgrd.service and connmgrd.socket, checked offline:
# - the service starts the binary and the configuration file where meson
#   installs them (so rewriting them to the build tree below is honest);
# - `systemd-analyze verify --man=no` accepts both units, with ExecStart
#   pointing at the connmgrd just built (verify requires the binary to exist);
# - `systemd-analyze security --offline=true` scores the service at most 1.5
#   (--threshold takes the exposure times ten);
# - the unit's command line, run with the built binary and the generated
#   connmgrd.conf, parses (exit 0 with --help);
# - the socket unit listens where the service's RuntimeDirectory default
#   puts the socket, under the name connmgrd looks for (rpc).
# Usage: units_test.sh SERVICE SOCKET CONNMGRD CONF INSTALLED_CONNMGRD INSTALLED_CONF
set -euo pipefail
service=$(realpath "$1") socket=$(realpath "$2") connmgrd=$(realpath "$3") conf=$(realpath "$4")
installed_connmgrd=$5 installed_conf=$6
fail() { echo "FAIL: $*" >&2; exit 1; }

exec_start=$(sed -n 's/^ExecStart=//p' "$service")
[[ $(wc -l <<<"$exec_start") -eq 1 ]] || fail "expected one ExecStart=, got: $exec_start"
read -r binary config_flag rest <<<"$exec_start"
[[ $binary == "$installed_connmgrd" ]] || fail "ExecStart runs $binary, meson installs $installed_connmgrd"
[[ $config_flag == "--config=$installed_conf" ]] || fail "ExecStart reads '$config_flag', meson installs $installed_conf"

dir=$(mktemp -d "${CONNMGR_TEST_TMP:-/tmp}/units.XXXXXX" 2>/dev/null || mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed -e "s|^ExecStart=$binary $config_flag|ExecStart=$connmgrd --config=$conf|" "$service" > "$dir/connmgrd.service"
grep -q "^ExecStart=$connmgrd --config=$conf " "$dir/connmgrd.service" || fail "could not rewrite ExecStart"
cp "$socket" "$dir/connmgrd.socket"
cd "$dir"

out=$(systemd-analyze verify --man=no ./connmgrd.service ./connmgrd.socket 2>&1) || fail "verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify complained: $out"

score_line=$(systemd-analyze security --offline=true ./connmgrd.service 2>/dev/null | tail -1)
echo "$score_line"
systemd-analyze security --offline=true --threshold=15 ./connmgrd.service >/dev/null 2>&1 ||
  fail "exposure above 1.5: $score_line"

# The command line as systemd runs it (CONNMGRD_OPTIONS empty), as the
# service's user would see its defaults.
help=$(env -i STATE_DIRECTORY=/var/lib/connmgr RUNTIME_DIRECTORY=/run/connmgr \
       "$connmgrd" --config="$conf" --help) || fail "connmgrd --config=$conf --help failed"
listen=$(sed -n 's/^ListenStream=//p' connmgrd.socket)
grep -qF "[$listen]" <<<"$help" || fail "socket unit listens on $listen, connmgrd's default differs"
grep -qx 'FileDescriptorName=rpc' connmgrd.socket || fail "socket unit does not name its socket rpc"
grep -qx 'Service=connmgrd.service' connmgrd.socket || fail "socket unit does not name the service"
echo "ok: verify clean, $score_line"
