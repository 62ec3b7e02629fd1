"""A small client for the RabbitMQ management HTTP API (the part sr_police needs).

Why HTTP and not rabbitmqctl: the API runs anywhere the admin can reach the broker (no
shell or root on the broker host), every write is an idempotent PUT or DELETE, and every
setting (tags, permissions, password hash, queue depth and consumers) can be read back and
compared, which is what the watchdog does.

Errors are :class:`ApiError` with one line naming the method and the URL (never the
password); ``exit_code`` is 3 when the API cannot be reached or refuses the admin's login,
1 for a refused or failed request.
"""

import base64
import hashlib
import hmac
import json
import urllib.parse
from typing import Dict, List, Optional

__all__ = ["ApiError", "ManagementAPI", "api_url_for", "password_matches"]

DEFAULT_API_PORTS = {"amqp": 15672, "amqps": 15671}
_HASHES = {"rabbit_password_hashing_sha256": hashlib.sha256,
           "rabbit_password_hashing_sha512": hashlib.sha512,
           "rabbit_password_hashing_md5": hashlib.md5}


class ApiError(Exception):
    """A management API call failed; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, text: str, status: Optional[int] = None, exit_code: int = 1):
        super().__init__(text)
        self.status = status
        self.exit_code = exit_code


def api_url_for(broker_url: str, override: Optional[str] = None) -> str:
    """Base URL of the management API of the broker named by an amqp(s) URL.

    ``override`` (option ``management_url``) wins. amqp:// maps to http://host:15672/ and
    amqps:// to https://host:15671/ (the RabbitMQ defaults).
    """
    if override:
        return override if override.endswith("/") else override + "/"
    parts = urllib.parse.urlsplit(broker_url)
    scheme = parts.scheme.lower()
    host = parts.hostname or "localhost"
    if ":" in host:
        host = "[%s]" % host
    web = "https" if scheme == "amqps" else "http"
    return "%s://%s:%d/" % (web, host, DEFAULT_API_PORTS.get(scheme, 15672))


def password_matches(user_info: Dict, password: str) -> Optional[bool]:
    """Does the password hash the API shows for a user match ``password``?

    RabbitMQ stores base64(salt[4] + H(salt + password)). Returns None when the hashing
    algorithm is unknown (the caller then cannot tell and must not loop on resetting it).
    """
    algo = _HASHES.get(user_info.get("hashing_algorithm", "rabbit_password_hashing_sha256"))
    stored = user_info.get("password_hash") or ""
    if algo is None:
        return None
    if not stored:
        return False          # user without a password (login disabled)
    try:
        raw = base64.b64decode(stored)
    except ValueError:
        return None
    salt, digest = raw[:4], raw[4:]
    return hmac.compare_digest(algo(salt + password.encode("utf-8")).digest(), digest)


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


class ManagementAPI:
    """Calls on one broker's management API as one (administrator) user."""

    def __init__(self, base_url: str, user: str, password: str, timeout: float = 15.0,
                 verify=True):
        self.base = base_url if base_url.endswith("/") else base_url + "/"
        self.display = self.base + "api/"
        self.timeout = timeout
        import requests     # here: only sr_police's commands call the API (~7 MB of RSS)
        self._session = requests.Session()
        self._session.auth = (user, password or "")
        self._session.verify = verify
        self._session.headers["content-type"] = "application/json"
        self.user = user

    def __repr__(self) -> str:
        return "<ManagementAPI %s as %s>" % (self.display, self.user)

    def close(self) -> None:
        self._session.close()

    # ------------------------------------------------------------------ plumbing
    def _call(self, method: str, path: str, body=None, missing_ok: bool = False):
        url = self.base + "api/" + path
        shown = "%s %s" % (method, url)
        import requests
        try:
            r = self._session.request(method, url, timeout=self.timeout,
                                      data=None if body is None else json.dumps(body))
        except requests.RequestException as e:
            reason = type(e).__name__
            if isinstance(e, requests.ConnectionError):
                reason = "connection refused or host unreachable"
            elif isinstance(e, requests.Timeout):
                reason = "timed out after %g s" % self.timeout
            raise ApiError("%s: management API unreachable (%s)" % (shown, reason),
                           None, 3) from None
        if r.status_code == 404 and missing_ok:
            return None
        if r.status_code == 401:
            raise ApiError("%s: login refused for user '%s' (check the admin password in "
                           "credentials.conf and that the user has the administrator tag)"
                           % (shown, self.user), 401, 3)
        if r.status_code >= 400:
            raise ApiError("%s: HTTP %d %s" % (shown, r.status_code, _reason(r)), r.status_code)
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            raise ApiError("%s: answer is not JSON" % shown, r.status_code) from None

    # ------------------------------------------------------------------ broker
    def overview(self) -> Dict:
        return self._call("GET", "overview")

    def whoami(self) -> Dict:
        return self._call("GET", "whoami")

    # ------------------------------------------------------------------ vhosts
    def vhost(self, vhost: str) -> Optional[Dict]:
        return self._call("GET", "vhosts/" + _q(vhost), missing_ok=True)

    def put_vhost(self, vhost: str) -> None:
        self._call("PUT", "vhosts/" + _q(vhost), {})

    def delete_vhost(self, vhost: str) -> None:
        self._call("DELETE", "vhosts/" + _q(vhost), missing_ok=True)

    # ------------------------------------------------------------------ users
    def users(self) -> List[Dict]:
        return self._call("GET", "users") or []

    def user(self, name: str) -> Optional[Dict]:
        return self._call("GET", "users/" + _q(name), missing_ok=True)

    def put_user(self, name: str, password: Optional[str], tags: str = "",
                 keep: Optional[Dict] = None) -> None:
        """Create or update a user. With ``password`` None the stored hash of ``keep``
        (the user as the API showed it) is written back: a PUT without any password
        would disable the user's password login."""
        body = {"tags": tags}
        if password is not None:
            body["password"] = password
        else:
            keep = keep or {}
            body["password_hash"] = keep.get("password_hash") or ""
            if keep.get("hashing_algorithm"):
                body["hashing_algorithm"] = keep["hashing_algorithm"]
        self._call("PUT", "users/" + _q(name), body)

    def delete_user(self, name: str) -> None:
        self._call("DELETE", "users/" + _q(name), missing_ok=True)

    # ------------------------------------------------------------------ permissions
    def permissions(self, vhost: str) -> List[Dict]:
        return self._call("GET", "vhosts/%s/permissions" % _q(vhost)) or []

    def user_permissions(self, name: str) -> List[Dict]:
        return self._call("GET", "users/%s/permissions" % _q(name), missing_ok=True) or []

    def permission(self, vhost: str, user: str) -> Optional[Dict]:
        return self._call("GET", "permissions/%s/%s" % (_q(vhost), _q(user)), missing_ok=True)

    def put_permission(self, vhost: str, user: str, configure: str, write: str,
                       read: str) -> None:
        self._call("PUT", "permissions/%s/%s" % (_q(vhost), _q(user)),
                   {"configure": configure, "write": write, "read": read})

    def delete_permission(self, vhost: str, user: str) -> None:
        self._call("DELETE", "permissions/%s/%s" % (_q(vhost), _q(user)), missing_ok=True)

    # ------------------------------------------------------------------ exchanges
    def exchanges(self, vhost: str) -> List[Dict]:
        return self._call("GET", "exchanges/" + _q(vhost)) or []

    def put_exchange(self, vhost: str, name: str, type_: str = "topic",
                     durable: bool = True) -> None:
        self._call("PUT", "exchanges/%s/%s" % (_q(vhost), _q(name)),
                   {"type": type_, "durable": durable, "auto_delete": False,
                    "internal": False, "arguments": {}})

    def delete_exchange(self, vhost: str, name: str) -> None:
        self._call("DELETE", "exchanges/%s/%s" % (_q(vhost), _q(name)), missing_ok=True)

    # ------------------------------------------------------------------ queues, bindings
    def queues(self, vhost: str) -> List[Dict]:
        return self._call("GET", "queues/" + _q(vhost)) or []

    def queue(self, vhost: str, name: str) -> Optional[Dict]:
        return self._call("GET", "queues/%s/%s" % (_q(vhost), _q(name)), missing_ok=True)

    def delete_queue(self, vhost: str, name: str) -> None:
        self._call("DELETE", "queues/%s/%s" % (_q(vhost), _q(name)), missing_ok=True)

    def bindings(self, vhost: str) -> List[Dict]:
        return self._call("GET", "bindings/" + _q(vhost)) or []

    def delete_exchange_binding(self, vhost: str, source: str, destination: str,
                                props_key: str) -> None:
        self._call("DELETE", "bindings/%s/e/%s/e/%s/%s" % (
            _q(vhost), _q(source), _q(destination), _q(props_key)), missing_ok=True)


def _reason(r) -> str:
    """The broker's short reason text from an error answer (one line)."""
    try:
        data = r.json()
        text = data.get("reason") or data.get("error") or ""
    except ValueError:
        text = r.text or r.reason or ""
    text = " ".join(str(text).split())
    return text[:200]
