#!/usr/bin/env bash
# Install eportd's system integration: the udev rules for CCID readers and E-port USB keys, the
# polkit rule for pcscd, the systemd units (system and user), the group `eport`, and the links
# /usr/local/bin/eportd (eport, eport-sim) to the console scripts of the project's venv.
#
# Idempotent: a file is copied only when its content differs, and each one is reported as
# "installed", "updated" or "unchanged"; a second run changes nothing (not even an mtime).
# Run as root: sudo udev/install.sh. See udev/README.md, or udev/install.sh --help.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="$(dirname "$here")"
group=eport

usage() {
  cat <<EOF
用法 / usage: $0 [--prefix DIR] [--venv DIR] [--no-reload] [--help]

安装 udev 规则、polkit 规则、systemd 单元、eport 用户组及 /usr/local/bin/eportd 链接（可重复运行）。
Installs the udev rules, the polkit rule, the systemd units, the group eport and the link
/usr/local/bin/eportd; running it again changes nothing that is already in place.

  --prefix DIR   安装到暂存根目录（默认 /，也可用环境变量 DESTDIR）；不会修改本机用户组，也不重新加载
                 install into a staged root (default /, or the DESTDIR environment variable);
                 the host's groups are left alone and nothing is reloaded
  --venv DIR     提供 eportd 的虚拟环境（默认 $project/.venv）
                 the venv whose console scripts are linked (default: $project/.venv)
  --no-reload    不执行 udevadm 和 systemctl daemon-reload
                 do not run udevadm nor systemctl daemon-reload
  --help         显示本帮助 / show this help
EOF
}

die() {  # die "中文" "English"
  printf '错误：%s\nerror: %s\n' "$1" "$2" >&2
  exit 1
}

note() {  # note "中文" "English"
  printf '%s\n%s\n' "$1" "$2"
}

root="${DESTDIR:-/}"
venv="$project/.venv"
reload=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix 需要一个目录" "--prefix needs a directory"
              root="$2"; shift 2 ;;
    --prefix=*) root="${1#--prefix=}"; shift ;;
    --venv) [ $# -ge 2 ] || die "--venv 需要一个目录" "--venv needs a directory"
            venv="$2"; shift 2 ;;
    --venv=*) venv="${1#--venv=}"; shift ;;
    --no-reload) reload=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "未知参数：$1" "unknown argument: $1" ;;
  esac
done
[ -n "$root" ] || die "--prefix/DESTDIR 不能为空" "--prefix/DESTDIR must not be empty"
[ -n "$venv" ] || die "--venv 不能为空" "--venv must not be empty"

# Absolute paths, symlinks kept as given (the links must name the venv the way the user does).
root="$(realpath -m -s -- "$root")"
venv="$(realpath -m -s -- "$venv")"
staged=0
[ "$root" = / ] || staged=1
prefix="${root%/}"  # "" for /, so "$prefix/etc" is always right

if [ "$staged" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  die "需要 root 权限：sudo $0" "must run as root: sudo $0"
fi

# Check everything before changing anything, so a refusal leaves the system as it was.
[ -x "$venv/bin/eportd" ] || die \
  "$venv/bin/eportd 不存在或不可执行；请先运行 scripts/setup.sh 创建虚拟环境（或用 --venv 指定）" \
  "$venv/bin/eportd does not exist (or is not executable): run scripts/setup.sh first to create the venv (or pass --venv)"
case "$venv/" in
  # eportd.service has ProtectHome=yes: the system daemon cannot even see these directories.
  /home/*|/root/*|/run/user/*)
    note "警告：$venv 位于 /home、/root 或 /run/user 下，系统级 eportd.service（ProtectHome=yes）无法运行它；系统级服务请把项目放在 /opt 等目录，按用户的单元不受影响" \
         "warning: $venv is under /home, /root or /run/user, where the system eportd.service (ProtectHome=yes) cannot run it; for the system service put the project under /opt or similar (the per-user units are not affected)" ;;
esac
commands=(eportd)
for name in eport eport-sim eport-gateway; do  # linked when the venv has them
  if [ -x "$venv/bin/$name" ]; then commands+=("$name"); fi
done
for name in "${commands[@]}"; do
  link="$prefix/usr/local/bin/$name"
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    die "$link 已存在且不是符号链接，未做任何修改；请先移走它" \
        "$link exists and is not a symbolic link; nothing was changed, move it away first"
  fi
done

report() {  # report STATUS PATH
  case "$1" in
    installed) printf 'installed  已安装  %s\n' "$2" ;;
    updated)   printf 'updated    已更新  %s\n' "$2" ;;
    unchanged) printf 'unchanged  未改变  %s\n' "$2" ;;
  esac
}

# install_file SOURCE TARGET: copy with mode 0644 only when the content differs. The copy goes
# to a temporary name next to the target and is renamed over it, so udevd, polkitd or systemd
# never read half a file (none of them reads a name ending in .tmp).
install_file() {
  local source="$1" target="$2" status
  if [ -f "$target" ] && cmp -s -- "$source" "$target"; then
    if [ "$(stat -c %a -- "$target")" = 644 ]; then
      report unchanged "$target"
      return
    fi
    chmod 0644 -- "$target"  # same content, wrong mode
    status=updated
  else
    if [ -e "$target" ]; then status=updated; else status=installed; fi
    install -D -m 0644 -- "$source" "$target.$$.tmp"
    mv -f -T -- "$target.$$.tmp" "$target"
  fi
  report "$status" "$target"
}

# link_command NAME: $prefix/usr/local/bin/NAME -> $venv/bin/NAME (checked above: not a file).
link_command() {
  local name="$1" link="$prefix/usr/local/bin/$1" target="$venv/bin/$1" status
  if [ -L "$link" ] && [ "$(readlink -- "$link")" = "$target" ]; then
    report unchanged "$link -> $target"
    return
  fi
  if [ -L "$link" ]; then status=updated; else status=installed; fi
  install -d -m 0755 -- "$(dirname "$link")"
  ln -s -- "$target" "$link.$$.tmp"
  mv -f -T -- "$link.$$.tmp" "$link"
  report "$status" "$link -> $target"
}

# The group first: systemd refuses to start eportd.socket (SocketGroup=eport) without it, and
# udevd ignores GROUP="eport" for a group that does not exist when it loads the rules.
if [ "$staged" -eq 0 ]; then
  if getent group "$group" >/dev/null; then
    report unchanged "group $group"
  else
    groupadd --system "$group"
    report installed "group $group"
  fi
elif [ -f "$prefix/etc/group" ]; then
  if grep -q "^$group:" "$prefix/etc/group"; then
    report unchanged "group $group ($prefix/etc/group)"
  else
    # A free system gid, from the top of the range down as groupadd --system picks it.
    gid="$(awk -F: '{ used[$3] = 1 } END { for (g = 999; g >= 100; g--) if (!(g in used)) { print g; exit } }' \
           "$prefix/etc/group")"
    [ -n "$gid" ] || die "$prefix/etc/group 中没有空闲的系统组 ID" "no free system gid in $prefix/etc/group"
    printf '%s:x:%s:\n' "$group" "$gid" >>"$prefix/etc/group"
    if [ -f "$prefix/etc/gshadow" ] && ! grep -q "^$group:" "$prefix/etc/gshadow"; then
      printf '%s:!::\n' "$group" >>"$prefix/etc/gshadow"
    fi
    report installed "group $group ($prefix/etc/group, gid $gid)"
  fi
else
  note "跳过用户组 $group：$prefix/etc/group 不存在（暂存安装不会修改本机的用户组）" \
       "skipped the group $group: $prefix/etc/group does not exist (a staged install never touches this host's groups)"
fi

install_file "$here/rules.d/70-eport.rules" "$prefix/etc/udev/rules.d/70-eport.rules"
install_file "$here/polkit/60-eport.rules" "$prefix/etc/polkit-1/rules.d/60-eport.rules"
for kind in system user; do
  for unit in "$here/systemd/$kind"/*; do
    [ -f "$unit" ] || continue
    install_file "$unit" "$prefix/etc/systemd/$kind/$(basename "$unit")"
  done
done
for name in "${commands[@]}"; do
  link_command "$name"
done

# Reloading is harmless when nothing changed, and it applies files that an earlier run installed
# with --no-reload; it only ever concerns the real root.
if [ "$staged" -eq 1 ]; then
  note "暂存安装（$root）：未重新加载 udev 和 systemd" \
       "staged install into $root: udev and systemd were not reloaded"
elif [ "$reload" -eq 0 ]; then
  note "--no-reload：未重新加载 udev 和 systemd；稍后运行 udevadm control --reload-rules 和 systemctl daemon-reload" \
       "--no-reload: udev and systemd were not reloaded; later run udevadm control --reload-rules and systemctl daemon-reload"
else
  if [ -e /run/udev/control ] && command -v udevadm >/dev/null; then
    udevadm control --reload-rules
    # Apply the rules to the readers and keys that are already plugged in.
    udevadm trigger --subsystem-match=usb --action=change
    note "已重新加载 udev 规则并应用到已插入的 USB 设备" \
         "udev rules reloaded and applied to the USB devices already plugged in"
  else
    note "跳过 udev 重新加载：udevd 未运行（没有 /run/udev/control，例如在容器中）；规则将在下次启动时生效" \
         "skipped the udev reload: udevd is not running (no /run/udev/control, e.g. in a container); the rules apply from the next boot"
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    note "已执行 systemctl daemon-reload" "systemctl daemon-reload done"
  else
    note "跳过 systemctl daemon-reload：systemd 不是 1 号进程（没有 /run/systemd/system，例如在容器中）" \
         "skipped systemctl daemon-reload: systemd is not PID 1 (no /run/systemd/system, e.g. in a container)"
  fi
fi

echo
note "下一步：usermod -aG $group 用户名（重新登录后生效）；systemctl enable --now eportd.socket" \
     "next: usermod -aG $group USER (effective from the next login); systemctl enable --now eportd.socket"
