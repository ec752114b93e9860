"""Example apps built on a bundle."""
