"""Name resolution tests control: a resolver with fixed answers that can change between calls."""

from __future__ import annotations

import ipaddress

from gateway.outbound import IPAddress, ResolutionFailed

PUBLIC_IP = "1.2.3.4"  # a public address; tests that use it never open a socket to it


class StaticResolver:
    """Answers from ``answers`` (name -> addresses; change it to make a name "start resolving"
    elsewhere); a list of answers is used one per call, the last one repeating. Records every
    lookup in ``calls``."""

    def __init__(self, answers: dict[str, list[str] | list[list[str]]] | None = None) -> None:
        self.answers: dict[str, list[str] | list[list[str]]] = dict(answers or {})
        self.calls: list[str] = []

    async def resolve(self, name: str, port: int) -> list[IPAddress]:
        self.calls.append(name)
        answer = self.answers.get(name)
        if not answer:
            raise ResolutionFailed(f"{name} does not resolve")
        if isinstance(answer[0], list):  # a sequence of answers, one per lookup
            n = self.calls.count(name) - 1
            current = answer[min(n, len(answer) - 1)]
        else:
            current = answer
        assert all(isinstance(a, str) for a in current)
        return [ipaddress.ip_address(str(a)) for a in current]
