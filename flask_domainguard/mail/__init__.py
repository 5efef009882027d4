"""Mail, in one place.

- :mod:`.recipients`: the one rule for who may receive what (:func:`.recipients.may_receive`).
- :mod:`.outgoing`: DomainGuard's own mail (templates, notices to a user's safe addresses).
- :mod:`.safetynet`: the Flask-Mail hook that applies the same rule to every message the host
  sends, installed when ``DOMAINGUARD_MAIL_GUARD`` is not ``"off"``.
"""
