#!/usr/bin/env bash
# Installs the Debian packages fastpath's build and tests need, at pinned
# versions, and mounts bpffs if it is missing. Safe to run again.
#
# A pin may end in * (an apt version glob): chromium is only updated through
# bookworm-security, whose archive keeps just the newest build, so an exact
# pin stops installing on the day of the next security release (156.0.8078.114
# was gone on 2026-12-06). It is pinned to its upstream release instead.
set -euo pipefail

packages=(
	clang-19=1:19.1.7-3~deb12u1    # make generate: compiles bpf/*.c
	llvm-19=1:19.1.7-3~deb12u1     # llvm-strip-19, used by bpf2go
	libbpf-dev=1:1.1.2-0+deb12u1   # bpf_helpers.h
	linux-libc-dev=6.1.192-3       # uapi headers: linux/bpf.h, pkt_cls.h
	bpftool=7.1.0+6.1.192-3        # debugging the lab's datapath
	iproute2=6.1.0-3               # ip netns, used by the lab and tests
	iperf3=3.12-1+deb12u2          # throughput benchmarks
	iptables=1.8.9-2               # test/conformance: real kube-proxy (iptables mode), only inside fp- netns
	nftables=1.0.6-2+deb12u2       # bench-control: real kube-proxy (nftables mode), only inside fp- netns
	"chromium=156.0.8078.*"          # internal/flows/ui: the flow map page in headless Chromium
	bird2=2.0.12-7                 # internal/bgp: the upstream router the agents peer with, only inside fp- netns
)

missing=()
for p in "${packages[@]%% *}"; do
	name=${p%%=*} want=${p#*=}
	have=$(dpkg-query -W -f='${Version}' "$name" 2>/dev/null || true)
	# shellcheck disable=SC2053 # $want is a pattern where the pin ends in *
	[[ "$have" == $want ]] || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	apt-get update -q
	apt-get install -y -q --no-install-recommends --allow-downgrades "${missing[@]}"
fi

# bird2's package enables a bird.service in the root namespace; the tests
# run their own BIRD in fp- namespaces only, so a booted systemd must not.
if [[ $(id -u) -eq 0 ]] && [[ -d /run/systemd/system ]] && systemctl is-enabled -q bird.service 2>/dev/null; then
	systemctl disable --now bird.service
fi

if [[ $(id -u) -eq 0 ]] && ! mountpoint -q /sys/fs/bpf; then
	mount -t bpf bpf /sys/fs/bpf
fi
