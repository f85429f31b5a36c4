"""The Redis read model: the store interface and in-memory fake, the Redis adapter, packed
transactions, every key, the job records and the state cache.

May import the foundation modules (errors, settings, checkpoint) and projections.
"""
