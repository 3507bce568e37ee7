#!/usr/bin/env bash
# `meson install` into a scratch DESTDIR, then the tree checked file by file:
# the programs, the units, the sysusers and tmpfiles snippets, the man pages
# (and that each renders without a warning), the example configuration with
# every key commented out, the API description and reference, and the bash
# completion (syntax, and that it completes).
#
# Every path comes from tests/install/meson.build, as this build configured
# it (prefix, pkg-config's unit, sysusers, tmpfiles and completions dirs).
# Usage: install_test.sh (environment: MESON BUILD_ROOT BINDIR SBINDIR ...)
set -euo pipefail

for v in MESON BUILD_ROOT BINDIR SBINDIR CONFIG_FILE MANDIR UNITDIR SYSUSERSDIR TMPFILESDIR \
         COMPLETIONSDIR DOCDIR PKGDATADIR MAN_PAGES; do
  [[ -n ${!v:-} ]] || { echo "install_test.sh: $v is not set (see tests/install/meson.build)"; exit 2; }
done

dest=$(mktemp -d "${TMPDIR:-/tmp}/connmgr-install.XXXXXX")
trap 'rm -rf "$dest"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

# --no-rebuild: meson test has built everything; a test must not run ninja.
if ! out=$(DESTDIR="$dest" "$MESON" install -C "$BUILD_ROOT" --no-rebuild --quiet 2>&1); then
  echo "$out"
  echo "FAIL: meson install"
  exit 1
fi

need_file() {  # PATH [MODE-TEST]
  local f="$dest$1"
  if [[ ! -f $f ]]; then fail "missing $1"; return 1; fi
  if [[ ${2:-} == exec && ! -x $f ]]; then fail "$1 is not executable"; return 1; fi
  ok "$1"
}

# --- programs -----------------------------------------------------------------------------
need_file "$SBINDIR/connmgrd" exec && {
  "$dest$SBINDIR/connmgrd" --version | grep -q '^connmgrd ' || fail "installed connmgrd --version"
}
need_file "$BINDIR/connmgrctl" exec && {
  "$dest$BINDIR/connmgrctl" --version | grep -q '^connmgrctl ' || fail "installed connmgrctl --version"
}
[[ -e $dest$BINDIR/connmgrd ]] && fail "connmgrd belongs in sbindir, not bindir"

# --- systemd --------------------------------------------------------------------------------
service="$UNITDIR/connmgrd.service"
if need_file "$service" && need_file "$UNITDIR/connmgrd.socket"; then
  # The unit starts the installed program with the installed configuration file.
  exec_start=$(sed -n 's/^ExecStart=//p' "$dest$service")
  [[ $exec_start == "$SBINDIR/connmgrd --config=$CONFIG_FILE "* ]] ||
    fail "ExecStart= is '$exec_start', expected $SBINDIR/connmgrd --config=$CONFIG_FILE ..."
  grep -q '^ListenStream=/run/connmgr/connmgrd.sock$' "$dest$UNITDIR/connmgrd.socket" ||
    fail "connmgrd.socket does not listen on /run/connmgr/connmgrd.sock"
fi
need_file "$SYSUSERSDIR/connmgr.conf" &&
  { grep -Eq '^u[[:space:]]+connmgr[[:space:]]' "$dest$SYSUSERSDIR/connmgr.conf" || fail "sysusers: no user connmgr"; }
if need_file "$TMPFILESDIR/connmgr.conf"; then
  for d in /var/lib/connmgr /run/connmgr; do
    grep -Eq "^d[[:space:]]+$d[[:space:]]+[0-7]{4}[[:space:]]+connmgr[[:space:]]+connmgr" "$dest$TMPFILESDIR/connmgr.conf" ||
      fail "tmpfiles: no line 'd $d MODE connmgr connmgr'"
  done
  # Applied for real inside the scratch tree: sysusers makes the user in its
  # /etc, tmpfiles the directories owned by it (needs root to chown).
  if [[ $(id -u) -eq 0 ]] && command -v systemd-sysusers >/dev/null && command -v systemd-tmpfiles >/dev/null; then
    mkdir -p "$dest/etc"
    if ! out=$(systemd-sysusers --root="$dest" connmgr.conf 2>&1 && systemd-tmpfiles --create --root="$dest" connmgr.conf 2>&1); then
      echo "$out"; fail "systemd-sysusers / systemd-tmpfiles --root rejected the snippets"
    else
      uid=$(awk -F: '$1 == "connmgr" { print $3 }' "$dest/etc/passwd")
      [[ $(stat -c %u:%a "$dest/var/lib/connmgr") == "$uid:750" ]] || fail "tmpfiles: /var/lib/connmgr not connmgr's, 0750"
      [[ $(stat -c %u:%a "$dest/run/connmgr") == "$uid:755" ]] || fail "tmpfiles: /run/connmgr not connmgr's, 0755"
      ok "sysusers and tmpfiles applied under --root"
    fi
  else
    echo "note: not root, the snippets are not applied with systemd-sysusers/tmpfiles --root"
  fi
fi

# --- the configuration file: every key of connmgrd --help, commented out ------------------
if need_file "$CONFIG_FILE"; then
  keys=$("$dest$SBINDIR/connmgrd" --help | sed -n '/^Keys/,/^$/p' | awk 'NR > 1 && NF { sub(/\*$/, "", $1); print $1 }')
  [[ -n $keys ]] || fail "no keys found in connmgrd --help"
  for k in $keys; do
    grep -Eq "^#$k( =|$)" "$dest$CONFIG_FILE" || fail "$CONFIG_FILE: key $k is not listed commented out"
  done
  if grep -Ev '^(#.*)?$' "$dest$CONFIG_FILE"; then fail "$CONFIG_FILE sets something (above): every key must be commented out"; fi
  # As installed, it is a valid file that changes nothing.
  "$dest$SBINDIR/connmgrd" --config="$dest$CONFIG_FILE" --help >/dev/null ||
    fail "connmgrd does not accept the installed $CONFIG_FILE"
fi

# --- API ----------------------------------------------------------------------------------
need_file "$PKGDATADIR/connmgr.openrpc.json"
need_file "$DOCDIR/api.md"

# --- man pages --------------------------------------------------------------------------------
if [[ $MAN_PAGES == yes ]]; then
  for page in connmgrd.8 connmgrctl.1 connmgrd.conf.5; do
    f="$MANDIR/man${page##*.}/$page"
    need_file "$f" || continue
    # groff itself, every warning on: nothing on stderr.
    if ! warnings=$(groff -man -Tutf8 -ww -z "$dest$f" 2>&1) || [[ -n $warnings ]]; then
      echo "$warnings"; fail "$page: groff -ww warns"
    fi
    # man -l as a user would read it, to a pipe.
    if ! text=$(MANWIDTH=80 MAN_KEEP_FORMATTING= man -l "$dest$f" 2>"$dest/man.err") || [[ -s $dest/man.err ]]; then
      cat "$dest/man.err"; fail "$page: man -l failed"
    fi
    for section in NAME SYNOPSIS DESCRIPTION "SEE ALSO"; do
      grep -q "^$section" <<<"$text" || fail "$page: no $section section in man -l output"
    done
    grep -q '@[A-Z_]*@' "$dest$f" && fail "$page: a @PLACEHOLDER@ was left unfilled"
    ok "$page renders"
  done
else
  echo "note: scdoc was not found at configure time: the man pages are not built (Debian package scdoc)"
fi

# --- bash completion --------------------------------------------------------------------------
completion="$COMPLETIONSDIR/connmgrctl"
if need_file "$completion"; then
  bash -n "$dest$completion" || fail "bash -n $completion"
  # Completes commands and options, with and without the bash-completion package.
  probe='
    t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
          COMPREPLY=(); _connmgrctl connmgrctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
          echo "${COMPREPLY[*]}"; }
    t connmgrctl ""; t connmgrctl co; t connmgrctl connect --w'
  for with in plain bash-completion; do
    pre=''
    if [[ $with == bash-completion ]]; then
      [[ -r /usr/share/bash-completion/bash_completion ]] || continue
      pre='. /usr/share/bash-completion/bash_completion;'
    fi
    out=$(PATH="$dest$BINDIR:$PATH" bash --norc --noprofile -c "$pre . '$dest$completion'; complete -p connmgrctl; $probe" 2>&1) ||
      { echo "$out"; fail "completion ($with) failed"; continue; }
    mapfile -t lines <<<"$out"
    [[ ${lines[0]} == *"-F _connmgrctl connmgrctl"* ]] || fail "completion ($with): connmgrctl is not bound: ${lines[0]}"
    [[ " ${lines[1]} " == *" connect "* && " ${lines[1]} " == *" status "* ]] ||
      fail "completion ($with): 'connmgrctl <TAB>' gave '${lines[1]}'"
    [[ ${lines[2]} == connect ]] || fail "completion ($with): 'connmgrctl co<TAB>' gave '${lines[2]}'"
    [[ ${lines[3]} == --wait ]] || fail "completion ($with): 'connmgrctl connect --w<TAB>' gave '${lines[3]}'"
    ok "completion ($with)"
  done
fi

if ((failures)); then
  echo "$failures check(s) failed; installed tree:"
  (cd "$dest" && find . -type f | sort)
  exit 1
fi
echo "the installed tree is complete"
