"""The `cbatch` command (cli) and what cbatchd serves it: admin operations (ops), the
pinned image set (images), and `cbatch exec` on both sides (execclient, jobexec).

Imports nothing, so `cbatch` starts without docker.
"""
