"""Blinker signals for every change of security state, sent after the change is committed.

Each is sent with the Flask app as sender and keyword arguments naming what changed
(``user_id``, ``address``, ``reason``, ...). Connect as with Flask's own signals::

    from flask_domainguard import signals

    @signals.address_unverified.connect
    def tell_security_team(app, **info): ...
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

address_added = _signals.signal("address-added")
address_removed = _signals.signal("address-removed")
primary_changed = _signals.signal("primary-changed")
verification_sent = _signals.signal("verification-sent")
address_verified = _signals.signal("address-verified")
verification_refused = _signals.signal("verification-refused")
address_unverified = _signals.signal("address-unverified")
unverify_held = _signals.signal("unverify-held")
domain_verdict_changed = _signals.signal("domain-verdict-changed")
expiry_warning_sent = _signals.signal("expiry-warning-sent")
reset_sent = _signals.signal("reset-sent")
reset_refused = _signals.signal("reset-refused")
password_reset = _signals.signal("password-reset")
password_changed = _signals.signal("password-changed")
account_locked = _signals.signal("account-locked")
twofactor_enrolled = _signals.signal("twofactor-enrolled")
twofactor_disabled = _signals.signal("twofactor-disabled")
twofactor_succeeded = _signals.signal("twofactor-succeeded")
twofactor_failed = _signals.signal("twofactor-failed")
twofactor_locked_out = _signals.signal("twofactor-locked-out")
twofactor_admin_reset = _signals.signal("twofactor-admin-reset")
recovery_code_used = _signals.signal("recovery-code-used")
recovery_codes_regenerated = _signals.signal("recovery-codes-regenerated")
