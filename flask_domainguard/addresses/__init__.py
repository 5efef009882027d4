"""A user's addresses: the store (add, primary, remove, unverify), verification by signed link,
how an address stands, and the operator's re-verification. Internal: host apps use the
:class:`~flask_domainguard.DomainGuard` methods."""
