"""The guarded password reset.

- :mod:`.decision`: who may receive a reset (:func:`.decision.reset_decision`).
- :mod:`.tokens`: reset tokens, and completing a reset with one.
- :mod:`.flow`: the request pipeline (decide, count, mail, tell the owner of refusals, queue).
- :mod:`.hostview`: the decorator for a host's own forgot-password view.
- :mod:`.views`: the blueprint's reset pages.
"""
