"""Kubelet stand-in of the local stack: runs pods as local processes.

The local stack has an API server but no kubelet, scheduler or controllers.
This package registers a Node and binds unscheduled pods to it. It runs each
container's command as a local process and ignores the image. It writes pod
status through the ``pods/NAME/status`` subresource as a kubelet does, serves
container logs on the kubelet's HTTPS endpoint for ``pods/NAME/log``, and
completes pod deletions. Pods with the annotation of :mod:`.script` play a
scripted status sequence instead of running processes. docs/local-stack.md
describes the behaviour in full.

Modules, by concern:

- API and watch: ``api`` (JSON client), ``watch`` (list and watch).
- Node: ``node`` (Node and Lease).
- Pods: ``pods`` (routing, binding, log lookup), ``worker`` (the life of one
  pod), ``status`` (status rendering), ``state`` (records across restarts).
- Processes: ``running`` and ``processes`` (container processes),
  ``containers`` (launch from the pod spec), ``memory`` (limits).
- Logs: ``logs`` (log files), ``log_server`` and ``tls`` (HTTPS endpoint).
- Scripts: ``script`` (annotation format), ``scripted`` (playing it).
- Work queues: ``scheduling`` (per-pod queues and timers).
"""
