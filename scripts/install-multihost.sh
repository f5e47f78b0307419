#!/usr/bin/env bash
# Debian's openssh-server and -client, sshfs, fuse3 and faketime for tests/multihost/ (a real sshd on
# loopback addresses, a share mounted through sshfs, hosts whose clocks disagree).
# Idempotent and instant when all are there; installs them only as root (as CI runs), otherwise says why
# not and leaves it to those tests to skip with the same reason.
set -euo pipefail
if [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 \
    && command -v sshfs >/dev/null 2>&1 && command -v fusermount3 >/dev/null 2>&1 \
    && command -v faketime >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-multihost: sshd, ssh, sshfs, fusermount3 or faketime missing and not root with apt-get; the tests that need them will skip" >&2
    exit 0
fi
echo "install-multihost: apt-get install -y openssh-server openssh-client sshfs fuse3 faketime" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends openssh-server openssh-client sshfs fuse3 faketime >/dev/null
