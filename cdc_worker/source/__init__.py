"""The source side: the binlog stream, its reader process, packet screening, table maps,
the row decoder, hot events, DDL detection, and the start-up checks of the source server.

May import the foundation modules (errors, settings, checkpoint) and projections only.
"""
