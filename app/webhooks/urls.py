"""Which URLs a webhook may call: http(s) only; in production no private, loopback,
link-local or otherwise internal address unless ANNOLOOP_WEBHOOK_ALLOW_PRIVATE says so
(the API would otherwise let an engineer make it call into its own network). Checked when a
subscription is made and again before every delivery, since a name can change addresses."""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse


class BadWebhookUrl(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_url(url: str, *, allow_private: bool, resolve: bool = True) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadWebhookUrl("webhook_url_invalid", f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise BadWebhookUrl("webhook_url_invalid", "webhook URLs are http:// or https://")
    if not parts.hostname:
        raise BadWebhookUrl("webhook_url_invalid", "the URL has no host")
    if parts.username or parts.password:
        raise BadWebhookUrl("webhook_url_invalid", "no user:password in webhook URLs")
    if allow_private or not resolve:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise BadWebhookUrl("webhook_url_unresolvable", f"{parts.hostname}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            raise BadWebhookUrl(
                "webhook_url_private",
                f"{parts.hostname} resolves to {address}, a non-public address; set "
                "ANNOLOOP_WEBHOOK_ALLOW_PRIVATE=true to allow it",
            )
