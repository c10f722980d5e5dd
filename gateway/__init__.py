"""CampusPay gateway: one signed POS payment API in front of pluggable school payment providers.

Import ``gateway.app.create_app`` to build the service, ``gateway.client`` for the POS client.
This package root stays import-light so the client can be used without the server's dependencies.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
