"""kube-apiserver with RBAC, client certificates and a service account key."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Sequence

from local_stack import build, pki
from local_stack.components.base import Component
from local_stack.config import HOST
from local_stack.errors import ComponentFailedError, StackError
from local_stack.kubeapi import AdminClient

logger = logging.getLogger(__name__)

#: Address range of Services. Nothing routes it: no kube-proxy runs.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"

#: Seconds to wait for the server to create the "default" namespace.
_DEFAULT_NAMESPACE_TIMEOUT = 30.0


class ApiServer(Component):
    """kube-apiserver backed by the stack's etcd, with no other control plane.

    No controller-manager or scheduler runs, so pods stay where tests put
    them and namespaces are never finalized after deletion.
    """

    name = "kube-apiserver"
    port_variables = ("POD_MONITOR_STACK_APISERVER_PORT",)
    # On SIGTERM the server drains open client connections first, and with
    # watches of a client outside the stack open it had not exited after
    # 20 s. It keeps no state of its own (etcd does), so SIGKILL is safe.
    stop_timeout = 10.0

    @property
    def ports(self) -> Sequence[int]:
        """Secure port."""
        return (self.config.apiserver_port,)

    @property
    def pki(self) -> pki.Pki:
        """Certificates and keys in `<stack>/pki`."""
        return pki.Pki(self.config.stack_dir / "pki")

    def check_prerequisites(self) -> None:
        """Require Go when kube-apiserver or kubectl is not built yet."""
        for binary in build.kube_binaries():
            build.require_go_if_unbuilt(binary, self.config.cache_dir)

    def ensure_built(self) -> None:
        """Build kube-apiserver and kubectl unless they are cached."""
        for binary in build.kube_binaries():
            build.ensure_go_binary(binary, self.config.cache_dir)

    def prepare(self) -> None:
        """Create the certificates and write the admin kubeconfig."""
        pki.ensure_pki(self.pki.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        write_kubeconfig(self)

    def command(self) -> Sequence[str]:
        """Return kube-apiserver's argv, honouring the stack's tuning variables."""
        files = self.pki
        argv = [
            str(build.kube_binaries()[0].path(self.config.cache_dir)),
            f"--etcd-servers=http://{HOST}:{self.config.etcd_port}",
            f"--bind-address={HOST}",
            f"--secure-port={self.config.apiserver_port}",
            # Without it a machine without a default route fails to start
            # with "Unable to find suitable network address".
            f"--advertise-address={HOST}",
            # The endpoint reconciler rejects a loopback address for the
            # "kubernetes" Service and logs that error every 10 seconds.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={self.directory / 'certs'}",
            f"--tls-cert-file={files.path('apiserver.crt')}",
            f"--tls-private-key-file={files.path('apiserver.key')}",
            f"--client-ca-file={files.ca_cert}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={files.service_account_key}",
            f"--service-account-signing-key-file={files.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            # No controller-manager creates a "default" ServiceAccount in new
            # namespaces, and this plugin rejects pods that lack one.
            "--disable-admission-plugins=ServiceAccount",
            # Pod logs are proxied to the kubelet stand-in at the Node's
            # InternalIP. The apiserver does not verify the kubelet's
            # certificate because no --kubelet-certificate-authority is set.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={files.path('apiserver-kubelet-client.crt')}",
            f"--kubelet-client-key={files.path('apiserver-kubelet-client.key')}",
            f"--watch-cache={'true' if self.config.watch_cache else 'false'}",
            "--profiling=false",
        ]
        if self.config.etcd_compaction_interval:
            argv.append(
                f"--etcd-compaction-interval={self.config.etcd_compaction_interval}"
            )
        argv.extend(self.config.apiserver_extra_args)
        return argv

    def owns_cmdline(self, cmdline: str) -> bool:
        """Match kube-apiserver serving this stack's certificate."""
        return (
            "kube-apiserver" in cmdline
            and f"--tls-cert-file={self.pki.path('apiserver.crt')}" in cmdline
        )

    def admin_client(self) -> AdminClient:
        """Return a client authenticated with the admin certificate."""
        files = self.pki
        return AdminClient(
            self.config.apiserver_port,
            files.ca_cert,
            files.path("admin.crt"),
            files.path("admin.key"),
        )

    def check_health(self) -> str | None:
        """GET /readyz as admin and expect 200."""
        try:
            response = self.admin_client().request("GET", "/readyz", timeout=3)
        except OSError as error:
            return f"GET /readyz failed: {error}"
        if response.status != 200:
            return f"GET /readyz returned {response.status}: {response.text[-300:]}"
        return None

    def after_healthy(self) -> None:
        """Create the "default" ServiceAccount once the server made its namespace.

        Admission no longer requires it, but clients that mount tokens or
        read the account expect it to exist, as in a real cluster.
        """
        client = self.admin_client()
        deadline = time.monotonic() + _DEFAULT_NAMESPACE_TIMEOUT
        while client.request("GET", "/api/v1/namespaces/default").status != 200:
            if time.monotonic() > deadline:
                raise ComponentFailedError(
                    self.name,
                    "the default namespace did not appear within "
                    f"{_DEFAULT_NAMESPACE_TIMEOUT:.0f}s",
                    self.log_path,
                )
            time.sleep(0.2)
        try:
            client.create(
                "/api/v1/namespaces/default/serviceaccounts",
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "default"},
                },
            )
        except StackError as error:
            raise ComponentFailedError(self.name, str(error), self.log_path) from error


def write_kubeconfig(apiserver: ApiServer) -> None:
    """Write `<stack>/kubeconfig` with the admin client certificate inlined.

    The data is inlined so the file keeps working when copied elsewhere.
    """
    files = apiserver.pki

    def inline(name: str) -> str:
        return base64.b64encode(files.path(name).read_bytes()).decode()

    server = f"https://{HOST}:{apiserver.config.apiserver_port}"
    text = f"""\
apiVersion: v1
kind: Config
clusters:
- name: local-stack
  cluster:
    server: {server}
    certificate-authority-data: {inline("ca.crt")}
users:
- name: local-stack-admin
  user:
    client-certificate-data: {inline("admin.crt")}
    client-key-data: {inline("admin.key")}
contexts:
- name: local-stack
  context:
    cluster: local-stack
    user: local-stack-admin
    namespace: default
current-context: local-stack
"""
    path = apiserver.config.kubeconfig_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)
