"""The example app's pages: register, log in and out, forgot and reset password, account."""

from __future__ import annotations

import hmac
import logging
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from flask_mail import Message
from flask_wtf import FlaskForm
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response
from wtforms import BooleanField, EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, ValidationError

from flask_domainguard import AddressTaken, InvalidAddress
from flask_domainguard.addresses.verification import VerificationError
from flask_domainguard.emails import parse_address
from flask_domainguard.report import build_report

from . import guard
from .models import User, db

bp = Blueprint("auth", __name__)
log = logging.getLogger(__name__)

#: Checked when no account has the address, so that login costs the same either way.
_DUMMY_PASSWORD_HASH = generate_password_hash("no account has this password")


def _valid_address(form: FlaskForm, field: Any) -> None:
    # DomainGuard's parser: the same rules as the addresses it stores, with messages a
    # person can act on (and no dependency on the email_validator package).
    try:
        parse_address(field.data or "")
    except InvalidAddress as exc:
        raise ValidationError(str(exc)) from None


class RegisterForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=80)])
    email = EmailField("Email address", validators=[DataRequired(), _valid_address])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=10)])


class LoginForm(FlaskForm):
    email = EmailField("Email address", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])
    remember = BooleanField("Keep me logged in")


class ForgotForm(FlaskForm):
    email = EmailField("Email address", validators=[DataRequired()])


class ResetForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(), Length(min=10)])
    confirm = PasswordField("Repeat it", validators=[EqualTo("password")])


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="example-reset")


def _safe_next(target: str | None) -> str:
    parts = urlsplit(target or "")
    if not target or parts.scheme or parts.netloc or not target.startswith("/") or "\\" in target:
        return url_for("auth.index")
    return target


@bp.route("/")
def index() -> str:
    return render_template("index.html")


def _tell_owner(address: str, what: str) -> None:
    """Mail an address that already belongs to an account that someone tried to use it.

    Only to a verified address on a safe domain (DomainGuard decides): an unverified or
    lapsed address may be read by someone else, who must not learn that the account exists.
    """
    if not guard.safe_to_mail(address):  # DomainGuard
        return
    current_app.extensions["mail"].send(
        Message(
            subject="Someone tried to use your address at Example App",
            recipients=[address],
            body=f"Someone tried to {what} with {address}, which already belongs to your "
            "Example App account. Nothing was changed.\n\nIf it was you: log in, or ask for a "
            "password reset if you forgot your password. If it was not you, ignore this mail.",
        )
    )


@bp.route("/register", methods=["GET", "POST"])
def register() -> Any:
    # The answer never says whether the address has an account: a new address gets a
    # verification link, a taken one a note to its owner, and both the same page.
    form = RegisterForm()
    if form.validate_on_submit():
        email = parse_address(form.email.data).normalized
        password_hash = generate_password_hash(form.password.data)  # the same work either way
        taken = guard.find_address(email) is not None  # DomainGuard: any user's address
        if taken or db.session.query(User).filter_by(email=email).first() is not None:
            _tell_owner(email, "create an account")
        else:
            user = User(email=email, name=form.name.data, password_hash=password_hash)
            db.session.add(user)
            db.session.commit()
            try:  # DomainGuard: track the address and mail its verification link
                guard.send_verification(guard.add_address(user, email, primary=True))
            except (AddressTaken, VerificationError) as exc:
                # Shown on the account page once they log in, never in this answer.
                log.info("registration: no verification mail (%s)", type(exc).__name__)
        return render_template("register_done.html", email=email)
    return render_template("register.html", form=form)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.query(User).filter_by(email=form.email.data.strip().lower()).first()
        if user is None:
            # Equal work for unknown addresses: a password hash is checked either way, so
            # the answer time does not tell which addresses have accounts.
            check_password_hash(_DUMMY_PASSWORD_HASH, form.password.data)
        elif user.check_password(form.password.data):
            login_user(user, remember=form.remember.data)
            return redirect(_safe_next(request.args.get("next")))
        flash("Wrong address or password.", "error")
    return render_template("login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    logout_user()
    return redirect(url_for("auth.index"))


@bp.route("/forgot", methods=["GET", "POST"])
@guard.guarded_reset_request(field="email", template_or_response="forgot_done.html")  # DomainGuard
def forgot() -> Any:
    # DomainGuard: a POST reaches this view only when a reset is allowed, and the requester
    # already got forgot_done.html; the decision names the user and the safe address.
    form = ForgotForm()
    if request.method == "POST":
        decision = g.domainguard_reset  # DomainGuard
        user = decision.user
        address = decision.address.address  # DomainGuard: the verified, safe address
        token = _serializer().dumps([user.id, user.password_hash[-16:], address])
        link = guard.external_link("auth.reset", token=token)  # DomainGuard: never the Host header
        current_app.extensions["mail"].send(
            Message(
                subject="Reset your Example App password",
                recipients=[address],
                body=f"Someone asked to reset your password. If it was you, open:\n\n{link}"
                "\n\nThe link works for one hour. If it was not you, ignore this mail.",
            )
        )
        return render_template("forgot_done.html")
    return render_template("forgot.html", form=form)


def _reset_user(token: str) -> tuple[User, str] | None:
    """The user a reset link may set a password for and the address it went to, or ``None``
    when the link is no good."""
    try:
        user_id, fingerprint, address = _serializer().loads(token, max_age=3600)
    except (BadSignature, SignatureExpired, TypeError, ValueError):
        return None
    user = db.session.get(User, user_id) if isinstance(user_id, int) else None
    # Bound to the password hash: the link dies once the password changes.
    if user is None or not hmac.compare_digest(user.password_hash[-16:], str(fingerprint)):
        return None
    # DomainGuard: the address the link went to must still be this user's, verified, and on
    # a safe domain now (the sweep may have unverified it since the mail went out).
    decision = guard.reset_decision(str(address))  # DomainGuard
    if not decision.allowed or decision.user is None or decision.user.id != user.id:
        return None
    return user, str(address)


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset(token: str) -> Any:
    found = _reset_user(token)
    if found is None:
        flash("That reset link is invalid or has expired. Ask for a new one.", "error")
        return redirect(url_for("auth.forgot"))
    user, address = found
    form = ResetForm()
    if form.validate_on_submit():
        user.set_password(form.password.data)
        db.session.commit()
        # DomainGuard: other sessions end, the other addresses get "this wasn't me".
        guard.password_changed(user, actor="user", via=address)  # DomainGuard
        flash("Password changed. Log in with your new password.", "info")
        return redirect(url_for("auth.login"))
    response = current_app.make_response(render_template("reset.html", form=form))
    # The token is in the URL: keep it out of caches and Referer headers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


class AddAddressForm(FlaskForm):
    email = EmailField("Email address", validators=[DataRequired(), Length(max=254)])


@bp.route("/account")
@login_required
def account() -> str:
    rows = guard.addresses_of(current_user)  # DomainGuard: the user's addresses and their state
    states = [guard.address_state(row) for row in rows]  # DomainGuard
    domains = {
        row.registrable: db.session.get(guard.models.Domain, row.registrable) for row in rows
    }
    return render_template(
        "account.html",
        addresses=[(r, s, domains[r.registrable]) for r, s in zip(rows, states, strict=True)],
        only_custom=_only_custom(states),
        twofactor=guard.twofactor_enabled(current_user),  # DomainGuard
    )


def _only_custom(states: list[Any]) -> bool:
    """Whether every verified address is on a custom domain (one lapse loses all resets)."""
    verified = [s for s in states if s.verified]
    return bool(verified) and all(s.domain_verdict != "trusted" for s in verified)


@bp.route("/account/addresses/new", methods=["GET", "POST"])
@login_required
@guard.require_fresh_2fa  # DomainGuard: changing addresses takes password + a fresh second factor
def add_address() -> Any:
    # A page of its own (not a form on /account) so the confirmation step can come back to it.
    # The answer is the same whether or not the address belongs to an account already.
    form = AddAddressForm()
    if form.validate_on_submit():
        try:
            email = parse_address(form.email.data).normalized
        except InvalidAddress as exc:
            form.email.errors.append(str(exc))
            return render_template("add_address.html", form=form)
        existing = guard.find_address(email)  # DomainGuard: any user's address
        if existing is None:
            try:  # DomainGuard: track the address and mail its verification link
                guard.send_verification(guard.add_address(current_user, email))
            except (AddressTaken, VerificationError) as exc:
                # The account page shows the address's state; this answer stays the same.
                log.info("add address: no verification mail (%s)", type(exc).__name__)
        elif existing.user_id != current_user.id:
            _tell_owner(email, "add it to another account")
        flash(f"We mailed a link to {email}: open it to verify the address.", "info")
        return redirect(url_for("auth.account"))
    return render_template("add_address.html", form=form)


@bp.route("/admin")
@login_required
def admin() -> str:
    if not current_user.is_admin:
        abort(403)
    return render_template("admin.html", report=build_report(guard))  # DomainGuard


@bp.app_template_filter("when")
def when(value: Any) -> str:
    """A report cell for people: ISO timestamps as ``YYYY-MM-DD HH:MM UTC``, None as a dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return str(value)
