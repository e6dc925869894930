"""The `loanops` command: the operator's way into the flows, the serving tier and the registry.

The only package that imports both `flows` and `serving`; nothing imports it.
"""
