"""Signing keys, encryption and API-key hashing."""
