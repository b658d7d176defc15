"""Request dependencies: settings, the client, the caller's API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from producer.client import Client
from producer.db import in_transaction
from producer.keys import authenticate
from producer.models import ApiKey
from producer.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="An API key from `imggen keys create`.")


def settings(request: Request) -> Settings:
    return request.app.state.settings


def client(request: Request) -> Client:
    return request.app.state.client


def api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The caller's key; 401 without a valid one."""
    key = None
    if credentials is not None and credentials.scheme.lower() == "bearer":
        db = settings(request).resolved_database_url
        key = in_transaction(db, lambda session: authenticate(session, credentials.credentials))
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key


CurrentKey = Annotated[ApiKey, Depends(api_key)]
ApiClient = Annotated[Client, Depends(client)]
ApiSettings = Annotated[Settings, Depends(settings)]
