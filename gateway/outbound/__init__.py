"""Every connection the gateway opens to another host: resolve once, check, connect to the checked
address, never follow a redirect (docs/decisions/0014-outbound-guard.md).

    addresses.py   what address a host names (every spelling) and whether production may call it
    resolver.py    one lookup (getaddrinfo), whose answer is both checked and connected to
    guard.py       the decision, the same at PUT, at start-up and at call time
    transport.py   httpx transport: judge each request, connect to the checked IP (Host/SNI kept)
    allowlist.py   per-school private networks, set by the platform admin
    service.py     ``Outbound``: one client per school over one shared connector
"""

from gateway.outbound.addresses import IPAddress, IPNetwork
from gateway.outbound.allowlist import AllowlistView, NetworkAllowlists
from gateway.outbound.guard import EndpointInvalid, EndpointRefused, EndpointUnresolved, Guard, Target
from gateway.outbound.resolver import NameResolver, ResolutionFailed, SystemResolver
from gateway.outbound.service import Outbound
from gateway.outbound.transport import NetworkConnector, OutboundRefused, PassThrough

__all__ = [
    "AllowlistView",
    "EndpointInvalid",
    "EndpointRefused",
    "EndpointUnresolved",
    "Guard",
    "IPAddress",
    "IPNetwork",
    "NameResolver",
    "NetworkAllowlists",
    "NetworkConnector",
    "Outbound",
    "OutboundRefused",
    "PassThrough",
    "ResolutionFailed",
    "SystemResolver",
    "Target",
]
