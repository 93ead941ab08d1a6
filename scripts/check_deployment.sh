#!/usr/bin/env bash
# Check deploy/kubernetes against a running API server, without a kubelet:
#
#   eval "$(.venv/bin/python -m local_stack env)"   # or any test cluster
#   bash scripts/check_deployment.sh
#
# 1. Every kustomization renders.
# 2. The API server accepts every rendered object (server-side dry run) in
#    namespaces that enforce the "restricted" Pod Security level.
# 3. The RBAC objects, applied for real and deleted afterwards, allow each
#    ServiceAccount what pod-monitor calls and nothing more
#    (`kubectl auth can-i`).
#
# The namespaces pod-monitor, team-a and team-b are created when missing and
# left in place, empty, because deleting a namespace needs the namespace
# controller, which the local stack does not run. Needs cluster-admin.
# Exits 1 when any check fails.
set -uo pipefail

cd "$(dirname "$0")/.."
KUBECTL=${POD_MONITOR_KUBECTL:-kubectl}
failures=0
created_namespaces=()
scratch=$(mktemp -d)

cleanup() {
    if [[ -f $scratch/rbac-applied.yaml ]]; then
        "$KUBECTL" delete -f "$scratch/rbac-applied.yaml" --ignore-not-found >/dev/null
    fi
    rm -rf "$scratch"
    if ((${#created_namespaces[@]} > 0)); then
        echo "created the namespaces ${created_namespaces[*]}; they are empty and left in place"
    fi
}
trap cleanup EXIT

fail() {
    echo "FAILED: $*"
    failures=$((failures + 1))
}

# The RBAC check applies and then deletes these objects, so it must not
# run where pod-monitor is installed.
if "$KUBECTL" get clusterrole pod-monitor-watcher >/dev/null 2>&1 ||
    "$KUBECTL" -n pod-monitor get serviceaccount pod-monitor-watcher >/dev/null 2>&1; then
    echo "pod-monitor's RBAC objects already exist on this cluster;" \
        "run this script on a test cluster without pod-monitor installed" >&2
    exit 1
fi

for namespace in pod-monitor team-a team-b; do
    if ! "$KUBECTL" get namespace "$namespace" >/dev/null 2>&1; then
        "$KUBECTL" create namespace "$namespace" >/dev/null || exit 1
        created_namespaces+=("$namespace")
    fi
    "$KUBECTL" label namespace "$namespace" --overwrite >/dev/null \
        pod-security.kubernetes.io/enforce=restricted \
        pod-security.kubernetes.io/warn=restricted
done

# An overlay with the leader-election component. kustomize accepts only
# relative paths to bases and components.
leader_overlay=$scratch/leader-election
mkdir -p "$leader_overlay"
kubernetes_dir=$(realpath --relative-to="$leader_overlay" deploy/kubernetes)
cat >"$leader_overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: pod-monitor
resources:
  - $kubernetes_dir/base
components:
  - $kubernetes_dir/components/leader-election
EOF

echo "== render and server-side dry run"
for dir in deploy/kubernetes deploy/kubernetes/base \
    deploy/kubernetes/overlays/namespaced "$leader_overlay"; do
    rendered=$scratch/rendered.yaml
    if ! "$KUBECTL" kustomize "$dir" >"$rendered"; then
        fail "kubectl kustomize $dir"
        continue
    fi
    echo "render $dir: $(grep -c '^kind:' "$rendered") objects"
    # The base sets no namespace, so only the kustomizations that set one
    # can be applied.
    [[ $dir == deploy/kubernetes/base ]] && continue
    if ! output=$("$KUBECTL" apply --dry-run=server -f "$rendered" 2>&1); then
        fail "dry run of $dir: $output"
    elif grep -qi 'would violate PodSecurity' <<<"$output"; then
        fail "dry run of $dir: $(grep -i 'PodSecurity' <<<"$output")"
    else
        echo "dry run $dir: $(grep -c '(server dry run)' <<<"$output") objects accepted"
    fi
done
if output=$("$KUBECTL" -n team-a create --dry-run=server \
    -f deploy/kubernetes/examples/execution-pod.yaml 2>&1); then
    echo "example execution pod: accepted"
else
    fail "example execution pod: $output"
fi
if output=$("$KUBECTL" -n pod-monitor apply --dry-run=server \
    -f deploy/kubernetes/secrets.example.yaml 2>&1); then
    echo "example Secrets: accepted"
else
    fail "example Secrets: $output"
fi
# Control: without Pod Security admission the checks above prove less.
privileged='{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check-privileged"},
  "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true}}]}}'
if "$KUBECTL" -n team-a create --dry-run=server -f - <<<"$privileged" >/dev/null 2>&1; then
    fail "a privileged pod was accepted: Pod Security admission is off"
else
    echo "control: a privileged pod is rejected"
fi

rbac_only() {
    "$KUBECTL" kustomize "$1" | python3 -c '
import sys, yaml
kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
docs = [doc for doc in yaml.safe_load_all(sys.stdin) if doc and doc["kind"] in kinds]
yaml.safe_dump_all(docs, sys.stdout)'
}

# expect ANSWER ACCOUNT NAMESPACE VERB RESOURCE. An empty NAMESPACE means all.
expect() {
    local answer=$1 account=$2 namespace=$3
    shift 3
    local scope=(-A)
    [[ -n $namespace ]] && scope=(-n "$namespace")
    local got
    got=$("$KUBECTL" auth can-i "$@" "${scope[@]}" \
        --as="system:serviceaccount:pod-monitor:$account" 2>/dev/null)
    if [[ $got == "$answer" ]]; then
        echo "ok   $account in ${namespace:-all namespaces}: $* -> $got"
    else
        fail "$account in ${namespace:-all namespaces}: $* -> '$got', expected $answer"
    fi
}

echo "== RBAC: cluster-wide, with leader election"
rbac_only "$leader_overlay" >"$scratch/rbac-applied.yaml"
"$KUBECTL" apply -f "$scratch/rbac-applied.yaml" >/dev/null || fail "applying RBAC"
expect yes pod-monitor-watcher "" list pods
expect yes pod-monitor-watcher "" watch pods
expect no pod-monitor-watcher "" get pods
expect no pod-monitor-watcher team-a get pods/log
expect no pod-monitor-watcher team-a delete pods
expect yes pod-monitor-watcher pod-monitor create leases
expect yes pod-monitor-watcher pod-monitor get leases/pod-monitor-watcher
expect yes pod-monitor-watcher pod-monitor update leases/pod-monitor-watcher
expect no pod-monitor-watcher pod-monitor get leases/another-lease
expect no pod-monitor-watcher pod-monitor delete leases/pod-monitor-watcher
expect no pod-monitor-watcher team-a create leases
expect yes pod-monitor-worker team-a get pods
expect yes pod-monitor-worker team-a get pods/log
expect no pod-monitor-worker "" list pods
expect no pod-monitor-worker team-a watch pods
expect no pod-monitor-worker team-a delete pods
expect no pod-monitor-worker pod-monitor create leases
expect yes pod-monitor-reconciler "" list pods
expect yes pod-monitor-reconciler team-a get pods
expect yes pod-monitor-reconciler team-a get pods/log
expect no pod-monitor-reconciler team-a watch pods
expect no pod-monitor-reconciler team-a patch pods
"$KUBECTL" delete -f "$scratch/rbac-applied.yaml" >/dev/null

echo "== RBAC: namespaced overlay (team-a, team-b)"
rbac_only deploy/kubernetes/overlays/namespaced >"$scratch/rbac-applied.yaml"
"$KUBECTL" apply -f "$scratch/rbac-applied.yaml" >/dev/null || fail "applying RBAC"
expect yes pod-monitor-watcher team-a list pods
expect yes pod-monitor-watcher team-b watch pods
expect no pod-monitor-watcher "" list pods
expect no pod-monitor-watcher default list pods
expect no pod-monitor-watcher pod-monitor create leases
expect yes pod-monitor-worker team-b get pods/log
expect no pod-monitor-worker default get pods
expect yes pod-monitor-reconciler team-a list pods
expect no pod-monitor-reconciler default list pods

if ((failures > 0)); then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all checks passed"
