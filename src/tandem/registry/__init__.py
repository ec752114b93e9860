"""The model registry: versions and aliases, API keys, bundle folders, and OTA's records (registry/ota/).

Storage only: no HTTP here (the server's routes live in tandem.server); import-linter holds that line.
"""
