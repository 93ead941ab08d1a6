"""Local stack of real components for tests and the demo.

`python -m local_stack up` builds what is missing and starts etcd,
kube-apiserver, the kubelet stand-in, a single Kafka node and Redis as
processes on 127.0.0.1. State and logs live in one folder (`.stack` in the
checkout, or POD_MONITOR_STACK_DIR if set) and built binaries and
jars live in a cache folder under the home directory, so a fresh clone reuses
them. See docs/local-stack.md for ports, variables and troubleshooting.
"""
