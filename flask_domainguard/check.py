"""``flask domainguard check``: one live lookup of one domain, judged, nothing written.

Trusted mail providers (``DOMAINGUARD_TRUSTED_DOMAINS``) are not looked up: the sweep and the
reset never look them up either, so a lookup would show something nothing acts on. Unless
``DOMAINGUARD_DNS_EVIDENCE`` is ``"off"`` the domain's DNS is read too and shown beside the
status source's answer, with the role it plays for the domain (evidence, a second signal, or
none); the verdict uses it only where it plays one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .addresses.store import find_address
from .dnsevidence import dns_lookup, dns_role
from .dnsverdict import Baseline
from .emails import InvalidAddress, parse_address, registrable_domain
from .livecheck import live_verdict
from .lookups import LookupLimits, Lookups
from .status.base import run_sync
from .status.observation import DnsObservation, Observation
from .verdict import Verdict, VerdictKind

if TYPE_CHECKING:
    from .context import Guard

__all__ = ["EXIT_SAFE", "EXIT_UNKNOWN", "EXIT_UNSAFE", "CheckResult", "check_target"]

EXIT_SAFE = 0
EXIT_UNSAFE = 3
EXIT_UNKNOWN = 4


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True)
class CheckResult:
    """What one lookup saw and what it means."""

    target: str
    domain: str
    trusted: bool
    observation: Observation | None
    """``None`` for a trusted provider: never looked up."""
    verdict: Verdict
    verified_at: datetime | None
    dns: DnsObservation | None = None
    """The DNS lookup made beside the status lookup; ``None`` with ``"off"`` or trusted."""
    dns_role: str | None = None
    """``"evidence"``, ``"signal"`` or ``None`` (read for display only)."""
    baseline: Baseline | None = None
    """The address's DNS baseline, when the target is a stored address with one."""

    @property
    def exit_code(self) -> int:
        """0 safe, 3 unsafe, 4 could not tell."""
        if self.verdict.kind is VerdictKind.UNKNOWN:
            return EXIT_UNKNOWN
        return EXIT_UNSAFE if self.verdict.unsafe else EXIT_SAFE

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data (``--json``)."""
        obs = self.observation
        return {
            "target": self.target,
            "domain": self.domain,
            "trusted": self.trusted,
            "looked_up": obs is not None,
            "observation": None
            if obs is None
            else {
                "registered": obs.registered,
                "statuses": sorted(obs.statuses),
                "expires_at": _iso(obs.expires_at),
                "registered_at": _iso(obs.registered_at),
                "transferred_at": _iso(obs.transferred_at),
                "source": obs.source,
                "error": obs.error,
            },
            "verdict": {
                "kind": self.verdict.kind.value,
                "unsafe": self.verdict.unsafe,
                "until": _iso(self.verdict.until),
                "reason": self.verdict.reason,
            },
            "verified_at": _iso(self.verified_at),
            "dns": self._dns_dict(),
        }

    def _dns_dict(self) -> dict[str, Any] | None:
        dns = self.dns
        if dns is None:
            return None
        fingerprint = dns.fingerprint
        baseline = self.baseline
        return {
            "role": self.dns_role,
            "delegated": dns.delegated,
            "detail": dns.detail,
            "ns": sorted(fingerprint.ns) if fingerprint else [],
            "mx": sorted(fingerprint.mx) if fingerprint else [],
            "ds": sorted(fingerprint.ds) if fingerprint else [],
            "error": dns.error,
            "baseline": None
            if baseline is None
            else {
                "kind": baseline.kind,
                "recorded_at": _iso(baseline.recorded_at),
                "ns": sorted(baseline.fingerprint.ns),
                "mx": sorted(baseline.fingerprint.mx),
            },
        }

    def _dns_rows(self) -> list[tuple[str, Any]]:
        dns = self.dns
        if dns is None:
            return []
        role = {
            "evidence": "evidence (no status server covers this TLD)",
            "signal": "a second signal beside the status source",
            None: "none (the status source covers this TLD; shown only)",
        }[self.dns_role]
        rows: list[tuple[str, Any]] = [("dns role", role)]
        if dns.error is not None:
            return [*rows, ("dns", f"lookup failed: {dns.error}")]
        if not dns.delegated:
            return [*rows, ("dns", f"not delegated ({dns.detail or 'no NS'})")]
        fingerprint = dns.fingerprint
        assert fingerprint is not None  # noqa: S101 - a delegated sighting has one
        rows += [
            ("dns", "delegated"),
            ("name servers", ", ".join(sorted(fingerprint.ns)) or "-"),
            ("mail servers", ", ".join(sorted(fingerprint.mx)) or "-"),
            ("ds records", len(fingerprint.ds)),
        ]
        if self.baseline is not None:
            base = self.baseline
            rows.append(
                (
                    "dns baseline",
                    f"{base.kind} {_iso(base.recorded_at)}: NS "
                    f"{', '.join(sorted(base.fingerprint.ns)) or '-'}; MX "
                    f"{', '.join(sorted(base.fingerprint.mx)) or '-'}",
                )
            )
        return rows

    def rows(self) -> list[tuple[str, Any]]:
        """Rows for a readable table."""
        obs = self.observation
        rows: list[tuple[str, Any]] = [("domain", self.domain)]
        if obs is None:
            return [
                *rows,
                ("trusted", "yes: a large mail provider, never looked up"),
                ("verdict", self.verdict.kind.value),
                ("reason", self.verdict.reason),
            ]
        rows += [
            ("registered", {True: "yes", False: "no", None: "could not tell"}[obs.registered]),
            ("statuses", ", ".join(sorted(obs.statuses)) or "-"),
            ("expires", _iso(obs.expires_at) or "-"),
            ("created", _iso(obs.registered_at) or "-"),
            ("transferred", _iso(obs.transferred_at) or "-"),
            ("source", obs.source or "-"),
        ]
        if obs.error:
            rows.append(("error", obs.error))
        rows += self._dns_rows()
        if self.verified_at is not None:
            rows.append(("address verified", _iso(self.verified_at)))
        rows += [
            ("verdict", self.verdict.kind.value + (" (UNSAFE)" if self.verdict.unsafe else "")),
            ("until", _iso(self.verdict.until) or "-"),
            ("reason", self.verdict.reason),
        ]
        return rows


def _target_domain(guard: Guard, target: str) -> tuple[str, datetime | None, Baseline | None]:
    text = target.strip()
    if "@" in text:
        try:
            parsed = parse_address(text)
        except InvalidAddress as exc:
            raise ValueError(str(exc)) from None
        if parsed.registrable is None:
            raise ValueError(f"{parsed.domain} is not a domain anyone can register")
        row = find_address(guard, parsed.normalized)
        if row is None:
            return parsed.registrable, None, None
        return parsed.registrable, row.verified_at, Baseline.of(row)
    name = registrable_domain(text)
    if name is None:
        raise ValueError(f"{target!r} is not a registrable domain or an email address")
    return name, None, None


def check_target(guard: Guard, target: str, *, backend_name: str | None = None) -> CheckResult:
    """Look ``target`` (a domain or an address) up live and judge it; writes nothing.

    The domain's stored memories (:mod:`.domainstate`), and for a stored address its
    ``verified_at``, are used so the verdict is the one the sweep would reach.

    :raises ValueError: when ``target`` is neither a registrable domain nor an address.
    """
    domain, verified_at, baseline = _target_domain(guard, target)
    settings = guard.settings
    if domain in settings.trusted_domains:
        trusted = Verdict(
            kind=VerdictKind.OK,
            unsafe=False,
            until=None,
            reason=f"{domain} is a trusted mail provider (DOMAINGUARD_TRUSTED_DOMAINS): "
            "never looked up, always safe.",
        )
        return CheckResult(target, domain, True, None, trusted, verified_at, baseline=baseline)
    backend = guard.status_backend(backend_name)
    limits = LookupLimits(concurrency=1, per_server=1, retries=0, timeout=settings.http_timeout)

    # The DNS is read whatever its role, so the operator sees it beside the status answer.
    dns = dns_lookup(settings)

    async def look() -> Observation:
        async with Lookups(backend, limits, dns=dns, dns_mode="always") as lookups:
            return await lookups.observe(domain)

    obs = run_sync(look())  # also from a thread whose event loop runs (an async host)
    role = dns_role(settings.dns_evidence, backend, domain)
    sighting = obs.dns
    judged = replace(obs, dns=None if role is None or sighting is None else sighting)
    verdict = live_verdict(guard, domain, judged, verified_at, baseline)
    guard.db.session.rollback()
    return CheckResult(
        target=target,
        domain=domain,
        trusted=domain in settings.trusted_domains,
        observation=obs,
        verdict=verdict,
        verified_at=verified_at,
        dns=sighting,
        dns_role=role,
        baseline=baseline,
    )
