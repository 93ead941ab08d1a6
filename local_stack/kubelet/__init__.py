"""Kubelet stand-in of the local stack: runs pods as local processes.

The local stack has an API server but no kubelet, scheduler or controllers.
This package registers a Node, binds unscheduled pods to it, runs each
container's command as a local process (the image is ignored), writes pod
status through the ``pods/NAME/status`` subresource as a kubelet does, serves
container logs on the kubelet's HTTPS endpoint for ``pods/NAME/log``, and
completes pod deletions. Pods with the annotation of :mod:`.script` play a
scripted status sequence instead of running processes.

Modules: ``api`` (JSON client), ``node`` (Node and Lease), ``watch`` (list
and watch), ``pods`` (routing, binding, log lookup), ``worker`` (the life of
one pod), ``running`` and ``processes`` (container processes), ``containers``
(launch from the pod spec), ``memory`` (limits), ``logs`` and ``log_server``
(log files and endpoint), ``script`` and ``scripted`` (scripted pods),
``status`` (status rendering), ``scheduling`` (per-pod queues and timers),
``state`` (records across restarts), ``tls`` (serving certificate).
"""
