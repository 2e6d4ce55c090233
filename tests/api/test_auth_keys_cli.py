"""RS256 with a public key file, the `notifier` command, and mounting the
extension into an existing Flask app."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, jsonify

from notifier import create_app
from notifier.config import Config
from notifier.extension import Notifier

from ..support import tokens
from ..support.config import make_config
from ..support.http import assert_json_error, open_stream


@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    folder = tmp_path_factory.mktemp("keys")
    (folder / "private.pem").write_bytes(private_pem)
    (folder / "public.pem").write_bytes(public_pem)
    return folder, private_pem, public_pem


def hs256_by_hand(claims: dict, key: bytes) -> str:
    """PyJWT refuses to make this token (good), so forge it by hand."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def test_rs256_tokens_verify_with_the_public_key_only(rsa_keys) -> None:
    folder, private_pem, public_pem = rsa_keys
    config = Config.from_env({"NOTIFIER_ENV": "production", "NOTIFIER_JWT_ALGORITHM": "RS256",
                              "NOTIFIER_JWT_PUBLIC_KEY_FILE": str(folder / "public.pem")})
    app = create_app(config)
    client = app.test_client()
    try:
        good = jwt.encode({"sub": "alice", "exp": 2_000_000_000, "type": "access"}, private_pem, algorithm="RS256")
        response, chunks = open_stream(client, tokens.bearer(good))
        assert response.status_code == 200
        response.close()
        # Algorithm confusion: an HS256 token "signed" with the public key as secret.
        forged = hs256_by_hand({"sub": "alice", "exp": 2_000_000_000, "type": "access"}, public_pem)
        response, _ = open_stream(client, tokens.bearer(forged))
        assert_json_error(response, 401)
        response, _ = open_stream(client, tokens.bearer(tokens.token("alice")))  # HS256 with some secret
        assert_json_error(response, 401)
    finally:
        app.extensions["notifier"].stop()


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "notifier.cli", *args], env=clean, capture_output=True, text=True,
                          timeout=60)


def test_cli_tokens_agree_with_the_dev_service(tmp_path) -> None:
    env = {"NOTIFIER_DEV_SECRET_FILE": str(tmp_path / "dev-secret")}
    user = run_cli("token", "alice", "--topic", "orders:*", env=env)
    publisher = run_cli("token", "--publisher", "billing", "--topic", "orders:*", env=env)
    assert user.returncode == 0 and publisher.returncode == 0, user.stderr + publisher.stderr
    assert "development mode" in user.stderr
    config = Config.from_env(env)
    assert config.dev_mode
    app = create_app(config)
    client = app.test_client()
    try:
        response, chunks = open_stream(client, tokens.bearer(user.stdout.strip()), "?topic=orders:1")
        assert response.status_code == 200
        next(chunks)
        published = client.post("/v1/publish", json={"topic": "orders:1", "message": "hi"},
                                headers=tokens.bearer(publisher.stdout.strip()))
        assert published.status_code == 202
        assert b'"message":"hi"' in next(chunks)
        response.close()
        refused = client.post("/v1/publish", json={"user_id": "alice", "message": "x"},
                              headers=tokens.bearer(publisher.stdout.strip()))
        assert_json_error(refused, 403)  # scoped to orders:* only
    finally:
        app.extensions["notifier"].stop()


def test_cli_reports_bad_config_without_secrets() -> None:
    result = run_cli("token", "alice", env={"NOTIFIER_ENV": "production", "NOTIFIER_JWT_SECRET": "tiny-secret"})
    assert result.returncode == 2 and "too weak" in result.stderr and "tiny-secret" not in result.stderr
    assert run_cli("check-config", env={"NOTIFIER_JWT_SECRET": "k" * 40}).stdout.count("***") == 1


def test_mounting_into_a_host_app_keeps_the_host_in_charge() -> None:
    host = Flask("legacy")

    @host.get("/orders")
    def orders():
        return jsonify(["order-1"])

    @host.errorhandler(404)
    def host_404(error):
        return "host's own 404 page", 404

    Notifier(host, make_config())
    client = host.test_client()
    try:
        assert client.get("/orders").get_json() == ["order-1"]
        assert client.get("/missing").get_data(as_text=True) == "host's own 404 page"
        assert client.get("/livez").status_code == 200
        assert_json_error(client.post("/v1/publish", json={}), 401)
        response, chunks = open_stream(client, tokens.bearer(tokens.token("alice")))
        assert response.status_code == 200 and next(chunks).startswith(b"retry:")
        response.close()
    finally:
        host.extensions["notifier"].stop()
