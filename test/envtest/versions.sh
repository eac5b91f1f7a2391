# Pinned versions of the envtest control plane. Sourced by build.sh and update-pins.sh.
# Changing a version here requires running ./update-pins.sh (which rewrites go.mod/go.sum).
#
# Only versions the Go module proxy serves can be used; `go list -m -versions k8s.io/kubernetes`
# lists them (at the time of writing the newest 1.35 patch it serves is v1.35.4).
K8S_VERSION=1.35.4          # k8s.io/kubernetes v$K8S_VERSION, staging modules v0.${K8S_VERSION#1.}
ETCD_VERSION=3.6.5          # go.etcd.io/etcd/server/v3; the version k8s.io/kubernetes v1.35.x requires
GATEWAY_API_VERSION=1.5.1   # sigs.k8s.io/gateway-api; only its CRD manifests are used
