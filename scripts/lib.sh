# shellcheck shell=bash
# Helpers shared by the project's scripts. Source it; it defines functions only.

# as_root CMD...: runs CMD as root, through sudo when not root already.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "error: '$*' needs root and sudo is not installed" >&2
    return 1
  fi
}

# need_packages BINARY:PACKAGE...: installs each PACKAGE with apt-get when BINARY is missing.
need_packages() {
  local missing=() pair bin pkg
  for pair in "$@"; do
    bin=${pair%%:*}
    pkg=${pair#*:}
    if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/bin/$bin" ] && [ ! -x "/usr/sbin/$bin" ]; then
      missing+=("$pkg")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    install_packages "${missing[@]}"
  fi
}

# install_packages PACKAGE...: apt-get install, quietly, without recommends. One at a time
# (flock): CI runs scripts side by side, and a second apt-get would fail on dpkg's lock.
install_packages() {
  echo "installing $* with apt-get" >&2
  as_root flock /var/lock/tally-apt.lock sh -c '
    apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "$@" >/dev/null' sh "$@"
}
