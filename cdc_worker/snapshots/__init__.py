"""Snapshots and resyncs: consistent snapshot reads, chunk readers in child processes, the
snapshotter (first build, rebuilds) and the resyncer (full and targeted).

May import the foundation, source, store, observability and the pipeline.
"""
