#!/usr/bin/env bash
# Builds the pinned Kubernetes control plane (kube-apiserver,
# kube-controller-manager, kube-proxy, kubectl) and etcd into tools/bin.
#
# Versions live only in tools/k8s/go.mod and tools/etcd/go.mod; this script
# reads them from there. A binary is rebuilt only when its stamp (module
# version, Go version, go.sum hash) changed, so a second run takes a second.
# A cold build takes about 5 minutes on 2 cores (kube-apiserver dominates).
#
# Usage: tools/build-k8s.sh            (output dir: $FASTPATH_K8S_BIN or tools/bin)
set -euo pipefail

tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin_dir=${FASTPATH_K8S_BIN:-$tools_dir/bin}

# The wrapper modules must be built on their own: no workspace, no cgo (the
# binaries then run on any Linux host of the lab without a matching libc).
export GOWORK=off CGO_ENABLED=0

mkdir -p "$bin_dir/.stamps"
# Two builds at once (parallel make, two shells) would race on the same files.
exec 9>"$bin_dir/.lock"
flock 9

module_version() { # dir module
	(cd "$1" && go list -m -f '{{.Version}}' "$2")
}

stamp_for() { # dir module
	local sum
	sum=$(cat "$1/go.mod" "$1/go.sum" | sha256sum | cut -c1-16)
	echo "$2@$(module_version "$1" "$2") $(go env GOVERSION) mods=$sum"
}

up_to_date() { # name stamp
	[[ -x "$bin_dir/$1" && -f "$bin_dir/.stamps/$1" ]] &&
		[[ "$(cat "$bin_dir/.stamps/$1")" == "$2" ]]
}

# build dir name pkg stamp ldflags: builds into a temp file and renames it,
# so an interrupted build never leaves a half-written binary that looks fresh.
build() {
	local dir=$1 name=$2 pkg=$3 stamp=$4 ldflags=$5
	if up_to_date "$name" "$stamp"; then
		echo "up to date: $name ($stamp)"
		return
	fi
	echo "building $name ($stamp)"
	local start=$SECONDS tmp="$bin_dir/.$name.tmp"
	(cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$tmp" "$pkg")
	mv -f "$tmp" "$bin_dir/$name"
	echo "$stamp" >"$bin_dir/.stamps/$name"
	echo "built $name in $((SECONDS - start)) s"
}

k8s_ldflags() { # version like v1.37.2
	local v=$1 major minor flags="-s -w"
	major=${v#v}
	major=${major%%.*}
	minor=${v#v*.}
	minor=${minor%%.*}
	# Without these, /version and --version report v0.0.0-master.
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
		flags+=" -X $pkg.gitTreeState=clean"
	done
	echo "$flags"
}

k8s_dir=$tools_dir/k8s
k8s_version=$(module_version "$k8s_dir" k8s.io/kubernetes)
k8s_stamp=$(stamp_for "$k8s_dir" k8s.io/kubernetes)
k8s_flags=$(k8s_ldflags "$k8s_version")
# kube-apiserver first: it is the slowest and warms the cache for the rest.
for cmd in kube-apiserver kube-controller-manager kube-proxy kubectl; do
	build "$k8s_dir" "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$k8s_stamp" "$k8s_flags"
done

etcd_dir=$tools_dir/etcd
build "$etcd_dir" etcd go.etcd.io/etcd/server/v3 \
	"$(stamp_for "$etcd_dir" go.etcd.io/etcd/server/v3)" "-s -w"
