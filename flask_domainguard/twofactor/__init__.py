"""Two-factor authentication (TOTP and recovery codes) and the login gate around the host's login.

One module per concern, each importing only those above it in this list:

- :mod:`.crypto`: keys, TOTP secrets sealed at rest, TOTP and recovery-code primitives;
- :mod:`.devices`: the user's device and recovery codes, enrolment, turning 2FA off, an admin's
  reset, key rotation;
- :mod:`.attempts`: the attempt budget (sliding window, escalating lockouts);
- :mod:`.verify`: checking a TOTP code, a recovery code, the password, a first enrolment code;
- :mod:`.requirement`: who must enrol (``DOMAINGUARD_2FA_REQUIRED_SINCE``) and the report;
- :mod:`.trust`: the "trust this device" cookie;
- :mod:`.gate`: the login gate (Flask-Login signals, ``before_request``, the session's state);
- :mod:`.fresh`: freshness for security changes (``require_fresh_2fa``);
- :mod:`.views`: the pages on the extension's blueprint.

Hosts use the guard's methods (``guard.twofactor_enabled``, ``guard.require_fresh_2fa``, ...);
the package itself imports nothing, so importing one module loads only what that one needs.
"""
