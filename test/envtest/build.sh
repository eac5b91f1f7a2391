#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver + etcd) from Go modules into a cache directory
# outside the clone, and links the Gateway API CRD manifests from the Go module cache next to them.
#
#   test/envtest/build.sh            # builds once, then is a no-op (a fraction of a second)
#   export SILVERBACK_ENVTEST_DIR=$(test/envtest/build.sh | tail -1)
#
# Output directory: $SILVERBACK_ENVTEST_DIR if set, else
#   ${XDG_CACHE_HOME:-$HOME/.cache}/silverback/envtest/<k8s-version>-<etcd-version>/
# It holds:
#   kube-apiserver, etcd            the binaries
#   gateway-api -> <module cache>/sigs.k8s.io/gateway-api@vX.Y.Z/config/crd
#                                   (standard/ and experimental/ CRD manifests)
#   stamp                           what was built (versions + go.sum hash); a mismatch rebuilds
# The last line of stdout is the directory. Everything else goes to stderr.
#
# Needs Go (GOTOOLCHAIN=local is forced: the go line of go.mod must not exceed the local Go) and the
# Go module proxy; nothing else is downloaded. Set SILVERBACK_ENVTEST_FORCE=1 to rebuild.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

dir=${SILVERBACK_ENVTEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/silverback/envtest/$K8S_VERSION-$ETCD_VERSION}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

command -v go >/dev/null || { echo "build.sh: 'go' is not on PATH (Go >= $(sed -n 's/^go //p' "$here/go.mod") is needed)" >&2; exit 1; }

stamp="k8s=$K8S_VERSION etcd=$ETCD_VERSION gosum=$(sha256sum "$here/go.sum" | cut -c1-16) $(go env GOOS)/$(go env GOARCH)"
gw_link="$dir/gateway-api"
gw_stamp="gateway-api=$GATEWAY_API_VERSION"

is_built() {
	[ -z "${SILVERBACK_ENVTEST_FORCE:-}" ] &&
		[ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ] &&
		[ "$(cat "$dir/stamp" 2>/dev/null)" = "$stamp" ]
}
gw_ok() {
	[ -d "$gw_link/standard" ] && [ "$(cat "$dir/gateway-api.stamp" 2>/dev/null)" = "$gw_stamp" ]
}

# One builder at a time per directory; others wait for it and then find the work done.
exec 9>"$dir/.lock"
flock 9

if ! is_built; then
	echo "build.sh: building kube-apiserver v$K8S_VERSION and etcd v$ETCD_VERSION into $dir" >&2
	echo "build.sh: (cold build: several minutes; later runs reuse it)" >&2
	start=$(date +%s)
	rm -f "$dir/stamp"
	tmp=$(mktemp -d "$dir/.build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
	ldflags+=" -X k8s.io/component-base/version.gitMajor=${K8S_VERSION%%.*}"
	minor=${K8S_VERSION#*.}
	ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
	ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
	(
		cd "$here"
		go build -trimpath -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
		go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
	)
	"$tmp/kube-apiserver" --version >&2
	"$tmp/etcd" --version >&2
	mv -f "$tmp/kube-apiserver" "$tmp/etcd" "$dir/"
	echo "$stamp" >"$dir/stamp"
	echo "build.sh: built in $(($(date +%s) - start)) s" >&2
fi

if ! gw_ok; then
	# Outside the tools module, so the Gateway API module never joins the k8s module graph;
	# the download is still verified against the checksum database.
	gw_dir=$(cd / && GOFLAGS= go mod download -json "sigs.k8s.io/gateway-api@v$GATEWAY_API_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
	[ -d "$gw_dir/config/crd/standard" ] || { echo "build.sh: no CRDs in '$gw_dir'" >&2; exit 1; }
	ln -sfn "$gw_dir/config/crd" "$gw_link"
	echo "$gw_stamp" >"$dir/gateway-api.stamp"
fi

echo "$dir"
