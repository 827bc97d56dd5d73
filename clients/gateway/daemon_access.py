"""The gateway's one way to eportd: asynchronous gRPC over its Unix socket.

Every failure becomes a GatewayError, so the methods only describe what they ask for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeAlias, TypeVar, cast

import grpc
import grpc.aio
from google.protobuf.message import Message

from eport.cardlib.signing_algorithms import SignAlgorithm, e_port_client_algorithm
from eport.clients.gateway.errors import (
    BAD_ARGUMENTS,
    GatewayError,
    from_daemon_error,
)
from eport.clients.kit.errors import error_detail_of
from eport.clients.kit.sign_algorithms import key_kind_of, to_pb
from eport.protos.v1 import eportd_pb2 as pb
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc

Reply = TypeVar("Reply", bound=Message)
KeyKind: TypeAlias = pb.KeyAlgorithm.ValueType

# A signature may wait behind other clients' card work in eportd's queue.
CALL_TIMEOUT_SECONDS = 60.0


def signing_algorithm(key: KeyKind) -> SignAlgorithm | None:
    """What the E-port client signs with on this key, and so the gateway: SHA1withRSA on every
    RSA card (not the card's own default), SM2-SM3 on SM2 cards, ECDSA-SHA256 on our
    simulator's P-256 cards (cardlib.signing_algorithms, column e_port_client_for). None for a
    key this gateway does not know."""
    kind = key_kind_of(key)
    return None if kind is None else e_port_client_algorithm(kind)


def _request_algorithm(key: KeyKind) -> pb.SignAlgorithm.ValueType:
    algorithm = signing_algorithm(key)
    return pb.SIGN_ALGORITHM_UNSPECIFIED if algorithm is None else to_pb(algorithm)


class DaemonAccess:
    def __init__(self, socket: Path, reader: str | None = None, *,
                 allow_stored_pin: bool = False, allow_envelope_signing: bool = False) -> None:
        self.socket = socket
        self.selector = pb.CardSelector(reader=reader or "")
        # A PIN stored for unattended signing is for the user's own scripts: a request from a
        # web page may only use it when the gateway was started with its own option.
        self.allow_stored_pin = allow_stored_pin
        # Whether the generic signing methods may sign data-centre request envelopes
        # (eport.clients.gateway.envelope_guard).
        self.allow_envelope_signing = allow_envelope_signing
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.CardServiceAsyncStub | None = None
        # The key algorithm of the card last seen, so a signature needs one call, not two.
        # A swapped card is noticed by eportd refusing the algorithm (before any PIN is sent).
        self._last_key: tuple[str, KeyKind] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def stub(self) -> pb_grpc.CardServiceAsyncStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(f"unix:{self.socket}")
            # The generated class serves both channel kinds; the .pyi types the aio one apart.
            self._stub = cast("pb_grpc.CardServiceAsyncStub",
                              pb_grpc.CardServiceStub(self._channel))
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None

    async def call(self, method: Callable[..., Awaitable[Reply]], request: Message) -> Reply:
        try:
            return await method(request, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNAVAILABLE and error_detail_of(error) is None:
                self._reconnect_next_time()
            raise from_daemon_error(error) from None

    def _reconnect_next_time(self) -> None:
        """eportd is gone (stopped, restarting): a channel that failed to connect waits out an
        exponential backoff and would keep failing after eportd is back, so the next call gets
        a fresh one. The old one closes once its other calls are done."""
        if self._channel is not None:
            old = self._channel
            self._channel = None
            self._stub = None
            task = asyncio.get_running_loop().create_task(old.close(grace=CALL_TIMEOUT_SECONDS))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def card_info(self) -> pb.CardInfo:
        info = await self.call(self.stub.GetCardInfo, self.selector)
        self._last_key = (info.card_id, info.key_algorithm)
        return info

    async def pin_status(self) -> pb.PinStatus:
        return await self.call(self.stub.GetPinStatus, self.selector)

    async def verify_pin(self, pin: str) -> None:
        await self.call(self.stub.VerifyPin, pb.VerifyPinRequest(card=self.selector, pin=pin))

    async def change_pin(self, old_pin: str, new_pin: str) -> None:
        await self.call(self.stub.ChangePin, pb.ChangePinRequest(
            card=self.selector, old_pin=old_pin, new_pin=new_pin))

    async def logout(self) -> None:
        await self.call(self.stub.Logout, self.selector)

    async def certificate(self) -> pb.Certificate:
        return await self.call(self.stub.GetCertificate, self.selector)

    async def envelope_certificate(self) -> pb.Certificate:
        """The card's encryption certificate (加密证书, the key in PIV slot 9D)."""
        return await self.call(self.stub.GetEnvelopeCertificate, self.selector)

    async def decrypt(self, ciphertext: bytes, pin: str = "") -> pb.DecryptResponse:
        """Decrypt with the card's envelope key; the PIN rules are those of sign()."""
        return await self.call(self.stub.Decrypt, pb.DecryptRequest(
            card=self.selector, ciphertext=ciphertext, pin=pin,
            refuse_stored_pin=not self.allow_stored_pin))

    async def check_certificate(self, der: bytes) -> pb.CertificateCheck:
        return await self.call(self.stub.CheckCertificate,
                               pb.CheckCertificateRequest(certificate=der))

    async def key_algorithm(self) -> KeyKind:
        if self._last_key is None:
            await self.card_info()
        assert self._last_key is not None
        return self._last_key[1]

    async def sign(self, *, data: bytes | None = None, digest: bytes | None = None,
                   pin: str = "") -> pb.SignResponse:
        """Sign as the E-port client does on this card (see signing_algorithm)."""
        key = await self.key_algorithm()
        try:
            answer = await self._sign_once(key, data, digest, pin)
        except GatewayError as error:
            # eportd refuses an algorithm the key cannot do as a bad argument, before any PIN
            # reaches the card; other errors are the answer. Compare with the key this request
            # used, not the cache: concurrent requests refresh the cache too.
            if error.code != BAD_ARGUMENTS:
                raise
            fresh = await self.card_info()
            if fresh.key_algorithm == key:
                raise
            answer = await self._sign_once(fresh.key_algorithm, data, digest, pin)
        if self._last_key is not None and answer.card_id != self._last_key[0]:
            self._last_key = None  # a different card of the same kind signed: look again
        return answer

    async def _sign_once(self, key: KeyKind, data: bytes | None, digest: bytes | None,
                         pin: str) -> pb.SignResponse:
        request = pb.SignRequest(card=self.selector, pin=pin,
                                 algorithm=_request_algorithm(key),
                                 refuse_stored_pin=not self.allow_stored_pin)
        if digest is not None:
            request.digest = digest
        else:
            request.data = data or b""
        return await self.call(self.stub.Sign, request)

    async def verify(self, *, signature: bytes, data: bytes | None = None,
                     digest: bytes | None = None, certificate: bytes | None = None,
                     key: KeyKind) -> pb.VerifyResponse:
        request = pb.VerifyRequest(signature=signature, algorithm=_request_algorithm(key))
        if certificate is not None:
            request.certificate = certificate
        else:
            request.card.CopyFrom(self.selector)
        if digest is not None:
            request.digest = digest
        else:
            request.data = data or b""
        return await self.call(self.stub.Verify, request)
