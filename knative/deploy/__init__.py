"""``hiddenstate deploy``: apply the kustomize output of ``knative/`` to a cluster with the kubernetes client.

Pure parts (``customize``, ``kn``, ``traffic``) compute objects, commands and traffic blocks; ``cluster`` is the thin
I/O shell around the Kubernetes API; ``cli`` wires them to the command line.
"""
