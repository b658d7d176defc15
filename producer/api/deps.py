"""Request dependencies: settings, the client, the caller's API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from producer.client import Client
from producer.db import in_transaction
from producer.keys import authenticate
from producer.models import ApiKey
from producer.settings import Settings

bearer = HTTPBearer(auto_error=False, description="An API key from `imggen keys create`.")
basic = HTTPBasic(
    auto_error=False, description="Any user name, with an API key as the password (A1111 style)."
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
Basic = Annotated[HTTPBasicCredentials | None, Depends(basic)]


def settings(request: Request) -> Settings:
    return request.app.state.settings


def client(request: Request) -> Client:
    return request.app.state.client


def key_for(request: Request, secret: str | None) -> ApiKey | None:
    """The live key whose secret is ``secret``, or None (blocking: one SQL read)."""
    if not secret:
        return None
    db = settings(request).resolved_database_url
    return in_transaction(db, lambda session: authenticate(session, secret))


def api_key(request: Request, credentials: Bearer) -> ApiKey:
    """The caller's key; 401 without a valid one."""
    key = key_for(request, credentials.credentials if credentials else None)
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key


def admin_key(key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    """The caller's key when it is an admin key (``imggen keys create --admin``); 403 if not."""
    if not key.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this needs an admin API key")
    return key


CurrentKey = Annotated[ApiKey, Depends(api_key)]
AdminKey = Annotated[ApiKey, Depends(admin_key)]
ApiClient = Annotated[Client, Depends(client)]
ApiSettings = Annotated[Settings, Depends(settings)]
