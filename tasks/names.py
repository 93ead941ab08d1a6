"""Names of the tasks and queues, shared by the watcher and the workers.

The watcher sends tasks by these names, so it never imports the task code,
its Kubernetes log reader or its Kafka client.
"""

POD_CHANGED_TASK = "pod_monitor.pod_changed"
RECONCILE_TASK = "pod_monitor.reconcile"

#: Queue of pod changes; workers serve it with most of their processes.
POD_CHANGES_QUEUE = "pod-changes"
#: Queue of reconciliations, apart so a long reconciliation never waits
#: behind thousands of pod changes, nor holds them up.
RECONCILE_QUEUE = "reconcile"
