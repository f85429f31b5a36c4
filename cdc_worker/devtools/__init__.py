"""Developer tools: private local servers, seed data, the load generator and the demo.

May import anything below the composition root; nothing in production imports them.
"""
