"""Logging in: failed attempts lock a username out per client address; nothing trusts the Host header."""

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.urls import resolve

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@pytest.fixture
def staff_user():
    return get_user_model().objects.create_user("stella", password=PASSWORD, is_staff=True, is_superuser=True)


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("login_url", ["/accounts/login/", "/admin/login/"])
def test_five_failures_lock_the_username_out_from_that_address(staff_user, login_url):
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for attempt in range(5):
        response = attacker.post(login_url, {"username": "stella", "password": f"guess-{attempt}"})
        assert response.status_code in (200, 429), attempt
        assert not logged_in(attacker)

    # The right password no longer helps from there, for this username.
    response = attacker.post(login_url, {"username": "stella", "password": PASSWORD})
    assert response.status_code == 429
    assert not logged_in(attacker)

    # The same person from another address is not locked out.
    elsewhere = Client(REMOTE_ADDR="198.51.100.20")
    elsewhere.post(login_url, {"username": "stella", "password": PASSWORD})
    assert logged_in(elsewhere)


def test_a_forwarded_for_header_does_not_escape_the_lockout(staff_user):
    for attempt in range(5):
        Client(REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR=f"10.0.0.{attempt}").post(
            "/accounts/login/", {"username": "stella", "password": f"guess-{attempt}"}
        )
    client = Client(REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="10.9.9.9")
    response = client.post("/accounts/login/", {"username": "stella", "password": PASSWORD})
    assert response.status_code == 429


def test_lockout_settings(settings):
    from datetime import timedelta

    assert settings.AXES_FAILURE_LIMIT == 5
    assert timedelta(minutes=15) == settings.AXES_COOLOFF_TIME
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]


def test_no_password_reset_page_trusts_the_host_header(staff_user, settings):
    from gateway_project.accounts import TrustedHostPasswordResetView

    settings.ALLOWED_HOSTS = ["*"]  # even where the Host header is not checked
    assert resolve("/accounts/password_reset/").func.view_class is TrustedHostPasswordResetView
    staff_user.email = "stella@example.com"
    staff_user.save()
    client = Client(HTTP_HOST="evil.example")

    settings.GATEWAY_PUBLIC_URL = ""
    assert client.post("/accounts/password_reset/", {"email": "stella@example.com"}).status_code == 404
    # The admin has no reset page of its own: the URL is just another page behind its login.
    assert client.post("/admin/password_reset/", {"email": "stella@example.com"}).status_code == 302
    assert mail.outbox == []

    settings.GATEWAY_PUBLIC_URL = "https://gateway.example.com"
    response = client.post("/accounts/password_reset/", {"email": "stella@example.com"})
    assert response.status_code == 302
    [message] = mail.outbox
    assert "https://gateway.example.com/accounts/reset/" in message.body
    assert "evil.example" not in message.body
