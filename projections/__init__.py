"""Pure projection logic: row changes in, read-model documents and store operations out.

Imports nothing but the standard library and orjson; a unit test enforces it.
"""
