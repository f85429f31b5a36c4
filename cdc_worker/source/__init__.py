"""The source side: the binlog stream, its reader process, table maps, the row decoder,
hot events, and the start-up checks of the source server.

May import the foundation modules (errors, settings, checkpoint) and projections only.
"""
