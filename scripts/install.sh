#!/usr/bin/env bash
# Install cwcreds on a node without dpkg: the binary, its system user and
# group, the systemd unit and the environment file example. On Debian and
# Ubuntu, install the .deb instead (scripts/package; README "Install on a
# node"). Idempotent: running it again with the same binary changes nothing.
#
#   sudo scripts/install.sh                      # build from this checkout, install, enable
#   sudo scripts/install.sh --binary ./cwcreds   # install a binary built elsewhere
#   DESTDIR=/tmp/root scripts/install.sh         # stage into a directory (packaging, images)
#   sudo scripts/install.sh --uninstall [--purge]
#
# What goes where ($DESTDIR is prepended to every path):
#   /usr/local/bin/cwcreds                          the binary (0755)
#   /usr/local/lib/systemd/system/cwcreds.socket    its listening socket (0644), enabled with it
#   /usr/local/lib/systemd/system/cwcreds.service   the unit (0644), its /usr/bin/cwcreds changed to
#                                                   /usr/local/bin/cwcreds; override it with drop-ins
#   /usr/local/lib/sysusers.d/cwcreds.conf          user and group cwcreds (0644)
#   /etc/cwcreds/cwcreds.env.example                every variable, documented (0644)
#   /etc/cwcreds/cwcreds.env                        copied from the example only if absent (root:cwcreds
#                                                   0640: the daemon reads it itself, CWCREDS_ENV_FILE);
#                                                   never overwritten, kept by --uninstall
#
# Without DESTDIR it also creates the user and group (systemd-sysusers, or
# useradd when that is missing) and, when systemd is running, reloads it and
# enables cwcreds.service (it does not start it: configure it first).
# --uninstall stops and disables the service and removes what install put in
# place, except cwcreds.env (--purge removes that too) and the user and group
# (userdel cwcreds). Upstream token files in /etc/cwcreds are never touched.

set -euo pipefail
umask 022

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
	cat <<EOF
Options:
  --binary PATH   install this binary instead of building one (needs Go otherwise)
  --version V     version to stamp into a build (default: git describe, else "devel")
  --uninstall     remove the installation
  --purge         with --uninstall: remove /etc/cwcreds/cwcreds.env as well
  -h, --help      this help
EOF
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
destdir=${DESTDIR:-}
destdir=${destdir%/}
binary=""
version=""
mode=install
purge=false

while [ $# -gt 0 ]; do
	case $1 in
	--binary) binary=${2:?--binary needs a path}; shift 2 ;;
	--binary=*) binary=${1#*=}; shift ;;
	--version) version=${2:?--version needs a value}; shift 2 ;;
	--version=*) version=${1#*=}; shift ;;
	--uninstall) mode=uninstall; shift ;;
	--purge) purge=true; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
done
if $purge && [ "$mode" != uninstall ]; then
	echo "install.sh: --purge only goes with --uninstall" >&2
	exit 2
fi

bin_path=/usr/local/bin/cwcreds
unit_path=/usr/local/lib/systemd/system/cwcreds.service
socket_path=/usr/local/lib/systemd/system/cwcreds.socket
sysusers_path=/usr/local/lib/sysusers.d/cwcreds.conf
conf_dir=/etc/cwcreds
example_path=$conf_dir/cwcreds.env.example
env_path=$conf_dir/cwcreds.env
runtime_dir=/run/cwcreds

say() { printf '%s\n' "$*"; }

# Acting on the live system (not a staging directory) needs root.
live=false
if [ -z "$destdir" ]; then
	live=true
	if [ "$(id -u)" -ne 0 ]; then
		echo "install.sh: run as root to install on this machine, or set DESTDIR to stage into a directory" >&2
		exit 1
	fi
fi

systemd_running() { $live && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# install_file SRC DEST MODE: put SRC at $DESTDIR/DEST with MODE unless it is
# already there, identical, with that mode. Replaces by rename, so a running
# binary is never written in place.
install_file() {
	local src=$1 dest=$destdir$2 mode=$3
	if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
		say "unchanged  $2"
		return
	fi
	mkdir -p "$(dirname "$dest")"
	local tmp
	tmp=$(mktemp "$(dirname "$dest")/.$(basename "$dest").XXXXXX")
	cp "$src" "$tmp"
	chmod "$mode" "$tmp"
	mv -f "$tmp" "$dest"
	say "installed  $2"
	changed=true
}

remove_file() {
	if [ -e "$destdir$1" ] || [ -L "$destdir$1" ]; then
		rm -f "$destdir$1"
		say "removed    $1"
	fi
}

build() {
	if ! command -v go >/dev/null; then
		echo "install.sh: Go is needed to build cwcreds; install Go 1.26 or pass --binary PATH" >&2
		exit 1
	fi
	if [ -z "$version" ]; then
		version=$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo devel)
	fi
	say "building   cwcreds $version" >&2
	(cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$1" ./cmd/cwcreds)
}

create_user() {
	if getent passwd cwcreds >/dev/null && getent group cwcreds >/dev/null; then
		say "unchanged  user and group cwcreds"
		return
	fi
	if command -v systemd-sysusers >/dev/null; then
		systemd-sysusers "$sysusers_path"
	else
		getent group cwcreds >/dev/null || groupadd --system cwcreds
		useradd --system --gid cwcreds --no-create-home --home-dir / \
			--shell /usr/sbin/nologin --comment "cwcreds credential broker" cwcreds
	fi
	say "created    user and group cwcreds"
}

# check_env_file warns when the daemon would refuse cwcreds.env: it reads
# the file itself (the unit sets CWCREDS_ENV_FILE) as user cwcreds, and
# refuses one that group or others can write, since whoever writes it
# chooses the daemon's credentials. The operator's file is not changed.
check_env_file() {
	local f=$destdir$env_path mode
	mode=$(stat -L -c %a "$f")
	if [ $((8#$mode & 8#022)) -ne 0 ]; then
		say "WARNING    $env_path has mode $mode: cwcreds refuses an environment file that group or others"
		say "           can write; run: chmod go-w $env_path"
	fi
	if $live && command -v runuser >/dev/null && getent passwd cwcreds >/dev/null &&
		! runuser -u cwcreds -- test -r "$env_path"; then
		say "WARNING    user cwcreds cannot read $env_path, and the daemon reads it itself;"
		say "           run: chgrp cwcreds $env_path && chmod 0640 $env_path"
	fi
}

work=""
trap 'if [ -n "$work" ]; then rm -rf "$work"; fi' EXIT

do_install() {
	local src
	work=$(mktemp -d)
	if [ -n "$binary" ]; then
		if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
			echo "install.sh: --binary $binary is not an executable file" >&2
			exit 1
		fi
		src=$binary
	else
		src=$work/cwcreds
		build "$src"
	fi

	changed=false
	install_file "$src" "$bin_path" 0755
	local bin_changed=$changed
	# The unit names /usr/bin/cwcreds (the .deb's path): point it at ours.
	sed "s#/usr/bin/cwcreds\b#$bin_path#g" "$repo/systemd/cwcreds.service" >"$work/cwcreds.service"
	install_file "$work/cwcreds.service" "$unit_path" 0644
	install_file "$repo/systemd/cwcreds.socket" "$socket_path" 0644
	install_file "$repo/systemd/cwcreds.sysusers" "$sysusers_path" 0644
	install_file "$repo/systemd/cwcreds.env.example" "$example_path" 0644
	local unit_changed=$changed

	if $live; then
		create_user
	fi
	if [ -e "$destdir$env_path" ]; then
		say "kept       $env_path (yours: compare with cwcreds.env.example after an upgrade)"
	else
		install_file "$repo/systemd/cwcreds.env.example" "$env_path" 0640
		if $live; then
			chgrp cwcreds "$env_path"
		fi
	fi
	check_env_file

	if systemd_running; then
		if $unit_changed; then
			systemctl daemon-reload
			say "reloaded   systemd"
		fi
		if systemctl is-enabled --quiet cwcreds.service 2>/dev/null && systemctl is-enabled --quiet cwcreds.socket 2>/dev/null; then
			say "unchanged  cwcreds.service and cwcreds.socket enabled"
		else
			systemctl enable cwcreds.service cwcreds.socket
			say "enabled    cwcreds.service and cwcreds.socket (not started)"
		fi
		if $bin_changed && systemctl is-active --quiet cwcreds.service; then
			say "note       cwcreds is running the previous binary: systemctl restart cwcreds"
		fi
	elif $live; then
		say "note       systemd is not running here: enable the service with systemctl enable cwcreds"
	fi
	if $live && [ ! -e "$conf_dir/api-token" ]; then
		say "next       configure $env_path, put the upstream token in $conf_dir/api-token (mode 0600),"
		say "           then: systemctl start cwcreds"
	fi
}

do_uninstall() {
	if systemd_running; then
		if systemctl is-active --quiet cwcreds.service || systemctl is-enabled --quiet cwcreds.service 2>/dev/null; then
			systemctl disable --now cwcreds.service
			say "stopped    cwcreds.service and disabled it"
		fi
		if systemctl is-active --quiet cwcreds.socket || systemctl is-enabled --quiet cwcreds.socket 2>/dev/null; then
			systemctl disable --now cwcreds.socket
			say "stopped    cwcreds.socket and disabled it"
		fi
	fi
	remove_file "$bin_path"
	remove_file "$unit_path"
	remove_file "$socket_path"
	remove_file "$sysusers_path"
	remove_file "$example_path"
	if $purge; then
		remove_file "$env_path"
	elif [ -e "$destdir$env_path" ]; then
		say "kept       $env_path (--purge removes it)"
	fi
	if rmdir "$destdir$conf_dir" 2>/dev/null; then
		say "removed    $conf_dir/"
	fi
	if ! $live; then
		# Leave a staging directory as it was; rmdir only removes empty ones.
		for d in /usr/local/lib/systemd/system /usr/local/lib/systemd /usr/local/lib/sysusers.d \
			/usr/local/lib /usr/local/bin /usr/local /usr /etc; do
			rmdir "$destdir$d" 2>/dev/null || true
		done
	fi
	if $live && [ -d "$runtime_dir" ]; then
		rm -rf "$runtime_dir" # client tokens, kept across restarts by RuntimeDirectoryPreserve=yes
		say "removed    $runtime_dir/"
	fi
	if systemd_running; then
		systemctl daemon-reload
	fi
	if $live && getent passwd cwcreds >/dev/null; then
		say "kept       user and group cwcreds (remove with: userdel cwcreds; groupdel cwcreds)"
	fi
}

case $mode in
install) do_install ;;
uninstall) do_uninstall ;;
esac
