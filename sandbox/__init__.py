"""CampusPay's sandbox: independent implementations of each provider's side of the wire.

It imports nothing from gateway/ or adapters/, so it checks them rather than mirroring them.
"""

from sandbox.app import create_sandbox_app

__all__ = ["create_sandbox_app"]
