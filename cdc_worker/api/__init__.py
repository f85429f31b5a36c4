"""The read API: the FastAPI app, admin routes, response models, pipelined reads, listing
queries and the API's metrics.

May import the foundation, store and observability; never the worker side.
"""
