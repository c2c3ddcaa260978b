"""EcoWatt Conseil, a reuser's web app that a citizen authorises through Tiers under the
charter purpose `energy-coaching`, the FAPI 2.0 way:

- PAR (RFC 9126): the authorization request is pushed, authenticated, before the browser goes;
- PKCE S256 (RFC 7636) and `state`, kept in this app's own session cookie;
- private_key_jwt (RFC 7523): no shared secret, a fresh signed assertion on every call;
- DPoP (RFC 9449): code, access token and refresh token are bound to a key that never leaves
  this process, with the server's nonces (§8, §9);
- the authorization response's `iss` must be Tiers' issuer (RFC 9207, mix-up defence).

It imports nothing of Tiers: it knows Tiers' URL, its metadata (RFC 8414) and the credentials
file `tiers demo-seed` writes. Tokens stay in this process's memory, never in the browser's
cookie. A demo: one process; its DPoP key and the visitors' tokens are lost at restart.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import (
    Flask,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
)
from flask import url_for as flask_url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from examples.holders.app import NoticeStore
from examples.holders.tokens import TiersKeys, TokenError, verify_notice

DATA_ACCESS = "https://tiers-territorial.fr/oauth/data-access"  # Tiers' authorization_details
PURPOSE = "energy-coaching"  # examples/charter.yaml names ecowatt-conseil for it
DATA_CATEGORIES = ("energy.electricity.load_curve",)
SCOPE = "consent:read"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 60  # seconds: Tiers accepts up to 300; short is better (FAPI 2.0)
TIMEOUT = 10  # seconds, for each call to Tiers
VISIT_MAX_AGE = 12 * 3600  # seconds: a demo keeps a visitor's tokens this long at most
DEFAULT_TIERS_URL = "http://127.0.0.1:5000"
DEFAULT_PORT = 5001
ROOT = Path(__file__).resolve().parents[2]
STATUSES = {
    "given": "donné",
    "withdrawn": "retiré",
    "expired": "expiré",
    "superseded": "à renouveler (la charte a changé)",
}
MODES = {"individual": "vos seules données, pseudonymisées", "aggregate": "statistiques seulement"}

log = logging.getLogger("ecowatt")


# --- the protocol pieces (pure functions, unit-tested) -----------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier (64 characters) and its S256 challenge (RFC 7636 §4.1, §4.2)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def access_token_hash(access_token: str) -> str:
    """`ath`: base64url of the SHA-256 of the access token (RFC 9449 §4.2)."""
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of an EC public JWK."""
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("ascii")
    return b64url(hashlib.sha256(canonical).digest())


def _htu(url: str) -> str:
    """A proof's `htu`: the request URL without query and fragment (RFC 9449 §4.2)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class DpopKey:
    """This app's DPoP key pair (P-256, in memory), making proofs (RFC 9449 §4.2)."""

    def __init__(self, private: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.private = private or ec.generate_private_key(ec.SECP256R1())
        full = jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk: dict[str, str] = {k: full[k] for k in ("kty", "crv", "x", "y")}
        self.jkt = thumbprint(self.jwk)

    def proof(
        self,
        method: str,
        url: str,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
        now: float | None = None,
    ) -> str:
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": _htu(url),
            "iat": int(time.time() if now is None else now),
        }
        if nonce:
            claims["nonce"] = nonce
        if access_token:
            claims["ath"] = access_token_hash(access_token)
        return jwt.encode(
            claims, self.private, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": self.jwk}
        )


def client_assertion(
    *,
    client_id: str,
    key: ec.EllipticCurvePrivateKey,
    kid: str,
    audience: str,
    now: float | None = None,
    lifetime: int = ASSERTION_LIFETIME,
) -> str:
    """An RFC 7523 client assertion: `iss` = `sub` = client_id, `aud` = the issuer identifier
    (a string, as FAPI 2.0 and Tiers require), a short life and a `jti` used once."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def authorization_details() -> list[dict[str, Any]]:
    """What EcoWatt asks for (RFC 9396, Tiers' data-access type): the load curve, for the
    charter purpose energy-coaching, record-level data of this one citizen."""
    return [
        {
            "type": DATA_ACCESS,
            "purpose": PURPOSE,
            "mode": "individual",
            "data_categories": list(DATA_CATEGORIES),
        }
    ]


# --- configuration ------------------------------------------------------------------------


class SetupError(Exception):
    """The demo is not set up right (no credentials, wrong Tiers URL): said plainly."""


class TiersError(Exception):
    """Tiers refused, or could not be reached: `str(exc)` is the sentence for the page."""

    def __init__(self, message: str, *, error: str | None = None, status: int | None = None):
        super().__init__(message)
        self.error = error
        self.status = status


@dataclass(frozen=True)
class Credentials:
    """What `tiers demo-seed` registered for this app (instance/demo-reuser.json)."""

    client_id: str
    organisation: str
    kid: str
    redirect_uri: str
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            pem = Path(data["private_key_path"]).read_bytes()
            key = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise TypeError("not an EC key")
            return cls(
                client_id=str(data["client_id"]),
                organisation=str(data.get("organisation", "ecowatt-conseil")),
                kid=str(data["kid"]),
                redirect_uri=str(data["redirect_uri"]),
                private_key=key,
            )
        except FileNotFoundError as exc:
            raise SetupError(
                f"Fichier introuvable : {exc.filename}. Lancez d'abord « tiers demo-seed » "
                "(ou « make demo »), qui enregistre EcoWatt auprès de Tiers."
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SetupError(f"Les identifiants de {path} sont illisibles : {exc}") from None


def default_credentials_path() -> Path:
    """Where `tiers demo-seed` writes them: Tiers' instance folder."""
    if path := os.environ.get("REUSER_CREDENTIALS"):
        return Path(path)
    instance = os.environ.get("TIERS_INSTANCE") or str(ROOT / "instance")
    return Path(instance) / "demo-reuser.json"


# --- the client of Tiers ------------------------------------------------------------------


def _error_of(response: requests.Response) -> tuple[str | None, str]:
    """The OAuth error code (or problem type) and a readable description of a refusal."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())[:200]
        return None, text or f"réponse HTTP {response.status_code} sans contenu"
    if not isinstance(body, dict):
        return None, f"réponse HTTP {response.status_code} inattendue"
    if "error" in body:  # RFC 6749 §5.2
        error = str(body["error"])
        return error, str(body.get("error_description") or error)
    problem = str(body.get("type", "")).rsplit("/", 1)[-1] or None  # RFC 9457
    return problem, str(body.get("detail") or body.get("title") or body)


def _asks_for_nonce(response: requests.Response) -> bool:
    """RFC 9449 §8 (authorization server: 400 use_dpop_nonce) and §9 (resource server: 401
    with WWW-Authenticate: DPoP error="use_dpop_nonce"), with the nonce in DPoP-Nonce."""
    if "DPoP-Nonce" not in response.headers:
        return False
    if response.status_code == 401:
        return 'error="use_dpop_nonce"' in response.headers.get("WWW-Authenticate", "")
    return response.status_code == 400 and _error_of(response)[0] == "use_dpop_nonce"


class TiersClient:
    """Everything EcoWatt asks of Tiers, each call authenticated with private_key_jwt and
    carrying a DPoP proof with the latest nonce the server gave."""

    def __init__(
        self,
        tiers_url: str,
        credentials: Credentials,
        dpop: DpopKey,
        *,
        http: requests.Session | None = None,
    ) -> None:
        self.tiers_url = tiers_url.rstrip("/")
        self.credentials = credentials
        self.dpop = dpop
        self.http = http or requests.Session()
        self._metadata: dict[str, Any] | None = None
        # RFC 9449: the authorization server's and the resource server's nonces are separate.
        self._nonces: dict[str, str] = {}

    def metadata(self) -> dict[str, Any]:
        """Tiers' RFC 8414 metadata, fetched once; its issuer must be the URL we were given."""
        if self._metadata is None:
            url = f"{self.tiers_url}/.well-known/oauth-authorization-server"
            body = self._expect(self._send("GET", url), 200, "la lecture des métadonnées de Tiers")
            if not isinstance(body, dict) or body.get("issuer") != self.tiers_url:
                issuer = body.get("issuer") if isinstance(body, dict) else None
                raise SetupError(
                    f"Tiers se présente comme « {issuer} », mais nous le joignons à "
                    f"« {self.tiers_url} » : les deux doivent être identiques (RFC 8414 §3.3). "
                    "Réglez TIERS_URL (ici) ou TIERS_ISSUER (chez Tiers)."
                )
            endpoints = (
                "authorization_endpoint",
                "token_endpoint",
                "pushed_authorization_request_endpoint",
                "revocation_endpoint",
            )
            missing = [name for name in endpoints if not isinstance(body.get(name), str)]
            if missing:
                raise SetupError(f"Les métadonnées de Tiers n'indiquent pas : {', '.join(missing)}")
            self._metadata = body
        return self._metadata

    @property
    def issuer(self) -> str:
        return str(self.metadata()["issuer"])

    # The four things EcoWatt does with Tiers' authorization server.

    def push(self, *, state: str, code_challenge: str) -> str:
        """PAR (RFC 9126): the request_uri for the browser. The DPoP proof binds the code the
        citizen's approval will give to our key (RFC 9449 §10)."""
        params = {
            "response_type": "code",
            "client_id": self.credentials.client_id,
            "redirect_uri": self.credentials.redirect_uri,
            "scope": SCOPE,
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
            "authorization_details": json.dumps(authorization_details()),
        }
        response = self._post("pushed_authorization_request_endpoint", params)
        body = self._expect(response, 201, "la demande d'autorisation (PAR)")
        if not isinstance(body, dict) or not isinstance(body.get("request_uri"), str):
            raise TiersError("Tiers n'a pas renvoyé de request_uri.")
        return str(body["request_uri"])

    def authorize_url(self, request_uri: str) -> str:
        query = urlencode({"client_id": self.credentials.client_id, "request_uri": request_uri})
        return f"{self.metadata()['authorization_endpoint']}?{query}"

    def redeem(self, code: str, verifier: str) -> dict[str, Any]:
        """The code for tokens, proving the PKCE verifier and the DPoP key."""
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.credentials.redirect_uri,
            "code_verifier": verifier,
        }
        return self._tokens(self._post("token_endpoint", data), "l'échange du code")

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """A new token pair; the refresh token is bound to our DPoP key, and rotates."""
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return self._tokens(self._post("token_endpoint", data), "le renouvellement du jeton")

    def revoke(self, token: str, hint: str) -> None:
        """RFC 7009. Revoking the refresh token ends the whole grant at Tiers."""
        data = {"token": token, "token_type_hint": hint}
        response = self._post("revocation_endpoint", data, dpop=False)
        self._expect(response, 200, "la révocation du jeton", parse=False)

    # Tiers as a resource server.

    def consents(self, access_token: str) -> list[dict[str, Any]]:
        """The citizen's consents (GET /api/v1/consents, scope consent:read)."""
        url = f"{self.tiers_url}/api/v1/consents"
        response = self._get_with_token(url, access_token)
        body = self._expect(response, 200, "la lecture de vos consentements")
        if not isinstance(body, list):
            raise TiersError("Tiers a renvoyé autre chose qu'une liste de consentements.")
        return [c for c in body if isinstance(c, dict)]

    # Plumbing.

    def _assertion(self) -> dict[str, str]:
        return {
            "client_id": self.credentials.client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(
                client_id=self.credentials.client_id,
                key=self.credentials.private_key,
                kid=self.credentials.kid,
                audience=self.issuer,
            ),
        }

    def _post(
        self, endpoint: str, data: Mapping[str, str], *, dpop: bool = True
    ) -> requests.Response:
        """POST to one of the authorization server's endpoints; retried once with the nonce
        Tiers asks for. Each attempt has a new assertion: Tiers accepts each `jti` once."""
        url = str(self.metadata()[endpoint])
        response = self._post_once(url, data, dpop)
        if dpop and _asks_for_nonce(response):
            response = self._post_once(url, data, dpop)
        return response

    def _post_once(self, url: str, data: Mapping[str, str], dpop: bool) -> requests.Response:
        headers = (
            {"DPoP": self.dpop.proof("POST", url, nonce=self._nonces.get("as"))} if dpop else {}
        )
        response = self._send("POST", url, data={**data, **self._assertion()}, headers=headers)
        if nonce := response.headers.get("DPoP-Nonce"):
            self._nonces["as"] = nonce
        return response

    def _get_with_token(self, url: str, access_token: str) -> requests.Response:
        response = self._get_once(url, access_token)
        if _asks_for_nonce(response):
            response = self._get_once(url, access_token)
        return response

    def _get_once(self, url: str, access_token: str) -> requests.Response:
        proof = self.dpop.proof("GET", url, nonce=self._nonces.get("rs"), access_token=access_token)
        headers = {"Authorization": f"DPoP {access_token}", "DPoP": proof}
        response = self._send("GET", url, headers=headers)
        if nonce := response.headers.get("DPoP-Nonce"):
            self._nonces["rs"] = nonce
        return response

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return self.http.request(method, url, timeout=TIMEOUT, allow_redirects=False, **kwargs)
        except requests.RequestException as exc:
            raise TiersError(
                f"Tiers ne répond pas à {url} ({type(exc).__name__}). Est-il démarré ?"
            ) from None

    def _tokens(self, response: requests.Response, what: str) -> dict[str, Any]:
        body = self._expect(response, 200, what)
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise TiersError(f"Pour {what}, Tiers n'a pas renvoyé de jeton d'accès.")
        if str(body.get("token_type", "")).lower() != "dpop":  # RFC 9449 §5
            raise TiersError(
                f"Tiers a remis un jeton de type « {body.get('token_type')} », non lié à notre "
                "clé DPoP : nous ne l'utilisons pas."
            )
        return body

    @staticmethod
    def _expect(response: requests.Response, status: int, what: str, *, parse: bool = True) -> Any:
        if response.status_code == status:
            if not parse:
                return None
            try:
                return response.json()
            except ValueError:
                raise TiersError(f"Pour {what}, Tiers a renvoyé une réponse illisible.") from None
        code, description = _error_of(response)
        label = f" ({code})" if code else ""
        raise TiersError(
            f"Tiers a refusé {what} : HTTP {response.status_code}{label} — {description}",
            error=code,
            status=response.status_code,
        )


# --- the web app ----------------------------------------------------------------------------


@dataclass
class Visit:
    """One signed-in visitor's tokens, kept in this process (the cookie holds only its id)."""

    token: dict[str, Any]
    started_at: float
    refreshed: int = 0


class Reuser:
    """The app's state: its DPoP key, its client of Tiers (made on first use, so that it can
    start before Tiers and before the seed), and the visits."""

    def __init__(self, tiers_url: str, credentials_path: Path) -> None:
        self.tiers_url = tiers_url.rstrip("/")
        self.credentials_path = credentials_path
        self.dpop = DpopKey()
        self._client: TiersClient | None = None
        self._visits: dict[str, Visit] = {}
        self._lock = threading.Lock()

    def client(self) -> TiersClient:
        with self._lock:
            if self._client is None:
                credentials = Credentials.load(self.credentials_path)
                self._client = TiersClient(self.tiers_url, credentials, self.dpop)
            return self._client

    def start_visit(self, token: dict[str, Any]) -> str:
        visit_id = secrets.token_urlsafe(24)
        now = time.time()
        with self._lock:
            for stale in [k for k, v in self._visits.items() if now - v.started_at > VISIT_MAX_AGE]:
                del self._visits[stale]
            self._visits[visit_id] = Visit(token=token, started_at=now)
        return visit_id

    def visit(self, visit_id: str | None) -> Visit | None:
        with self._lock:
            return self._visits.get(visit_id or "")

    def end_visit(self, visit_id: str | None) -> Visit | None:
        with self._lock:
            return self._visits.pop(visit_id or "", None)


def _reuser() -> Reuser:
    reuser: Reuser = current_app.extensions["ecowatt"]
    return reuser


def _unverified_claims(token: str) -> dict[str, Any]:
    """The access token's claims, for display only: a client never relies on them (the token
    is meant for Tiers' API), so its signature is not checked here."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims


def _page(title: str, message: str, status: int, *, kind: str = "error") -> tuple[str, int]:
    return render_template("message.html", title=title, message=message, kind=kind), status


def create_app(tiers_url: str | None = None, credentials_path: Path | None = None) -> Flask:
    """The EcoWatt app, talking to Tiers at `tiers_url` ($TIERS_URL), with the credentials
    at `credentials_path` ($REUSER_CREDENTIALS, else Tiers' instance/demo-reuser.json)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_urlsafe(32),  # a demo: sessions end when the process does
        # Tiers runs on the same host: its cookie must not be overwritten by ours.
        SESSION_COOKIE_NAME="ecowatt_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",  # the callback is a top-level GET: the cookie comes
    )
    reuser = Reuser(
        tiers_url or os.environ.get("TIERS_URL") or DEFAULT_TIERS_URL,
        credentials_path or default_credentials_path(),
    )
    app.extensions["ecowatt"] = reuser
    # Withdrawal notices from Tiers: verified against Tiers' JWKS, recorded once per key.
    app.extensions["ecowatt.notices"] = (TiersKeys(reuser.tiers_url), NoticeStore())
    app.jinja_env.globals["csrf_token"] = _csrf_token
    app.jinja_env.filters["status"] = lambda value: STATUSES.get(str(value), str(value))
    app.jinja_env.filters["mode"] = lambda value: MODES.get(str(value), str(value))
    app.jinja_env.filters["date"] = _date
    app.before_request(_check_csrf)
    _register_errors(app)
    _register_routes(app)
    return app


def _date(value: object) -> str:
    """An RFC 3339 time from Tiers as a French reader expects it (Paris time)."""
    try:
        moment = datetime.fromisoformat(str(value)).astimezone(ZoneInfo("Europe/Paris"))
    except (TypeError, ValueError):
        return str(value or "—")
    return moment.strftime("%d/%m/%Y à %H:%M")


def _csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return str(session["csrf"])


def _check_csrf() -> None:
    """Every POST carries the session's token: another site cannot sign a visitor in or out.
    Tiers' notices are not forms: their JWS signature is their proof of origin."""
    if request.method != "POST" or request.path == "/webhooks/tiers":
        return
    expected = session.get("csrf")
    sent = request.form.get("csrf_token", "")
    if not expected or not hmac.compare_digest(str(expected), sent):
        abort(400, "Le formulaire a expiré : rechargez la page et recommencez.")


def _register_errors(app: Flask) -> None:
    @app.errorhandler(TiersError)
    def tiers_error(exc: TiersError) -> tuple[str, int]:
        return _page("Tiers a répondu par une erreur", str(exc), 502)

    @app.errorhandler(SetupError)
    def setup_error(exc: SetupError) -> tuple[str, int]:
        return _page("La démonstration n'est pas prête", str(exc), 503)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[str, int]:
        return _page(f"Erreur {exc.code}", str(exc.description), exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[str, int]:
        log.exception("unexpected error")  # the detail goes to the log, never to the page
        return _page("Erreur inattendue", "Une erreur inattendue s'est produite.", 500)


def _register_routes(app: Flask) -> None:
    @app.post("/webhooks/tiers")
    def notice() -> tuple[Response, int]:
        """A citizen withdrew: record the notice (the same key may come twice), then erase
        what was received about that pseudonym. The demo keeps nothing, so erasing is a log
        line; a real reuser then confirms through POST /api/v1/notices/<jti>/deletion."""
        keys, store = current_app.extensions["ecowatt.notices"]
        key = request.headers.get("Idempotency-Key", "").strip()
        if request.mimetype != "application/jose" or not key or len(key) > 200:
            return jsonify(error="a compact JWS (application/jose) with an Idempotency-Key"), 400
        issuer = _reuser().tiers_url.rstrip("/")
        try:
            claims = verify_notice(request.get_data(as_text=True).strip(), keys, issuer=issuer)
        except TokenError as exc:
            return jsonify(error=f"notice refused: {exc}"), 400
        first, _entry = store.record(key, claims)
        if first:
            log.info("withdrawal notice for %s: erasing its data", claims.get("subject"))
        return jsonify(recorded=True, duplicate=not first), 201 if first else 200

    @app.get("/webhooks/received")
    def notices_received() -> Response:
        return jsonify(notices=current_app.extensions["ecowatt.notices"][1].all())

    @app.get("/")
    def home() -> str:
        visit = _reuser().visit(session.get("visit"))
        return render_template("index.html", signed_in=visit is not None)

    @app.post("/connexion")
    def sign_in() -> Response:
        client = _reuser().client()
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(24)
        request_uri = client.push(state=state, code_challenge=challenge)
        session["pending"] = {"state": state, "verifier": verifier, "issuer": client.issuer}
        return redirect(client.authorize_url(request_uri), code=303)

    @app.get("/callback")
    def callback() -> Response | tuple[str, int]:
        pending = session.pop("pending", None)
        if not isinstance(pending, dict):
            return _page(
                "Aucune connexion en cours",
                "Cette réponse ne correspond à aucune demande faite depuis ce navigateur "
                "(ou elle a déjà servi). Recommencez depuis l'accueil.",
                400,
            )
        args = request.args
        # RFC 9207: check the issuer first, on errors too (a mix-up attack fakes either).
        if args.get("iss") != pending["issuer"]:
            return _page(
                "Réponse refusée",
                f"La réponse ne vient pas de Tiers : iss vaut « {args.get('iss')} », "
                f"attendu « {pending['issuer']} » (RFC 9207). Elle est ignorée.",
                400,
            )
        if not hmac.compare_digest(args.get("state", ""), pending["state"]):
            return _page(
                "Réponse refusée",
                "Le paramètre state ne correspond pas à notre demande : la réponse est ignorée.",
                400,
            )
        if error := args.get("error"):
            if error == "access_denied":
                return _page(
                    "Vous avez refusé",
                    "Vous n'avez pas autorisé EcoWatt Conseil : Tiers ne nous a rien transmis.",
                    200,
                    kind="info",
                )
            detail = args.get("error_description") or ""
            return _page("Tiers a refusé la demande", f"{error} {detail}".strip(), 400)
        code = args.get("code")
        if not code:
            return _page("Réponse incomplète", "Tiers n'a pas renvoyé de code.", 400)
        token = _reuser().client().redeem(code, str(pending["verifier"]))
        session["visit"] = _reuser().start_visit(token)
        return redirect(flask_url_for("account"), code=303)  # the code leaves the address bar

    @app.get("/compte")
    def account() -> Response | str:
        reuser = _reuser()
        visit = reuser.visit(session.get("visit"))
        if visit is None:
            flash("Connectez-vous d'abord avec Tiers.", "info")
            return redirect(flask_url_for("home"), code=303)
        client = reuser.client()
        consents: list[dict[str, Any]] = []
        problem: str | None = None
        try:
            consents = client.consents(str(visit.token["access_token"]))
        except TiersError as exc:
            problem = str(exc)
        claims = _unverified_claims(str(visit.token["access_token"]))
        return render_template(
            "account.html",
            token=visit.token,
            visit=visit,
            claims=claims,
            bound=(claims.get("cnf") or {}).get("jkt") == reuser.dpop.jkt,
            jkt=reuser.dpop.jkt,
            consents=consents,  # Tiers shows an app only the consents naming its organisation
            problem=problem,
            details_json=json.dumps(
                visit.token.get("authorization_details", []), indent=2, ensure_ascii=False
            ),
            tiers_url=client.issuer,
        )

    @app.post("/renouveler")
    def renew() -> Response:
        reuser = _reuser()
        visit = reuser.visit(session.get("visit"))
        if visit is None or not visit.token.get("refresh_token"):
            flash("Aucun jeton à renouveler : connectez-vous avec Tiers.", "info")
            return redirect(flask_url_for("home"), code=303)
        try:
            visit.token = reuser.client().refresh(str(visit.token["refresh_token"]))
        except TiersError as exc:
            if exc.error == "invalid_grant":  # the grant is over (consent withdrawn, revoked)
                reuser.end_visit(session.pop("visit", None))
            raise
        visit.refreshed += 1
        flash("Jeton renouvelé : Tiers nous a remis une nouvelle paire de jetons.", "success")
        return redirect(flask_url_for("account"), code=303)

    @app.post("/deconnexion")
    def sign_out() -> Response:
        reuser = _reuser()
        visit = reuser.end_visit(session.get("visit"))
        session.clear()
        if visit is None:
            return redirect(flask_url_for("home"), code=303)
        refresh_token = visit.token.get("refresh_token")
        token, hint = (
            (refresh_token, "refresh_token")
            if refresh_token
            else (visit.token["access_token"], "access_token")
        )
        try:
            reuser.client().revoke(str(token), hint)
        except TiersError as exc:
            flash(f"Vous êtes déconnecté, mais la révocation a échoué : {exc}", "error")
        else:
            flash("Vous êtes déconnecté : nos jetons sont révoqués chez Tiers.", "success")
        return redirect(flask_url_for("home"), code=303)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="EcoWatt Conseil, the demo reuser of Tiers.")
    parser.add_argument("--host", default=os.environ.get("REUSER_HOST", "127.0.0.1"))
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("REUSER_PORT", DEFAULT_PORT))
    )
    parser.add_argument(
        "--tiers-url", default=os.environ.get("TIERS_URL", DEFAULT_TIERS_URL), help="Tiers' issuer"
    )
    parser.add_argument(
        "--credentials",
        type=Path,
        default=None,
        help="the file tiers demo-seed writes (default: instance/demo-reuser.json)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[ecowatt] %(message)s")
    app = create_app(tiers_url=args.tiers_url, credentials_path=args.credentials)
    app.run(host=args.host, port=args.port, debug=False, use_reloader=False, threaded=True)


if __name__ == "__main__":
    main()
