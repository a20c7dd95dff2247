"""REST authentication: OAuth2 bearer tokens, with integrations acting as a user.

A client-credentials token has no resource owner. An integration therefore acts as
the user who owns its OAuth application (typically a staff service user), so its
permissions and the audit trail name that user; a client-credentials application
without an owning user cannot call the API.
"""

from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from oauth2_provider.contrib.rest_framework import OAuth2Authentication as BaseOAuth2
from oauth2_provider.models import AbstractApplication
from rest_framework import exceptions
from rest_framework.request import Request


def signed_in_user(request: Request) -> User:
    """The signed-in user of ``request``, for views behind ``IsAuthenticated``;
    raises ``NotAuthenticated`` (401) for anyone else."""
    user = request.user
    if isinstance(user, AnonymousUser) or not user.is_authenticated:
        raise exceptions.NotAuthenticated()
    return user


def token_user(token: Any) -> Any:
    """The user a valid access token acts for, or None."""
    if token.user is not None:
        return token.user
    application = token.application
    if (
        application is not None
        and application.authorization_grant_type
        == AbstractApplication.GRANT_CLIENT_CREDENTIALS
        and application.user is not None
        and application.user.is_active
    ):
        return application.user
    return None


class OAuth2Authentication(BaseOAuth2):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        _, token = result
        user = token_user(token)
        if user is None:
            raise exceptions.AuthenticationFailed(
                "This token is not linked to a user.", code="token_without_user"
            )
        return user, token
