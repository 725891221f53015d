"""The unmodified Azure SDK for Python (azure-keyvault-keys, azure-identity) against
`pgcmk vault serve`.

Run by `cargo test -p pgcmk-keyprovider --test azure_sdk_python`, which starts a vault,
creates a user-assigned managed identity, a vault with purge protection and an access
policy, and passes them here through the environment:

- PGCMK_TEST_VAULT_URL: the vault's base URL
- AZURE_CLIENT_ID: the managed identity's client id
- IDENTITY_ENDPOINT, IDENTITY_HEADER: the App Service managed-identity protocol
- REQUESTS_CA_BUNDLE: the vault service's CA

The vault runs with a SoftHSM2 token (`--pkcs11-module`), so RSA-HSM keys
(`hardware_protected=True`) are generated and used in it.
"""

import hashlib
import os
import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.keys import KeyClient, KeyType
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm, SignatureAlgorithm

REQUIRED_ENV = (
    "PGCMK_TEST_VAULT_URL",
    "AZURE_CLIENT_ID",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "REQUESTS_CA_BUNDLE",
)

# The vault lives at https://127.0.0.1:PORT and asks for tokens for exactly that
# audience. The SDK's default check wants the audience to be a parent domain of the
# vault's host (vault.azure.net for NAME.vault.azure.net), which an IP address cannot
# satisfy, so the check is turned off with the SDK's own documented option.
SDK_OPTIONS = {"verify_challenge_resource": False}

OAEP_256 = KeyWrapAlgorithm.rsa_oaep_256


@pytest.fixture(scope="module")
def env():
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        pytest.fail(
            "missing " + ", ".join(missing)
            + ": run this through `cargo test -p pgcmk-keyprovider --test azure_sdk_python`"
        )
    return os.environ


@pytest.fixture(scope="module")
def credential(env):
    return ManagedIdentityCredential(client_id=env["AZURE_CLIENT_ID"])


@pytest.fixture(scope="module")
def client(env, credential):
    return KeyClient(env["PGCMK_TEST_VAULT_URL"], credential, **SDK_OPTIONS)


def fresh_name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def crypto_for(key_or_id, credential):
    return CryptographyClient(key_or_id, credential, **SDK_OPTIONS)


def test_create_get_list_wrap_unwrap_rotate(client, credential):
    name = fresh_name("sdk-life")
    key = client.create_rsa_key(name, size=3072)
    assert key.name == name
    assert key.key_type == "RSA"
    assert len(key.key.n) == 384, "a 3072-bit modulus is 384 bytes"
    assert key.properties.enabled is True
    assert key.id.startswith(client.vault_url.rstrip("/") + f"/keys/{name}/")

    got = client.get_key(name)
    assert got.id == key.id
    assert got.key.n == key.key.n and got.key.e == key.key.e

    listed = {props.name for props in client.list_properties_of_keys()}
    assert name in listed

    # Wrapped locally with the public key the vault gave out, unwrapped by the vault:
    # proves the vault's RSA-OAEP-256 matches the SDK's.
    dek = os.urandom(32)
    wrapped = crypto_for(key, credential).wrap_key(OAEP_256, dek)
    assert wrapped.key_id == key.id
    assert wrapped.encrypted_key != dek and len(wrapped.encrypted_key) == 384
    unwrapped = crypto_for(key.id, credential).unwrap_key(OAEP_256, wrapped.encrypted_key)
    assert unwrapped.key == dek

    rotated = client.rotate_key(name)
    assert rotated.id != key.id
    assert rotated.properties.version != key.properties.version
    assert client.get_key(name).id == rotated.id
    versions = {props.version for props in client.list_properties_of_key_versions(name)}
    assert {key.properties.version, rotated.properties.version} <= versions

    # The old version still unwraps what it wrapped; the new one unwraps its own.
    assert crypto_for(key.id, credential).unwrap_key(OAEP_256, wrapped.encrypted_key).key == dek
    wrapped_new = crypto_for(rotated.id, credential).wrap_key(OAEP_256, dek)
    assert crypto_for(rotated.id, credential).unwrap_key(OAEP_256, wrapped_new.encrypted_key).key == dek


def test_disabled_key_refuses_unwrap_until_enabled(client, credential):
    name = fresh_name("sdk-disable")
    key = client.create_rsa_key(name, size=3072)
    dek = os.urandom(32)
    wrapped = crypto_for(key, credential).wrap_key(OAEP_256, dek)
    remote = crypto_for(key.id, credential)

    disabled = client.update_key_properties(name, enabled=False)
    assert disabled.properties.enabled is False

    with pytest.raises(HttpResponseError) as refused:
        remote.unwrap_key(OAEP_256, wrapped.encrypted_key)
    assert refused.value.status_code == 403, refused.value
    assert refused.value.error is not None, "the vault must send an AKV error body"
    assert refused.value.error.code in ("Forbidden", "KeyDisabled"), refused.value.error.code
    assert "disabled" in refused.value.error.message.lower(), refused.value.error.message

    enabled = client.update_key_properties(name, enabled=True)
    assert enabled.properties.enabled is True
    assert remote.unwrap_key(OAEP_256, wrapped.encrypted_key).key == dek


def test_delete_recover_and_purge_refused_under_purge_protection(client):
    name = fresh_name("sdk-delete")
    key = client.create_rsa_key(name, size=3072)

    poller = client.begin_delete_key(name)
    poller.wait()
    deleted = poller.result()
    assert deleted.name == name
    assert deleted.recovery_id and deleted.recovery_id.rstrip("/").endswith(f"/deletedkeys/{name}")
    assert deleted.deleted_date is not None
    assert deleted.scheduled_purge_date > deleted.deleted_date

    read_back = client.get_deleted_key(name)
    assert read_back.id == key.id
    with pytest.raises(HttpResponseError) as gone:
        client.get_key(name)
    assert gone.value.status_code == 404

    recover = client.begin_recover_deleted_key(name)
    recover.wait()
    assert recover.result().id == key.id
    assert client.get_key(name).properties.enabled is True

    again = client.begin_delete_key(name)
    again.wait()
    with pytest.raises(HttpResponseError) as refused:
        client.purge_deleted_key(name)
    assert refused.value.status_code in (403, 409), refused.value
    assert "purge" in str(refused.value).lower(), refused.value
    # Still there, still recoverable.
    assert client.get_deleted_key(name).id == key.id


def test_rsa_hsm_key_wraps_unwraps_and_signs_in_the_token(client, credential):
    key = client.create_rsa_key(fresh_name("sdk-hsm"), size=2048, hardware_protected=True)
    assert key.key_type == KeyType.rsa_hsm
    assert client.get_key(key.name).key_type == KeyType.rsa_hsm

    remote = crypto_for(key.id, credential)
    dek = os.urandom(32)
    wrapped = remote.wrap_key(OAEP_256, dek)
    assert remote.unwrap_key(OAEP_256, wrapped.encrypted_key).key == dek

    digest = hashlib.sha256(b"pgcmk rsa-hsm").digest()
    signed = remote.sign(SignatureAlgorithm.rs256, digest)
    assert remote.verify(SignatureAlgorithm.rs256, digest, signed.signature).is_valid
    assert not remote.verify(SignatureAlgorithm.rs256, hashlib.sha256(b"other").digest(), signed.signature).is_valid

    # The private key never leaves the token, so there is nothing to back up.
    with pytest.raises(HttpResponseError) as refused:
        client.backup_key(key.name)
    assert refused.value.status_code == 403, refused.value
